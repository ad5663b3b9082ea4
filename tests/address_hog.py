"""Loaded by bounded workers in tests/test_loaders.py, in the child process: address
space reserved and never written, as onnxruntime's threads reserve it, and memory used."""

from __future__ import annotations

import mmap

_RESERVED: list[mmap.mmap] = []


def reserve() -> None:
    """Map 1 GiB without touching it: address space, no resident memory."""
    _RESERVED.append(mmap.mmap(-1, 1 << 30))


def use(mb: int) -> int:
    """Allocate ``mb`` MiB and write every page of it; only its size crosses the pipe."""
    buffer = bytearray(mb << 20)
    buffer[::4096] = b"x" * len(range(0, len(buffer), 4096))
    return len(buffer)
