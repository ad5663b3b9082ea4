"""What keeping uploads in a bucket costs, against a folder, and whether it holds the loop.

    python benchmarks/blob_store_bench.py --sizes-kb 1,2048,20480 --repeat 10

For each store (a folder under a temporary directory, and a bucket of moto's S3 server
on 127.0.0.1, from the ``test`` extra, in a process of its own so that its Python does
not compete with the client's for the GIL) and each file size: the time to put a file, to
fetch it as a local copy (what an ingestion job does) and to delete it, p50 and p95 over
``--repeat`` rounds; and the longest the event loop went without running a 1 ms ticker
during those calls (the bucket's transfers are async; the folder's calls run in a thread).

A loopback server measures the client and the protocol, not a network: a real bucket
adds its round trips (tens of milliseconds per request to R2 or S3 from another region).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import msgspec

from rag.config import Settings
from rag.ports import BlobStore
from rag.registry import blob_store

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}


async def ticker(worst: list[float], stop: asyncio.Event) -> None:
    """Record the longest gap between two 1 ms sleeps: how long the loop was held."""
    last = time.perf_counter()
    while not stop.is_set():
        await asyncio.sleep(0.001)
        now = time.perf_counter()
        worst[0] = max(worst[0], now - last - 0.001)
        last = now


async def timed(call: Awaitable[Any]) -> float:
    began = time.perf_counter()
    await call
    return time.perf_counter() - began


async def fetch(blobs: BlobStore, key: str, size: int) -> None:
    async with blobs.fetched(key) as copy:
        assert copy.stat().st_size == size


async def measure(blobs: BlobStore, work: Path, size_kb: int, repeat: int) -> dict[str, Any]:
    source = work / f"source-{size_kb}"
    source.write_bytes(os.urandom(size_kb * 1024))
    times: dict[str, list[float]] = {"put": [], "fetch": [], "delete": []}
    worst = [0.0]
    stop = asyncio.Event()
    tick = asyncio.create_task(ticker(worst, stop))
    for round_ in range(repeat):
        key = f"file-{size_kb}-{round_}.bin"
        times["put"].append(await timed(blobs.put(key, source)))
        times["fetch"].append(await timed(fetch(blobs, key, size_kb * 1024)))
        times["delete"].append(await timed(blobs.delete(key)))
    stop.set()
    await tick
    row: dict[str, Any] = {"size_kb": size_kb}
    for name, values in times.items():
        ordered = sorted(values)
        row[name] = (statistics.median(ordered), ordered[int(0.95 * (len(ordered) - 1))])
    row["loop_held_ms"] = worst[0] * 1000
    return row


@contextmanager
def moto_process() -> Iterator[dict[str, str]]:
    """moto's S3 server in a child process on a free loopback port, with a bucket: the
    ``[storage]`` section naming it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    child = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(endpoint)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "moto's server did not start"
                time.sleep(0.1)
        httpx.put(f"{endpoint}/rag-bench").raise_for_status()
        yield {"url": "s3://rag-bench/uploads", "endpoint_url": endpoint}
    finally:
        child.terminate()
        child.wait()


async def main(sizes: list[int], repeat: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, moto_process() as bucket:
        work = Path(tmp)
        stores = {
            "folder": blob_store(
                msgspec.convert({"storage": {"url": str(work / "kept")}}, Settings)
            ),
            "bucket (moto, loopback)": blob_store(
                msgspec.convert({"storage": bucket}, Settings), environ=CREDENTIALS
            ),
        }
        print(
            f"{'store':<24} {'size':>9} {'put p50/p95 ms':>16} {'fetch p50/p95 ms':>18}"
            f" {'delete p50/p95 ms':>19} {'loop held ms':>13}"
        )
        for name, blobs in stores.items():
            for size in sizes:
                row = await measure(blobs, work, size, repeat)
                cells = [
                    f"{row[op][0] * 1000:7.1f} / {row[op][1] * 1000:6.1f}"
                    for op in ("put", "fetch", "delete")
                ]
                print(
                    f"{name:<24} {size:>6} KB {cells[0]:>16} {cells[1]:>18} {cells[2]:>19}"
                    f" {row['loop_held_ms']:>13.1f}"
                )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes-kb", default="1,2048,20480")
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    asyncio.run(main([int(s) for s in args.sizes_kb.split(",")], args.repeat))
