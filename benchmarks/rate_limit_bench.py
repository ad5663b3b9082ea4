"""What the shared limits add: the per-client rate limit per request, and Cloudflare's
API budget per API call.

    python benchmarks/rate_limit_bench.py
    python benchmarks/rate_limit_bench.py --postgres postgresql+asyncpg://rag@127.0.0.1:5432/rag

Prints, per store, the time ``take`` costs a request (p50, p95, mean), counted one
request after another over 50 clients, then with 8 requests in flight at once (and, for
scale, a ``SELECT 1`` through the same engine): the
in-process bucket, the shared count on a SQLite file (WAL, as ``rag serve`` opens it),
and on PostgreSQL when a URL is given (its database is migrated first).

Then the same for the Cloudflare client's ``RateLimiter.acquire`` (what every API call
waits on), alone and sharing its budget in ``api_budget``: a budget large enough never
to wait, so the figures are the bookkeeping alone, a reservation every ``block`` calls
(10) included in the mean and the p95.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker

from rag.backends.cloudflare.ratelimit import RateLimiter as ApiBudget
from rag.backends.cloudflare.shared_budget import SharedBudget, block
from rag.db.engine import create_engine, session_factory, upgrade_sync
from rag.web.limits import RateLimiter
from rag.web.shared_limit import SharedRateLimiter

REQUESTS = 2000
CLIENTS = 50
BEST_EFFORT_WAIT_S = 0.5  # [database] best_effort_wait_s: the engine the limiter uses


def figures(samples: list[float]) -> str:
    p50, p95 = np.percentile(np.asarray(samples) * 1e6, [50, 95])
    return f"p50 {p50:8.0f} us  p95 {p95:8.0f} us  mean {statistics.mean(samples) * 1e6:8.0f} us"


async def timed(take: object, concurrency: int) -> list[float]:
    assert callable(take)
    samples: list[float] = []

    async def worker(offset: int) -> None:
        for n in range(offset, REQUESTS, concurrency):
            began = time.perf_counter()
            await take(f"key:{n % CLIENTS}")
            samples.append(time.perf_counter() - began)

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return samples


async def bench(name: str, url: str | None) -> None:
    for concurrency in (1, 8):
        if url is None:
            limiter = RateLimiter(1_000_000)

            async def take(client: str, limiter: RateLimiter = limiter) -> None:
                limiter.take(client)

            print(f"{name:>10}, {concurrency} at once: {figures(await timed(take, concurrency))}")
            continue
        engine = create_engine(url, BEST_EFFORT_WAIT_S)
        sessions = session_factory(engine)
        shared = SharedRateLimiter(1_000_000, lambda sessions=sessions: sessions)
        await timed(shared.take, 1)  # warm up: connections, first rows
        if concurrency == 1:
            # The floor on this machine now: a statement that does nothing, same engine.
            async def nothing(_: str, sessions: async_sessionmaker[Any] = sessions) -> None:
                async with sessions() as session:
                    await session.execute(text("SELECT 1"))

            print(f"{name:>10}, SELECT 1 : {figures(await timed(nothing, 1))}")
        samples = await timed(shared.take, concurrency)
        print(
            f"{name:>10}, {concurrency} at once: {figures(samples)}  "
            f"({shared.fallbacks} of {2 * REQUESTS} counted in memory: the database was busy)"
        )
        await engine.dispose()


async def bench_api_budget(name: str, url: str | None) -> None:
    budget = 1_000_000  # never spent: only the bookkeeping is timed
    for concurrency in (1, 8):
        limiter = ApiBudget(budget, time.monotonic, asyncio.sleep)
        engine = None
        if url is not None:
            engine = create_engine(url, BEST_EFFORT_WAIT_S)
            limiter.share(SharedBudget(session_factory(engine), f"bench:{concurrency}"))

        async def acquire(_: str, limiter: ApiBudget = limiter) -> None:
            await limiter.acquire()

        await timed(acquire, 1)  # warm up
        samples = await timed(acquire, concurrency)
        every = f"  (a reservation every {block(budget)} calls)" if engine else ""
        print(f"{name:>10}, {concurrency} at once: {figures(samples)}{every}")
        if engine is not None:
            await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--postgres", help="a postgresql+asyncpg:// URL to measure as well")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sqlite_url = f"sqlite+aiosqlite:///{Path(tmp) / 'rag.db'}"
        upgrade_sync(sqlite_url)
        print("per-client rate limit, per request")
        asyncio.run(bench("memory", None))
        asyncio.run(bench("SQLite", sqlite_url))
        if args.postgres:
            upgrade_sync(args.postgres)
            asyncio.run(bench("PostgreSQL", args.postgres))
        print("Cloudflare API budget, per API call")
        asyncio.run(bench_api_budget("memory", None))
        asyncio.run(bench_api_budget("SQLite", sqlite_url))
        if args.postgres:
            asyncio.run(bench_api_budget("PostgreSQL", args.postgres))


if __name__ == "__main__":
    main()
