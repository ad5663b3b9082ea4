"""Bounded worker processes: run a parser on untrusted input with a time and memory limit.

A worker is a long-lived child process that serves one call at a time, so a batch of
PDFs pays for interpreter start-up and imports once. A call that runs past its timeout
or its memory limit gets the child killed; the next call starts a fresh one.

Children are fresh interpreters started with ``subprocess`` and spoken to with pickled
messages over two pipes (POSIX). Forking the parent would copy the onnxruntime and
asyncio threads' locks into the child; multiprocessing's "spawn" and "forkserver"
re-import the parent's ``__main__`` in every child, which breaks (each PDF "crashes")
when the caller is a script without an ``if __name__ == "__main__"`` guard.

Memory is bounded twice: RLIMIT_AS in the child (Linux: allocations fail with
``MemoryError``), set once the worker is ready to what it then holds plus the limit, and
the parent polling the child's RSS against the limit itself.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import logging
import os
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

import psutil

try:
    import resource
except ImportError:  # not POSIX: only the RSS poll bounds memory
    resource = None  # type: ignore[assignment]

POLL_S = 0.05
START_TIMEOUT_S = 60.0
_ENTRY = "from rag.ingest.loaders.pdf_worker import main; main()"


class WorkerError(Exception):
    """The call raised, timed out, ran out of memory or lost its process."""


class WorkerTimeout(WorkerError):
    pass


class WorkerMemoryExceeded(WorkerError):
    pass


class WorkerCrashed(WorkerError):
    pass


class WorkerStartFailed(WorkerCrashed):
    """The child could not import or prepare what it serves: every call would fail too."""


def _limit_address_space(memory_mb: int) -> None:
    """Let the calls to come add at most ``memory_mb`` of address space to what the worker
    holds now, once ready.

    Counted from zero, the limit went to reservations rather than to the work: a warm OCR
    worker (onnxruntime's threads, each with its malloc arena) maps 1.3-1.6 GB of address
    space for 0.2-0.7 GB resident, so under a 1,536 MB limit a large page failed, as a
    MemoryError or an onnxruntime allocation error, only in a worker that had already read
    a few pages. Resident memory stays bounded by ``memory_mb`` itself (``Worker._wait``).
    """
    if resource is None or not hasattr(resource, "RLIMIT_AS"):
        return
    held = psutil.Process().memory_info().vms
    limit = held + memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _serve(inbox: Connection, outbox: Connection, memory_mb: int, preload: Sequence[str]) -> None:
    """The child's loop: import, apply the limit, then answer calls until told to stop."""
    # Parsers of damaged files warn on nearly every page; nobody reads a worker's stderr.
    warnings.simplefilter("ignore")
    logging.disable(logging.CRITICAL)
    try:
        for entry in preload:
            # "module" is imported; "module:function" is then called, to load what every
            # call needs (a model) once, before the first call's time limit starts.
            module, _, function = entry.partition(":")
            loaded = importlib.import_module(module)
            if function:
                getattr(loaded, function)()
    except Exception as exc:
        outbox.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    _limit_address_space(memory_mb)
    outbox.send(("ready", None))
    while True:
        try:
            request = inbox.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        fn, args = request
        try:
            reply: tuple[str, Any] = ("ok", fn(*args))
        except MemoryError:
            # Leave after a MemoryError: the heap may be half-built; a fresh child is cheap.
            outbox.send(("memory", None))
            return
        except Exception as exc:
            reply = ("error", f"{type(exc).__name__}: {exc}")
        outbox.send(reply)


def main() -> None:
    """Child entry point: ``python -c "...main()" MEMORY_MB [MODULE ...]``; fd 0 in, fd 1 out."""
    # Keep the reply channel to ourselves: anything a library prints goes to stderr.
    reply_fd = os.dup(1)
    os.dup2(2, 1)
    _serve(
        Connection(0, writable=False),
        Connection(reply_fd, readable=False),
        int(sys.argv[1]),
        sys.argv[2:],
    )


class Worker:
    """One child process with a memory limit, serving calls one at a time."""

    def __init__(self, memory_mb: int, preload: Sequence[str] = ()) -> None:
        self.memory_mb = memory_mb
        request_r, request_w = os.pipe()
        reply_r, reply_w = os.pipe()
        env = dict(os.environ)
        # The child imports what the parent can, even when the parent's path was changed
        # at run time (a test runner, an embedding application).
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-c", _ENTRY, str(memory_mb), *preload],
                stdin=request_r,
                stdout=reply_w,
                stderr=subprocess.DEVNULL,
                env=env,
                close_fds=True,
            )
        except BaseException:
            for fd in (request_r, request_w, reply_r, reply_w):
                os.close(fd)
            raise
        os.close(request_r)
        os.close(reply_w)
        self._requests = Connection(request_w, readable=False)
        self._replies = Connection(reply_r, writable=False)
        try:
            status, payload = self._wait(START_TIMEOUT_S)
        except WorkerError as exc:
            self.close()
            raise WorkerStartFailed(f"the worker process did not start: {exc}") from None
        except BaseException:
            self.close()
            raise
        if status != "ready":
            self.close()
            raise WorkerStartFailed(f"the worker process did not start: {payload}")

    def call(self, fn: Callable[..., Any], args: tuple[Any, ...], timeout_s: float) -> Any:
        """``fn(*args)`` in the child; ``WorkerError`` if it failed, timed out, ran out or died."""
        try:
            self._requests.send((fn, args))
        except OSError:  # the child died while idle
            self.close()
            raise WorkerCrashed("the worker process died while idle") from None
        status, payload = self._wait(timeout_s)
        if status == "error":
            raise WorkerError(payload)
        return payload

    def _wait(self, timeout_s: float) -> tuple[str, Any]:
        deadline = time.monotonic() + timeout_s
        while not self._replies.poll(min(POLL_S, max(0.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                self.close()
                raise WorkerTimeout(f"timed out after {timeout_s:g} s")
            if self._rss_mb() > self.memory_mb:
                self.close()
                raise WorkerMemoryExceeded(f"exceeded the {self.memory_mb} MB memory limit")
        try:
            status, payload = self._replies.recv()
        except (EOFError, OSError):
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(1.0)
            code = self._process.returncode
            self.close()
            raise WorkerCrashed(f"the worker process died (exit code {code})") from None
        if status == "memory":
            self.close()
            raise WorkerMemoryExceeded(f"exceeded the {self.memory_mb} MB memory limit")
        return status, payload

    def _rss_mb(self) -> float:
        try:
            return float(psutil.Process(self._process.pid).memory_info().rss) / 2**20
        except psutil.Error:
            return 0.0

    @property
    def alive(self) -> bool:
        return not self._replies.closed and self._process.poll() is None

    def close(self) -> None:
        """Ask the child to leave, kill it if it does not, and release every handle."""
        if self._replies.closed:
            return
        with contextlib.suppress(OSError):
            self._requests.send(None)
        self._requests.close()
        self._replies.close()
        try:
            self._process.wait(0.5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


class WorkerPool:
    """Idle workers kept for reuse, keyed by memory limit; safe to use from many threads."""

    def __init__(
        self, preload: Sequence[str] = (), max_idle: int = 4, *, retire_on_error: bool = False
    ) -> None:
        self.preload = tuple(preload)
        self.max_idle = max_idle
        self.retire_on_error = retire_on_error
        """Close a worker whose call raised instead of keeping it: a native runtime (the
        OCR engine's onnxruntime) that failed once may fail every call after it."""
        self._idle: list[Worker] = []
        self._lock = threading.Lock()

    def call(
        self, fn: Callable[..., Any], args: tuple[Any, ...], *, timeout_s: float, memory_mb: int
    ) -> Any:
        """Run ``fn(*args)`` in an idle worker (or a new one) within the limits."""
        worker = self._take(memory_mb)
        try:
            result = worker.call(fn, args, timeout_s)
        except WorkerError:
            if worker.alive and not self.retire_on_error:
                self._give_back(worker)
            else:
                worker.close()
            raise
        except BaseException:
            worker.close()
            raise
        self._give_back(worker)
        return result

    def _take(self, memory_mb: int) -> Worker:
        found: Worker | None = None
        with self._lock:
            dead = [worker for worker in self._idle if not worker.alive]
            self._idle = [worker for worker in self._idle if worker.alive]
            for i, worker in enumerate(self._idle):
                if worker.memory_mb == memory_mb:
                    found = self._idle.pop(i)
                    break
        for worker in dead:
            worker.close()
        return found or Worker(memory_mb, self.preload)

    def _give_back(self, worker: Worker) -> None:
        with self._lock:
            if len(self._idle) < self.max_idle:
                self._idle.append(worker)
                return
        worker.close()

    def close(self) -> None:
        """Stop every idle worker; the pool starts new ones if it is used again."""
        with self._lock:
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.close()


def _close_at_exit(pool: WorkerPool) -> None:
    pool.close()


def new_pool(
    preload: Sequence[str] = (), max_idle: int = 4, *, retire_on_error: bool = False
) -> WorkerPool:
    """A pool whose workers are stopped when the interpreter exits."""
    pool = WorkerPool(preload, max_idle, retire_on_error=retire_on_error)
    atexit.register(_close_at_exit, pool)
    return pool
