"""Uncached answers (or searches) per second, and the time to the first ``delta``, under load.

Runs ``rag serve`` (a real uvicorn on 127.0.0.1) over the bundled handbook in a scratch
data folder, then keeps ``--clients`` connections asking the README's and the labelled
set's questions over ``GET /v1/ask`` for ``--seconds``. ``--replicas 1 2`` measures
one server, then two sharing the database, the clients taking turns between them as
behind a load balancer; ``--postgres`` puts the database on a throwaway PostgreSQL
server (benchmarks/deployment.py); ``--search`` sends ``POST /v1/search``. The answer
cache is off, so
every answer is computed: its question embedded, retrieved and answered. The server's
own limits that would turn clients away are lifted for the measurement (answers at once
= clients, no per-client rate limit, since all clients share 127.0.0.1). No question is
asked twice: each is varied by function words ("please", "now", ...) that retrieval and
the evidence gate leave out, so no memory of an earlier answer or vector can serve it.

    .venv/bin/python benchmarks/answer_load.py                 # 50 clients, 30 s
    .venv/bin/python benchmarks/answer_load.py --clients 1 --seconds 10
    .venv/bin/python benchmarks/answer_load.py --postgres --replicas 1 2 --clients 20 --search

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
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import numpy as np
import psutil
from deployment import Deployment, start_postgres

ROOT = Path(__file__).resolve().parent.parent


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


async def _answer(http: httpx.AsyncClient, question: str, out: dict[str, list]) -> None:
    began = time.perf_counter()
    first: float | None = None
    try:
        async with http.stream("GET", "/v1/ask", params={"q": question}) as response:
            if response.status_code != 200:
                out["errors"].append(f"HTTP {response.status_code}")
                await response.aread()
                return
            async for line in response.aiter_lines():
                if first is None and line == "event: delta":
                    first = time.perf_counter() - began
                if line == "event: error":
                    out["errors"].append("error event")
    except httpx.HTTPError as exc:
        out["errors"].append(type(exc).__name__)
        return
    out["total"].append(time.perf_counter() - began)
    if first is not None:
        out["first"].append(first)


async def _search(http: httpx.AsyncClient, query: str, out: dict[str, list]) -> None:
    began = time.perf_counter()
    try:
        response = await http.post("/v1/search", json={"query": query, "k": 10})
    except httpx.HTTPError as exc:
        out["errors"].append(type(exc).__name__)
        return
    if response.status_code != 200 or not response.json()["hits"]:
        out["errors"].append(f"HTTP {response.status_code}")
        return
    out["total"].append(time.perf_counter() - began)


Request = Callable[[httpx.AsyncClient, str, dict[str, list]], Awaitable[None]]


async def _client(
    http: httpx.AsyncClient,
    request: Request,
    questions: list[str],
    counter: itertools.count[int],
    until: float,
    out: dict[str, list],
) -> None:
    while time.perf_counter() < until:
        await request(http, _variant(questions, next(counter)), out)


def _percentiles(samples: list[float]) -> str:
    if not samples:
        return "n/a"
    p50, p95 = np.percentile(np.asarray(samples) * 1000, [50, 95])
    return f"p50 {p50:.0f} ms, p95 {p95:.0f} ms"


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


async def _load(
    urls: list[str], clients: int, seconds: float, servers: list[psutil.Process], search: bool
) -> None:
    questions = _questions()
    out: dict[str, list] = {"first": [], "total": [], "errors": []}
    per_server = -(-clients // len(urls))
    limits = httpx.Limits(max_connections=per_server, max_keepalive_connections=per_server)
    https = [httpx.AsyncClient(base_url=url, timeout=120, limits=limits) for url in urls]
    try:
        for http in https:  # warm-up: the first answer loads what is loaded lazily
            async with http.stream("GET", "/v1/ask", params={"q": "warm up"}) as response:
                await response.aread()
        began, cpu = time.perf_counter(), sum(_cpu(s) for s in servers)
        until = began + seconds
        counter = itertools.count()
        # Client n talks to server n mod N, as a round-robin load balancer spreads them.
        request = _search if search else _answer
        await asyncio.gather(
            *(
                _client(https[n % len(https)], request, questions, counter, until, out)
                for n in range(clients)
            )
        )
        elapsed, cpu = time.perf_counter() - began, sum(_cpu(s) for s in servers) - cpu
    finally:
        for http in https:
            await http.aclose()
    python = sys.version.split()[0]
    what = "searches" if search else "answers"
    print(
        f"{clients} clients, {len(urls)} server(s), {elapsed:.1f} s, {os.cpu_count()} CPUs, "
        f"Python {python}"
    )
    print(f"{what}: {len(out['total'])} ({len(out['total']) / elapsed:.1f} per second)")
    if not search:
        print(f"first delta: {_percentiles(out['first'])}")
    print(f"total: {_percentiles(out['total'])}")
    print(f"errors: {len(out['errors'])} {sorted(set(out['errors']))}")
    # The machine may be shared: CPU seconds per request say what 2 free cores would do.
    done = max(1, len(out["total"]))
    print(
        f"server CPU: {cpu:.1f} s, {cpu / done * 1000:.1f} ms per request "
        f"(at most {2 / (cpu / done):.0f} per second on 2 free cores); "
        f"load average {os.getloadavg()[0]:.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--replicas", type=int, nargs="+", default=[1], help="servers, in turn")
    parser.add_argument("--postgres", action="store_true", help="a throwaway PostgreSQL server")
    parser.add_argument("--search", action="store_true", help="POST /v1/search, not answers")
    parser.add_argument("--data", type=Path, help="a data folder to keep (ingested once)")
    args = parser.parse_args()
    cluster, url = start_postgres() if args.postgres else (None, "")
    try:
        with tempfile.TemporaryDirectory() as temporary:
            work = args.data or Path(temporary)
            limit = str(args.clients)
            deployment = Deployment(
                work,
                url or f"sqlite+aiosqlite:///{work / 'rag.db'}",
                fake_embedder=False,
                settings={
                    "RAG_CACHE__ENABLED": "false",
                    "RAG_SERVER__MAX_CONCURRENT_ANSWERS": limit,
                    "RAG_SERVER__MAX_CONNECTIONS": str(int(limit) + 10),
                    "RAG_AUTH__RATE_LIMIT_PER_MINUTE": "0",
                },
            )
            try:
                deployment.run("ingest", str(ROOT / "corpus"))
                for count in args.replicas:
                    servers = [deployment.replica(f"server-{count}-{n}") for n in range(count)]
                    for server in servers:
                        server.wait_ready()
                    processes = [psutil.Process(s.process.pid) for s in servers]
                    urls = [s.url for s in servers]
                    database = "PostgreSQL" if url else "SQLite"
                    print(f"-- {count} server(s) on {database}")
                    asyncio.run(_load(urls, args.clients, args.seconds, processes, args.search))
                    for server in servers:
                        server.stop()
            finally:
                deployment.close()
    finally:
        if cluster is not None:
            cluster.stop()


if __name__ == "__main__":
    main()
