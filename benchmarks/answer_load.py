"""Uncached answers per second, and the time to the first ``delta``, under concurrent clients.

Runs ``rag serve`` (a real uvicorn on 127.0.0.1) over the bundled handbook in a scratch
data folder, then keeps ``--clients`` connections asking the README's and the labelled
set's questions over ``GET /v1/ask`` for ``--seconds``. The answer cache is off, so
every answer is computed: its question embedded, retrieved and answered. The server's
own limits that would turn clients away are lifted for the measurement (answers at once
= clients, no per-client rate limit, since all clients share 127.0.0.1). No question is
asked twice: each is varied by function words ("please", "now", ...) that retrieval and
the evidence gate leave out, so no memory of an earlier answer or vector can serve it.

    .venv/bin/python benchmarks/answer_load.py                 # 50 clients, 30 s
    .venv/bin/python benchmarks/answer_load.py --clients 1 --seconds 10

Prints answers per second, the first-delta and total latency p50/p95, errors, and the
server's CPU seconds per answer (on a shared machine, the figure that does not depend on
what else runs).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# Function words (rag.text.FUNCTION_WORDS): neither searched for nor counted by the gate.
PADS = ("please", "now", "just", "so", "then", "again", "here", "very")


def _variant(questions: list[str], n: int) -> str:
    """The n-th question of an endless sequence without repeats (66 x 256 of them)."""
    base, variant = questions[n % len(questions)], n // len(questions)
    pads = [word for bit, word in enumerate(PADS) if variant >> bit & 1]
    return " ".join([*pads, base])


def _questions() -> list[str]:
    lines = (ROOT / "corpus" / "qa.jsonl").read_text(encoding="utf-8").splitlines()
    asked = [json.loads(line)["question"] for line in lines if line.strip()]
    return ["how do I change the port", "What happens to a scanned PDF?", *asked]


async def _client(
    http: httpx.AsyncClient,
    questions: list[str],
    counter: itertools.count[int],
    until: float,
    out: dict[str, list],
) -> None:
    while time.perf_counter() < until:
        question = _variant(questions, next(counter))
        began = time.perf_counter()
        first: float | None = None
        try:
            async with http.stream("GET", "/v1/ask", params={"q": question}) as response:
                if response.status_code != 200:
                    out["errors"].append(f"HTTP {response.status_code}")
                    await response.aread()
                    continue
                async for line in response.aiter_lines():
                    if first is None and line == "event: delta":
                        first = time.perf_counter() - began
                    if line in ("event: done", "event: error"):
                        kind = line.split(": ")[1]
                        if kind == "error":
                            out["errors"].append("error event")
        except httpx.HTTPError as exc:
            out["errors"].append(type(exc).__name__)
            continue
        out["total"].append(time.perf_counter() - began)
        if first is not None:
            out["first"].append(first)


def _percentiles(samples: list[float]) -> str:
    if not samples:
        return "n/a"
    p50, p95 = np.percentile(np.asarray(samples) * 1000, [50, 95])
    return f"p50 {p50:.0f} ms, p95 {p95:.0f} ms"


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


async def _load(port: int, clients: int, seconds: float, server: psutil.Process) -> None:
    questions = _questions()
    out: dict[str, list] = {"first": [], "total": [], "errors": []}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", timeout=120, limits=limits
    ) as http:
        # Warm-up: the first answer loads what is loaded lazily.
        async with http.stream("GET", "/v1/ask", params={"q": "warm up"}) as response:
            await response.aread()
        began, cpu = time.perf_counter(), _cpu(server)
        until = began + seconds
        counter = itertools.count()
        await asyncio.gather(
            *(_client(http, questions, counter, until, out) for _ in range(clients))
        )
        elapsed, cpu = time.perf_counter() - began, _cpu(server) - cpu
    python = sys.version.split()[0]
    print(f"{clients} clients, {elapsed:.1f} s, {os.cpu_count()} CPUs, Python {python}")
    print(f"answers: {len(out['total'])} ({len(out['total']) / elapsed:.1f} per second)")
    print(f"first delta: {_percentiles(out['first'])}")
    print(f"total: {_percentiles(out['total'])}")
    print(f"errors: {len(out['errors'])} {sorted(set(out['errors']))}")
    # The machine may be shared: CPU seconds per answer say what 2 free cores would do.
    answers = max(1, len(out["total"]))
    print(
        f"server CPU: {cpu:.1f} s, {cpu / answers * 1000:.1f} ms per answer "
        f"(at most {2 / (cpu / answers):.0f} answers per second on 2 free cores); "
        f"load average {os.getloadavg()[0]:.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--data", type=Path, help="a data folder to keep (ingested once)")
    args = parser.parse_args()
    rag = str(Path(sys.executable).with_name("rag"))
    with tempfile.TemporaryDirectory() as temporary:
        scratch = str(args.data or temporary)
        env = {
            **os.environ,
            "RAG_DATA_DIR": scratch,
            "RAG_CACHE__ENABLED": "false",
            "RAG_SERVER__MAX_CONCURRENT_ANSWERS": str(args.clients),
            "RAG_SERVER__MAX_CONNECTIONS": str(args.clients + 10),
            "RAG_AUTH__RATE_LIMIT_PER_MINUTE": "0",
        }
        subprocess.run([rag, "ingest", str(ROOT / "corpus")], env=env, check=True, cwd=ROOT)
        port = _free_port()
        server = subprocess.Popen(
            [rag, "serve", "--port", str(port)], env=env, cwd=ROOT, stderr=subprocess.DEVNULL
        )
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).is_success:
                        break
                except httpx.HTTPError:
                    time.sleep(0.5)
            asyncio.run(_load(port, args.clients, args.seconds, psutil.Process(server.pid)))
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
