"""Uncached answers per second, and the time to the first ``delta``, under concurrent clients.

Runs ``rag serve`` (a real uvicorn on 127.0.0.1) over the bundled handbook in a scratch
data folder, then keeps ``--clients`` connections asking the README's and the labelled
set's questions over ``GET /v1/ask`` for ``--seconds``. The answer cache is off, so
every answer is computed: its question embedded, retrieved and answered. The server's
own limits that would turn clients away are lifted for the measurement (answers at once
= clients, no per-client rate limit, since all clients share 127.0.0.1).

    .venv/bin/python benchmarks/answer_load.py                 # 50 clients, 30 s
    .venv/bin/python benchmarks/answer_load.py --clients 1 --seconds 10

Prints answers per second, the first-delta and total latency p50/p95, and errors.
"""

from __future__ import annotations

import argparse
import asyncio
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

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _questions() -> list[str]:
    lines = (ROOT / "corpus" / "qa.jsonl").read_text(encoding="utf-8").splitlines()
    asked = [json.loads(line)["question"] for line in lines if line.strip()]
    return ["how do I change the port", "What happens to a scanned PDF?", *asked]


async def _client(
    http: httpx.AsyncClient, questions: list[str], offset: int, until: float, out: dict[str, list]
) -> None:
    turn = offset
    while time.perf_counter() < until:
        question = questions[turn % len(questions)]
        turn += 1
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


async def _load(port: int, clients: int, seconds: float) -> None:
    questions = _questions()
    out: dict[str, list] = {"first": [], "total": [], "errors": []}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", timeout=120, limits=limits
    ) as http:
        # Warm-up: the first answer loads what is loaded lazily.
        async with http.stream("GET", "/v1/ask", params={"q": "warm up"}) as response:
            await response.aread()
        began = time.perf_counter()
        until = began + seconds
        await asyncio.gather(*(_client(http, questions, i * 7, until, out) for i in range(clients)))
        elapsed = time.perf_counter() - began
    python = sys.version.split()[0]
    print(f"{clients} clients, {elapsed:.1f} s, {os.cpu_count()} CPUs, Python {python}")
    print(f"answers: {len(out['total'])} ({len(out['total']) / elapsed:.1f} per second)")
    print(f"first delta: {_percentiles(out['first'])}")
    print(f"total: {_percentiles(out['total'])}")
    print(f"errors: {len(out['errors'])} {sorted(set(out['errors']))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    rag = str(Path(sys.executable).with_name("rag"))
    with tempfile.TemporaryDirectory() as scratch:
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
            asyncio.run(_load(port, args.clients, args.seconds))
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
