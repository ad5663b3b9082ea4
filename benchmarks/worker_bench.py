"""Ingestion throughput with one and with two ``rag worker`` processes, and the cost of a claim.

The work is the bundled corpus plus a generated folder of small files, split into
sub-folders so that there are several jobs to share (one job per folder at a time):
every job is enqueued first, then N ``rag worker --until-idle`` processes (the real
command, local backend, the real embedding model) drain the queue of a fresh SQLite
database. Then, in-process, the queue alone: enqueue, claim and finish of many empty
jobs, by one claimer and by two racing over separate connections.

    python benchmarks/worker_bench.py [--files 300] [--folders 8] [--workers 1 2] [--jobs 500]
    python benchmarks/worker_bench.py --postgres --cloudflare --embed-ms 150 --vectorize-ms 300

``--postgres`` drains each time into a new database of a throwaway PostgreSQL server
(benchmarks/deployment.py). ``--cloudflare`` runs the workers on the Cloudflare backend
against the Workers AI and Vectorize fake (tests/cf_fake/), served on 127.0.0.1 from
this process with the given latency per call, after `rag vectorize create`; the
extractive answerer's unit vectors, which the local model computes on that backend too,
come from the suite's fake embedder there, so the figure is the network-bound pipeline's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from deployment import TESTS, Cluster, start_postgres
from sqlalchemy import select

from rag.config import JobSettings
from rag.db.engine import create_engine, session_factory, upgrade
from rag.db.tables import Job
from rag.jobs.queue import JobProgress, JobQueue

ROOT = Path(__file__).resolve().parents[1]
RAG = Path(sys.executable).parent / "rag"
TOPICS = ("parcels", "invoices", "badges", "backups", "rosters", "printers", "leases", "visas")


def generate(folder: Path, files: int, folders: int) -> None:
    """``files`` small Markdown notes of three paragraphs, spread over ``folders`` folders."""
    for n in range(files):
        topic = TOPICS[n % len(TOPICS)]
        sub = folder / f"part{n % folders}"
        sub.mkdir(parents=True, exist_ok=True)
        paragraphs = [
            f"Note {n} on {topic}: request number {n * 7} is handled by desk {n % 13} within "
            f"{n % 5 + 1} working days, and the form asks for the reference {n:05d}.",
            f"Exceptions for {topic} go to the office manager; keep the receipt for {n % 9 + 2} "
            "years and file it under the quarter it belongs to.",
            f"Questions about {topic} that this note does not answer: write to the help desk "
            f"and quote note {n}.",
        ]
        (sub / f"note{n:04}.md").write_text(f"# Note {n}: {topic}\n\n" + "\n\n".join(paragraphs))


async def enqueue(url: str, folders: list[Path]) -> None:
    await upgrade(url)
    engine = create_engine(url)
    try:
        queue = JobQueue(session_factory(engine), JobSettings())
        for folder in folders:
            await queue.enqueue("folder", [folder])
    finally:
        await engine.dispose()


async def results(url: str) -> list[tuple[str, dict[str, Any], str]]:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            rows = (await connection.execute(select(Job.state, Job.result, Job.worker))).all()
    finally:
        await engine.dispose()
    return [(state, result or {}, worker or "") for state, result, worker in rows]


def drain(
    work: Path, folders: list[Path], workers: int, url: str, backend: dict[str, str]
) -> dict[str, float]:
    """``workers`` real `rag worker --until-idle` processes over the queued jobs."""
    data = work / f"data-{workers}"
    url = url or f"sqlite+aiosqlite:///{data / 'rag.db'}"
    env = {
        **os.environ,
        "RAG_DATA_DIR": str(data),
        "RAG_CONFIG": str(ROOT / "config.toml"),
        "RAG_DATABASE__URL": url,
        **backend,
    }
    command = [str(RAG)]
    if backend:  # the Cloudflare fake: the answerer's embedder is the suite's fake
        env.update(PYTHONPATH=str(TESTS), FAKE_EMBEDDER_ROLE="answer_embedder")
        command = [sys.executable, str(TESTS / "rag_on_fake.py"), "0"]
        subprocess.run([*command, "vectorize", "create"], env=env, check=True, capture_output=True)
    asyncio.run(enqueue(url, folders))
    began = time.perf_counter()
    processes = [
        subprocess.Popen(
            [*command, "worker", "--until-idle", "--concurrency", "1"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(workers)
    ]
    codes = [process.wait() for process in processes]
    seconds = time.perf_counter() - began
    if any(codes):
        raise SystemExit(f"a worker failed: exit codes {codes}")
    rows = asyncio.run(results(url))
    if any(state != "finished" for state, _, _ in rows):
        raise SystemExit(f"not every job finished: {[r[0] for r in rows]}")
    return {
        "seconds": seconds,
        "files": sum(r["files"] for _, r, _ in rows),
        "chunks": sum(r["chunks"] for _, r, _ in rows),
        "workers_used": len({worker for _, _, worker in rows}),
    }


def asgi(transport: httpx.AsyncBaseTransport) -> Any:
    """An ASGI app that hands each request to an httpx transport (the fake's), so that
    worker processes reach the in-process fake over HTTP."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body, more = b"", True
        while more:
            message = await receive()
            body, more = body + message.get("body", b""), message.get("more_body", False)
        query = scope["query_string"].decode()
        request = httpx.Request(
            scope["method"],
            f"http://127.0.0.1{scope['path']}" + (f"?{query}" if query else ""),
            headers=[(k.decode(), v.decode()) for k, v in scope["headers"]],
            content=body,
        )
        response = await transport.handle_async_request(request)
        content = await response.aread()
        hop = ("content-length", "transfer-encoding", "content-encoding")
        headers = [(k.encode(), v.encode()) for k, v in response.headers.items() if k not in hop]
        await send({"type": "http.response.start", "status": response.status_code,
                    "headers": headers})  # fmt: skip
        await send({"type": "http.response.body", "body": content})

    return app


@contextmanager
def fake_cloudflare(embed_ms: float, vectorize_ms: float) -> Iterator[dict[str, str]]:
    """A new fake on a loopback port, for one drain; yields the workers' settings."""
    from cf_fake import FakeCloudflare  # found through the tests folder deployment.py adds

    fake = FakeCloudflare(
        path_latency_s={"/ai/run/": embed_ms / 1000, "/vectorize/": vectorize_ms / 1000}
    )
    config = uvicorn.Config(
        asgi(fake.transport), host="127.0.0.1", port=0, lifespan="off", log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield {
            "RAG_BACKEND": "cloudflare",
            "RAG_CLOUDFLARE__API_BASE": f"http://127.0.0.1:{port}/client/v4",
            "RAG_CLOUDFLARE__ACCOUNT_ID": fake.account_id,
            "CLOUDFLARE_API_TOKEN": fake.token,
        }
        kinds = Counter(
            "embed" if r.path.startswith("/ai/run/") else "vectorize " + r.path.rsplit("/", 1)[-1]
            for r in fake.requests
            if r.path.startswith(("/ai/run/", "/vectorize/"))
        )
        print(f"  requests to the fake: {dict(kinds)}")
        violations = fake.violations()
        if violations:
            raise SystemExit(f"the fake saw requests outside Cloudflare's schemas: {violations}")
    finally:
        server.should_exit = True
        thread.join(10)


async def claims(work: Path, jobs: int, claimers: int) -> dict[str, float]:
    """Per job: the enqueue, and the claim plus finish that every job costs a worker."""
    url = f"sqlite+aiosqlite:///{work / f'claims-{claimers}.db'}"
    await upgrade(url)
    engines = [create_engine(url) for _ in range(claimers)]
    try:
        queues = [JobQueue(session_factory(e), JobSettings()) for e in engines]
        began = time.perf_counter()
        for n in range(jobs):
            await queues[0].enqueue("folder", [work / f"target{n}"])
        enqueued = time.perf_counter() - began

        async def take_all(queue: JobQueue, name: str) -> int:
            taken = 0
            while (job := await queue.claim(name)) is not None:
                await queue.finish(job.id, name, "finished", JobProgress(), result={})
                taken += 1
            return taken

        began = time.perf_counter()
        taken = await asyncio.gather(*(take_all(q, f"w{i}") for i, q in enumerate(queues)))
        claimed = time.perf_counter() - began
    finally:
        for engine in engines:
            await engine.dispose()
    assert sum(taken) == jobs
    return {"enqueue_ms": enqueued / jobs * 1000, "claim_finish_ms": claimed / jobs * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=300, help="generated small files")
    parser.add_argument("--folders", type=int, default=8, help="folders (jobs) they fill")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--jobs", type=int, default=500, help="empty jobs for the claim cost")
    parser.add_argument("--postgres", action="store_true", help="a throwaway PostgreSQL server")
    parser.add_argument("--cloudflare", action="store_true", help="the Workers AI fake")
    parser.add_argument("--embed-ms", type=float, default=150.0, help="per embedding call")
    parser.add_argument("--vectorize-ms", type=float, default=300.0, help="per Vectorize call")
    args = parser.parse_args()
    machine = f"{platform.machine()}, {os.cpu_count()} cores"
    print(f"machine: {machine}, Python {platform.python_version()}, load average "
          f"{os.getloadavg()[0]:.1f}")  # fmt: skip
    cluster = start_postgres()[0] if args.postgres else None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            corpus = work / "corpus"
            shutil.copytree(ROOT / "corpus", corpus)
            generated = work / "generated"
            generate(generated, args.files, args.folders)
            folders = [corpus, *sorted(p for p in generated.iterdir() if p.is_dir())]
            where = "PostgreSQL" if cluster else "SQLite"
            if args.cloudflare:
                where += f", Cloudflare fake ({args.embed_ms:g} ms a call to embed, "
                where += f"{args.vectorize_ms:g} ms to Vectorize)"
            print(f"work: {len(folders)} jobs (the corpus and {args.folders} folders of notes)"
                  f" on {where}")  # fmt: skip
            for workers in args.workers:
                url = new_database(cluster, f"drain_{workers}") if cluster else ""
                if args.cloudflare:
                    with fake_cloudflare(args.embed_ms, args.vectorize_ms) as backend:
                        run = drain(work, folders, workers, url, backend)
                else:
                    run = drain(work, folders, workers, url, {})
                print(
                    f"{workers} worker(s): {run['files']:.0f} files, {run['chunks']:.0f} chunks"
                    f" in {run['seconds']:.1f} s = {run['files'] / run['seconds']:.1f} files/s, "
                    f"{run['chunks'] / run['seconds']:.1f} chunks/s "
                    f"({run['workers_used']:.0f} workers took jobs; includes each worker's start)"
                )
            if not cluster:
                for claimers in (1, 2):
                    cost = asyncio.run(claims(work, args.jobs, claimers))
                    print(
                        f"queue on SQLite, {args.jobs} jobs, {claimers} claimer(s): enqueue "
                        f"{cost['enqueue_ms']:.2f} ms/job, claim + finish "
                        f"{cost['claim_finish_ms']:.2f} ms/job"
                    )
    finally:
        if cluster is not None:
            cluster.stop()


def new_database(cluster: Cluster, name: str) -> str:
    cluster.sql(f"CREATE DATABASE {name}")
    return cluster.url(name)


if __name__ == "__main__":
    main()
