"""Proof that two replicas and a worker over PostgreSQL behave as one service.

Starts a throwaway PostgreSQL server, runs the release step (`rag db upgrade`), two
`rag serve` replicas with ``[jobs] run_in_server = false`` and one `rag worker`, all on
127.0.0.1, sharing one database and one blob store folder. The replicas believe the
``X-Forwarded-For`` of 127.0.0.1, as behind a load balancer, so each simulated client
has its own address. Then, while questions run against both replicas all along:

1. documents are uploaded through both replicas (alternately); once each one's job has
   finished (seen through the other replica), both replicas are asked about it until
   they cite it: the delay is printed;
2. half of them are deleted, each through the replica that did not take its upload;
   both replicas are asked until neither cites it;
3. ``POST /v1/ingest`` through one replica, then through the other at once: the second
   is refused 409, naming the first's job;
4. one client sends twice the per-minute rate limit, alternately to both replicas: the
   limit holds in total, not per replica;
5. 12 identical, not yet cached questions at once, 6 to each replica: each ends with
   ``done``.

    .venv/bin/python benchmarks/deployment_proof.py                  # the real local model
    .venv/bin/python benchmarks/deployment_proof.py --fake-embedder  # quicker

tests/test_deployment.py runs it with ``--fake-embedder --database-url`` (a database on
the suite's own cluster) and ``--json``, and checks the report's figures. Exits 1 when a
check fails, after printing every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from deployment import Deployment, Replica, start_postgres
from fakes import parse_sse

NAMES = ("zebra", "walrus", "heron", "otter", "badger", "lynx", "marten", "plover", "ibis",
         "gecko", "tapir", "okapi")  # fmt: skip
PLACES = ("Aberdeen", "Bergen", "Cadiz", "Dover", "Esbjerg", "Faro", "Gdansk", "Hull")
CARGO = ("copper wire", "tea chests", "spare valves", "oak barrels", "printer toner",
         "cedar planks", "glass jars", "salt blocks")  # fmt: skip


def document(n: int) -> tuple[str, bytes, str]:
    """The n-th upload: its file name, its bytes and a question only it answers."""
    name = NAMES[n % len(NAMES)] + ("" if n < len(NAMES) else str(n // len(NAMES)))
    cargo, port = CARGO[n % len(CARGO)], PLACES[n % len(PLACES)]
    text = (
        f"# The {name} courier protocol\n\n"
        f"The {name} protocol moves {cargo} from {port} to the central depot every "
        f"{n % 6 + 2} days. A {name} shipment is signed for by the duty officer, who "
        f"files the {name} receipt under reference {name.upper()}-{n:03d}.\n"
    )
    return f"{name}.md", text.encode(), f"What does the {name} protocol move?"


@dataclass
class Report:
    """What the run saw; every list holds one entry per document and replica."""

    seen_after_s: list[float] = field(default_factory=list)
    forgotten_after_s: list[float] = field(default_factory=list)
    cited_after_delete: int = 0
    """Answers, started after a delete had returned, that still cited the document."""
    background: dict[str, int] = field(default_factory=lambda: {"asked": 0, "done": 0})
    """Every question asked while documents were uploaded and deleted."""
    background_errors: list[str] = field(default_factory=list)
    conflict: dict[str, Any] = field(default_factory=dict)
    rate: dict[str, Any] = field(default_factory=dict)
    simultaneous: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def check(self, ok: bool, what: str) -> None:
        print(("ok    " if ok else "FAIL  ") + what)
        if not ok:
            self.failures.append(what)


class Clients:
    """HTTP clients to the replicas; every request comes from a new client address
    unless one is given (X-Forwarded-For, believed from 127.0.0.1)."""

    def __init__(self, replicas: list[Replica]) -> None:
        self.http = [httpx.AsyncClient(base_url=r.url, timeout=60) for r in replicas]
        self._addresses: Iterator[int] = itertools.count(1)
        self.asked = 0
        self.failed: list[str] = []
        """Why each question that did not end with ``done`` did not."""

    def address(self) -> str:
        n = next(self._addresses)
        return f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"

    def headers(self, address: str | None = None) -> dict[str, str]:
        return {"X-Forwarded-For": address or self.address()}

    async def ask(self, replica: int, question: str) -> tuple[dict[str, Any] | None, str]:
        """The ``done`` event's data (None if the stream did not end with one), and why."""
        self.asked += 1
        response = await self.http[replica].post(
            "/v1/ask", json={"question": question}, headers=self.headers()
        )
        events = parse_sse(response.text) if response.status_code == 200 else []
        if not events or events[-1][0] != "done":
            why = f"HTTP {response.status_code}: {response.text[-200:]}"
            self.failed.append(why)
            return None, why
        done: dict[str, Any] = json.loads(events[-1][1])
        return done, ""

    async def close(self) -> None:
        for http in self.http:
            await http.aclose()


