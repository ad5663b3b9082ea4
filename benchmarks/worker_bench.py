"""Ingestion throughput with one and with two ``rag worker`` processes, and the cost of a claim.

The work is the bundled corpus plus a generated folder of small files, split into
sub-folders so that there are several jobs to share (one job per folder at a time):
every job is enqueued first, then N ``rag worker --until-idle`` processes (the real
command, local backend, the real embedding model) drain the queue of a fresh SQLite
database. Then, in-process, the queue alone: enqueue, claim and finish of many empty
jobs, by one claimer and by two racing over separate connections.

    python benchmarks/worker_bench.py [--files 300] [--folders 8] [--workers 1 2] [--jobs 500]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rag.config import JobSettings
from rag.db.engine import create_engine, session_factory, upgrade
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


def drain(work: Path, folders: list[Path], workers: int) -> dict[str, float]:
    data = work / f"data-{workers}"
    url = f"sqlite+aiosqlite:///{data / 'rag.db'}"
    asyncio.run(enqueue(url, folders))
    env = {**os.environ, "RAG_DATA_DIR": str(data), "RAG_CONFIG": str(ROOT / "config.toml")}
    began = time.perf_counter()
    processes = [
        subprocess.Popen(
            [str(RAG), "worker", "--until-idle", "--concurrency", "1"],
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
    with sqlite3.connect(data / "rag.db") as db:
        rows = db.execute("SELECT state, result, worker FROM jobs").fetchall()
    db.close()
    if any(state != "finished" for state, _, _ in rows):
        raise SystemExit(f"not every job finished: {[r[0] for r in rows]}")
    results = [json.loads(result) for _, result, _ in rows]
    return {
        "seconds": seconds,
        "files": sum(r["files"] for r in results),
        "chunks": sum(r["chunks"] for r in results),
        "workers_used": len({worker for _, _, worker in rows}),
    }


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
    args = parser.parse_args()
    machine = f"{platform.machine()}, {os.cpu_count()} cores"
    print(f"machine: {machine}, Python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        corpus = work / "corpus"
        shutil.copytree(ROOT / "corpus", corpus)
        generated = work / "generated"
        generate(generated, args.files, args.folders)
        folders = [corpus, *sorted(p for p in generated.iterdir() if p.is_dir())]
        print(f"work: {len(folders)} jobs (the corpus and {args.folders} folders of notes)")
        for workers in args.workers:
            run = drain(work, folders, workers)
            print(
                f"{workers} worker(s): {run['files']:.0f} files, {run['chunks']:.0f} chunks in "
                f"{run['seconds']:.1f} s = {run['files'] / run['seconds']:.1f} files/s, "
                f"{run['chunks'] / run['seconds']:.1f} chunks/s "
                f"({run['workers_used']:.0f} workers took jobs; includes each worker's start)"
            )
        for claimers in (1, 2):
            cost = asyncio.run(claims(work, args.jobs, claimers))
            print(
                f"queue on SQLite, {args.jobs} jobs, {claimers} claimer(s): enqueue "
                f"{cost['enqueue_ms']:.2f} ms/job, claim + finish {cost['claim_finish_ms']:.2f} "
                "ms/job"
            )


if __name__ == "__main__":
    main()