def cites(done: dict[str, Any] | None, name: str) -> bool:
    return done is not None and any(c["document"] == name for c in done["citations"])


async def until(replica: int, clients: Clients, question: str, name: str, want: bool,
                within: float) -> tuple[float, int]:  # fmt: skip
    """When (monotonic) ``replica``'s first answer that cites ``name`` (or no longer
    cites it) ended, and how many answers said otherwise before; inf after ``within``
    twice over. A stream without ``done`` counts for neither (``Clients.failed`` has it)."""
    began, wrong = time.monotonic(), 0
    while time.monotonic() - began < 2 * within:
        done, _ = await clients.ask(replica, question)
        if done is not None:
            if cites(done, name) == want:
                return time.monotonic(), wrong
            wrong += 1
        await asyncio.sleep(0.05)
    return float("inf"), wrong


async def finished(clients: Clients, replica: int, job_id: str, limit_s: float = 300) -> float:
    """Polls the job through ``replica`` until it ends; the moment it was seen to."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        job = await clients.http[replica].get(f"/v1/jobs/{job_id}", headers=clients.headers())
        state = job.json()["state"]
        if state == "finished":
            return time.monotonic()
        if state not in ("queued", "running"):
            raise RuntimeError(f"job {job_id} ended {state}: {job.text}")
        await asyncio.sleep(0.05)
    raise RuntimeError(f"job {job_id} did not finish in {limit_s:.0f} s")


async def background(clients: Clients, questions: list[str], stop: asyncio.Event) -> None:
    """Questions against both replicas in turn, for as long as the uploads and deletes go."""
    for n in itertools.count():
        if stop.is_set():
            return
        await clients.ask(n % 2, questions[n % len(questions)])


async def upload_and_see(clients: Clients, n: int, report: Report, within: float) -> str:
    name, body, question = document(n)
    via, other = n % 2, 1 - n % 2
    response = await clients.http[via].post(
        "/v1/documents", files={"file": (name, body)}, headers=clients.headers()
    )
    if response.status_code != 202:
        raise RuntimeError(f"upload of {name}: HTTP {response.status_code} {response.text}")
    uploaded = response.json()
    job_end = await finished(clients, other, uploaded["job"]["id"])
    seen = await asyncio.gather(
        *(until(replica, clients, question, name, True, within) for replica in (0, 1))
    )
    report.seen_after_s.extend(when - job_end for when, _ in seen)
    doc_id: str = uploaded["document"]["id"]
    return doc_id


async def delete_and_forget(clients: Clients, n: int, doc_id: str, report: Report,
                            within: float) -> None:  # fmt: skip
    name, _, question = document(n)
    via = 1 - n % 2  # not the replica that took the upload
    response = await clients.http[via].delete(f"/v1/documents/{doc_id}", headers=clients.headers())
    if response.status_code != 200:
        raise RuntimeError(f"delete of {name}: HTTP {response.status_code} {response.text}")
    deleted = time.monotonic()
    gone = await asyncio.gather(
        *(until(replica, clients, question, name, False, within) for replica in (0, 1))
    )
    report.forgotten_after_s.extend(when - deleted for when, _ in gone)
    report.cited_after_delete += sum(wrong for _, wrong in gone)


async def one_job_per_folder(clients: Clients, report: Report) -> None:
    first = await clients.http[0].post("/v1/ingest", headers=clients.headers())
    second = await clients.http[1].post("/v1/ingest", headers=clients.headers())
    job = first.json()
    error = second.json().get("error", {}) if second.status_code == 409 else {}
    report.conflict = {
        "first": first.status_code,
        "second": second.status_code,
        "names_first": job.get("id", "?") in error.get("message", ""),
        "message": error.get("message", second.text[:200]),
    }
    if first.status_code == 202:
        await finished(clients, 1, job["id"])


def minute_fresh() -> float:
    """Seconds to wait so that a burst does not straddle a minute (the shared count's
    window slides over whole minutes: rag.web.shared_limit)."""
    into = time.time() % 60
    return 60.5 - into if into > 50 else 0.0


async def rate_limit(clients: Clients, limit: int, report: Report) -> None:
    await asyncio.sleep(minute_fresh())
    client = "198.51.100.7"  # one client, as the load balancer forwards it
    allowed, refused = [0, 0], [0, 0]
    for n in range(2 * limit):
        response = await clients.http[n % 2].get(
            "/v1/documents", params={"limit": 1}, headers=clients.headers(client)
        )
        if response.status_code == 200:
            allowed[n % 2] += 1
        elif response.status_code == 429:
            refused[n % 2] += 1
        else:
            raise RuntimeError(f"rate limit: HTTP {response.status_code} {response.text}")
    report.rate = {"limit": limit, "allowed": allowed, "refused": refused}


async def simultaneous(clients: Clients, question: str, count: int, report: Report) -> None:
    results = await asyncio.gather(*(clients.ask(n % 2, question) for n in range(count)))
    done = [d for d, _ in results if d is not None]
    report.simultaneous = {
        "asked": count,
        "done": len(done),
        "answers": len({d["answer"] for d in done}),
        "cached": sum(bool(d["cached"]) for d in done),
        "errors": [why for d, why in results if d is None],
    }


def make_folder(folder: Path, files: int) -> None:
    """The server-side folder ``POST /v1/ingest`` reads: notes of a few paragraphs."""
    folder.mkdir()
    for i in range(files):
        body = "\n\n".join(f"Note {i}.{j}: crate {i * 10 + j} waits at dock {j}." for j in range(3))
        (folder / f"note{i:02}.md").write_text(f"# Dock note {i}\n\n{body}\n")


async def exercise(replicas: list[Replica], args: argparse.Namespace, report: Report) -> None:
    clients = Clients(replicas)
    try:
        stop = asyncio.Event()
        questions = [document(n)[2] for n in range(args.docs)]
        asking = asyncio.create_task(background(clients, questions, stop))
        began = time.monotonic()
        ids = await asyncio.gather(
            *(upload_and_see(clients, n, report, args.within) for n in range(args.docs))
        )
        uploaded_s = time.monotonic() - began
        await asyncio.gather(
            *(
                delete_and_forget(clients, n, ids[n], report, args.within)
                for n in range(0, args.docs, 2)
            )
        )
        stop.set()
        await asking
        # Every question so far: in the background, and those that waited for each
        # replica to cite (or stop citing) a document.
        report.background = {"asked": clients.asked, "done": clients.asked - len(clients.failed)}
        report.background_errors = list(clients.failed)
        print(f"uploads: {args.docs} documents through both replicas in {uploaded_s:.1f} s")
        await one_job_per_folder(clients, report)
        await rate_limit(clients, args.rate_limit, report)
        last = document(args.docs - 1)[0].removesuffix(".md")
        await simultaneous(clients, f"Who signs for a {last} shipment?", 12, report)
    finally:
        await clients.close()


def verdict(report: Report, args: argparse.Namespace) -> None:
    seen, gone = report.seen_after_s, report.forgotten_after_s
    report.check(
        max(seen) <= args.within,
        f"every replica cites every upload within {args.within:g} s of its job's end: "
        f"{len(seen)} checks, max {max(seen):.2f} s, median {sorted(seen)[len(seen) // 2]:.2f} s",
    )
    report.check(
        max(gone) <= args.within,
        f"no replica cites a deleted document {args.within:g} s after its delete: "
        f"{len(gone)} checks, max {max(gone):.2f} s "
        f"({report.cited_after_delete} answers still citing it meanwhile)",
    )
    asked, done = report.background["asked"], report.background["done"]
    report.check(
        asked > 0 and done == asked,
        f"questions meanwhile: {done} of {asked} ended with done {report.background_errors[:3]}",
    )
    c = report.conflict
    report.check(
        c["first"] == 202 and c["second"] == 409 and c["names_first"],
        f"one job per folder: first {c['first']}, second {c['second']} ({c['message']})",
    )
    r = report.rate
    report.check(
        sum(r["allowed"]) == r["limit"] and all(r["refused"]),
        f"rate limit {r['limit']}/min for one client across replicas: allowed {r['allowed']}, "
        f"refused {r['refused']} (per replica)",
    )
    s = report.simultaneous
    report.check(
        s["done"] == s["asked"] and s["answers"] == 1,
        f"{s['asked']} identical questions at once: {s['done']} ended with done, "
        f"{s['answers']} distinct answer(s), {s['cached']} from the cache {s['errors'][:3]}",
    )


def prove(work: Path, database_url: str, args: argparse.Namespace) -> Report:
    """The whole proof over an empty database; the processes are stopped at the end."""
    (work / "blobs").mkdir()
    make_folder(work / "folder", args.folder_files)
    deployment = Deployment(
        work,
        database_url,
        fake_embedder=args.fake_embedder,
        settings={
            "RAG_AUTH__RATE_LIMIT_PER_MINUTE": str(args.rate_limit),
            "RAG_AUTH__RATE_LIMIT_STORE": "database",
            # A count that waits longer than this falls back to the replica's own (by
            # design: the limit never fails a request); on a loaded test machine that
            # would be the machine's doing, not the shared count's.
            "RAG_DATABASE__BEST_EFFORT_WAIT_S": "5",
            "RAG_SERVER__TRUSTED_PROXIES": '["127.0.0.1"]',
            "RAG_WEB__INGEST_FOLDER": str(work / "folder"),
            # An upload wakes only a worker in its own process; this one, elsewhere, finds
            # it at its next poll (1 s by default): the proof's wait, not what it measures.
            "RAG_JOBS__POLL_S": "0.2",
            # Several batches a job, so that the folder's job is still held when the
            # second replica is asked for it (the fake embedder's pause is per batch).
            "RAG_INGEST__BATCH_SIZE": "8",
        },
    )
    report = Report()
    try:
        began = time.monotonic()
        deployment.run("db", "upgrade")
        replicas = [deployment.replica("replica-a"), deployment.replica("replica-b")]
        deployment.worker("worker", pause=args.worker_pause)
        for replica in replicas:
            replica.wait_ready()
        print(f"started: PostgreSQL migrated, 2 replicas and 1 worker in "
              f"{time.monotonic() - began:.1f} s")  # fmt: skip
        asyncio.run(exercise(replicas, args, report))
    finally:
        deployment.close()
    verdict(report, args)
    return report


def options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=8, help="documents uploaded")
    parser.add_argument("--within", type=float, default=5.0, help="seconds allowed to converge")
    parser.add_argument("--rate-limit", type=int, default=30, help="requests per minute")
    parser.add_argument("--folder-files", type=int, default=24, help="files POST /v1/ingest reads")
    parser.add_argument("--fake-embedder", action="store_true", help="tests/fakes.py's embedder")
    parser.add_argument(
        "--worker-pause", type=float, default=0.0,
        help="with --fake-embedder: seconds each of the worker's batches takes",
    )  # fmt: skip
    parser.add_argument("--database-url", help="an empty database instead of a new cluster")
    parser.add_argument("--json", action="store_true", help="the report as a last JSON line")
    return parser.parse_args()


def main() -> None:
    args = options()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    cluster, url = (None, args.database_url) if args.database_url else start_postgres()
    try:
        with tempfile.TemporaryDirectory(prefix="rag-deploy-") as work:
            report = prove(Path(work), url, args)
    finally:
        if cluster is not None:
            cluster.stop()
    if args.json:
        print(json.dumps(asdict(report)))
    raise SystemExit(1 if report.failures else 0)


if __name__ == "__main__":
    main()
