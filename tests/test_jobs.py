"""Ingestion jobs as rows: claimed once however many workers race, one per folder across
processes, taken up again when their worker dies, cancelled from anywhere; ingest runs
are interrupted only when their heartbeat stops."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import QUICK_JOBS, make_settings
from fakes import Clock, FakeEmbedder, GatedEmbedder, ScriptedService, SlowPdfs, app_client
from httpx import AsyncClient
from sqlalchemy import select

from rag.config import JobSettings, load_settings
from rag.db.engine import create_engine, session_factory, upgrade
from rag.db.tables import IngestRun
from rag.errors import ConfigError, JobConflict, JobStopped
from rag.ingest import store
from rag.jobs.queue import LOST, JobProgress, JobQueue
from rag.jobs.worker import Stop, Worker, run_job
from rag.registry import Overrides
from rag.service import open_service
from rag.web import create_app

EPOCH = datetime(2026, 12, 3, 12, 0, 0)
SETTINGS = JobSettings(heartbeat_s=2.0, stale_after_s=60.0, poll_s=1.0)


@asynccontextmanager
async def queues(
    tmp_path: Path, count: int, clock: Clock | None = None
) -> AsyncIterator[list[JobQueue]]:
    """``count`` queues over one SQLite file, each on its own engine: as many processes."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}"
    await upgrade(url)
    engines = [create_engine(url) for _ in range(count)]
    now = (lambda: EPOCH + timedelta(seconds=clock.now)) if clock else (lambda: EPOCH)
    try:
        yield [JobQueue(session_factory(engine), SETTINGS, now) for engine in engines]
    finally:
        for engine in engines:
            await engine.dispose()


async def test_every_job_is_claimed_exactly_once_however_many_workers_race(
    tmp_path: Path,
) -> None:
    async with queues(tmp_path, 4) as (first, *others):
        enqueued = [(await first.enqueue("folder", [tmp_path / f"f{n}"])).id for n in range(30)]

        async def drain(queue: JobQueue, name: str) -> list[str]:
            taken = []
            while (job := await queue.claim(name)) is not None:
                assert job.worker == name and job.state == "running" and job.attempts == 1
                taken.append(job.id)
            return taken

        claims = await asyncio.gather(*(drain(q, f"w{n}") for n, q in enumerate([first, *others])))
    every = [job_id for taken in claims for job_id in taken]
    assert sorted(every) == sorted(enqueued)  # none twice, none left
    assert sum(1 for taken in claims if taken) >= 2  # they did race


async def test_one_active_job_per_folder_whoever_asks_at_once(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    async with queues(tmp_path, 3) as replicas:
        outcomes = await asyncio.gather(
            *(q.enqueue("folder", [folder]) for q in replicas), return_exceptions=True
        )
        won = [o for o in outcomes if not isinstance(o, BaseException)]
        lost = [o for o in outcomes if isinstance(o, BaseException)]
        assert len(won) == 1 and len(lost) == 2
        for refusal in lost:
            assert isinstance(refusal, JobConflict) and refusal.job_id == won[0].id
            assert won[0].id in refusal.message and str(folder) in refusal.message
        # Finished, the folder is free again.
        running = await replicas[1].claim("w")
        assert running is not None and running.id == won[0].id
        await replicas[1].finish(running.id, "w", "finished", JobProgress())
        assert (await replicas[2].enqueue("folder", [folder])).id != won[0].id


async def test_a_job_whose_worker_died_is_taken_up_again(tmp_path: Path) -> None:
    clock = Clock()
    async with queues(tmp_path, 2, clock) as (a, b):
        job = await a.enqueue("folder", [tmp_path / "docs"])
        assert (await a.claim("A")) is not None
        progress = JobProgress()
        progress.start(3)
        progress.file_done("one.md", "new", 2)
        assert await a.beat(job.id, "A", progress) is None
        seen = await b.get(job.id)
        assert seen is not None and (seen.files_done, seen.files_total, seen.chunks) == (1, 3, 2)
        clock.now += 59  # slow, not dead
        assert await b.claim("B") is None
        clock.now += 2  # 61 s without a heartbeat
        taken = await b.claim("B")
        assert taken is not None and taken.id == job.id
        assert (taken.worker, taken.attempts, taken.state) == ("B", 2, "running")
        # The first worker, back from the dead, learns it lost the job and writes nothing.
        assert await a.beat(job.id, "A", progress) == LOST
        await a.finish(job.id, "A", "failed", progress, error="late")
        await b.finish(job.id, "B", "finished", JobProgress(), result={"new": 3})
        done = await a.get(job.id)
    assert done is not None and (done.state, done.error, done.result) == (
        "finished",
        None,
        {"new": 3},
    )


async def test_a_worker_never_claims_again_a_job_it_runs_however_late_its_beat(
    tmp_path: Path,
) -> None:
    # Seen under load with a 1 s stale_after_s: the worker's own beat came late, it took
    # its running job for a dead worker's and ran it a second time (attempt 3).
    clock = Clock()
    async with queues(tmp_path, 1, clock) as (a,):
        job = await a.enqueue("folder", [tmp_path / "docs"])
        assert (await a.claim("A", running=[])) is not None
        clock.now += 61  # no beat written for longer than stale_after_s
        assert await a.claim("A", running=[job.id]) is None
        assert await a.claim("A", job.id, running=[job.id]) is None
        taken = await a.claim("B")  # another worker does: A may be dead
        assert taken is not None and (taken.id, taken.worker, taken.attempts) == (job.id, "B", 2)


async def test_cancel_ends_a_queued_job_now_and_asks_a_running_one(tmp_path: Path) -> None:
    async with queues(tmp_path, 2) as (web, worker):
        queued = await web.enqueue("upload", [tmp_path / "a.md"], document_id="d1")
        await web.request_cancel(queued.id, "the document was deleted")
        ended = await worker.get(queued.id)
        assert ended is not None and (ended.state, ended.error) == (
            "cancelled",
            "the document was deleted",
        )
        running = await web.enqueue("upload", [tmp_path / "b.md"], document_id="d2")
        assert await worker.claim("W") is not None
        await web.request_cancel(running.id, "the document was deleted")
        assert await worker.beat(running.id, "W", JobProgress()) == "the document was deleted"
        await worker.finish(running.id, "W", "cancelled", JobProgress(), error="stopped")
        stopped = await web.get(running.id)
        assert stopped is not None and stopped.error == "the document was deleted"
        assert await web.live_for("d2") is None


async def test_a_released_job_goes_back_to_the_queue(tmp_path: Path) -> None:
    async with queues(tmp_path, 2) as (a, b):
        job = await a.enqueue("folder", [tmp_path / "docs"])
        assert await a.claim("A") is not None
        await a.release(job.id, "A")
        again = await b.claim("B")
    assert again is not None and again.id == job.id and again.attempts == 2


async def test_a_run_is_interrupted_when_its_heartbeat_stops_not_when_another_starts(
    tmp_path: Path,
) -> None:
    async with queues(tmp_path, 1) as (queue,):
        sessions = queue.sessions

        async def start(at: float) -> int:
            now = EPOCH + timedelta(seconds=at)
            async with sessions() as session, session.begin():
                return await store.start_run(session, ["/docs"], now, now - timedelta(seconds=60))

        async def statuses() -> list[str]:
            async with sessions() as session:
                rows = await session.scalars(select(IngestRun.status).order_by(IngestRun.id))
                return list(rows)

        live = await start(0)
        await start(30)  # another machine's run: the first still beats
        assert await statuses() == ["running", "running"]
        async with sessions() as session, session.begin():
            await store.beat_run(session, live, EPOCH + timedelta(seconds=50))
        await start(100)  # 50 s after the first's last beat, 70 s after the second's
        assert await statuses() == ["running", "interrupted", "running"]
        await start(111)
        assert await statuses() == ["interrupted", "interrupted", "running", "running"]


async def test_ended_jobs_are_pruned_after_keep_days_and_active_ones_never(
    database_url: str, tmp_path: Path
) -> None:
    clock = Clock()
    days = 86400.0
    now = lambda: EPOCH + timedelta(seconds=clock.now)  # noqa: E731
    await upgrade(database_url)
    engine = create_engine(database_url)
    try:
        queue = JobQueue(session_factory(engine), JobSettings(keep_days=2.0), now)
        queued = await queue.enqueue("folder", [tmp_path / "queued"])
        running = await queue.enqueue("folder", [tmp_path / "running"], holder="W")
        ended = {}
        for state in ("finished", "failed", "cancelled"):
            job = await queue.enqueue("folder", [tmp_path / state], holder="W")
            await queue.finish(job.id, "W", state, JobProgress(), error="why")
            ended[state] = job.id
        clock.now += 1.5 * days
        late = await queue.enqueue("folder", [tmp_path / "late"], holder="W")
        await queue.finish(late.id, "W", "finished", JobProgress())
        assert await queue.prune() == 0  # nothing ended two days ago yet
        clock.now += 1 * days
        assert await queue.prune() == 3
        left = {job.id for job in await queue.recent()}
        assert left == {queued.id, running.id, late.id}
        keep_all = JobQueue(session_factory(engine), JobSettings(keep_days=0.0), now)
        clock.now += 30 * days
        assert await keep_all.prune() == 0
        assert {job.id for job in await keep_all.recent()} == left
    finally:
        await engine.dispose()


async def test_a_worker_prunes_ended_jobs_as_it_goes(tmp_path: Path) -> None:
    async with queues(tmp_path, 1) as (queue,):
        job = await queue.enqueue("folder", [tmp_path / "old"], holder="W")
        await queue.finish(job.id, "W", "finished", JobProgress())
        pruning = JobQueue(
            queue.sessions, JobSettings(keep_days=1.0), lambda: EPOCH + timedelta(days=2)
        )
        await Worker(pruning, ScriptedService([]), slots=1).run(until_idle=True)
        assert await queue.get(job.id) is None


@pytest.mark.parametrize("environ", [{"RAG_JOBS__STALE_AFTER_S": "3"}, {"RAG_JOBS__POLL_S": "0"}])
def test_job_settings_are_checked(environ: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=r"jobs\.(stale_after_s|heartbeat_s)"):
        load_settings(environ=environ)


GUIDE = b"# Zebra guide\n\nThe zebra protocol moves striped parcels between warehouses.\n"
OTHER = b"# Llama notes\n\nLlamas carry wool bales across the mountain pass every spring.\n"


@asynccontextmanager
async def replicas(
    tmp_path: Path, database_url: str, runner: Overrides, **sections: Any
) -> AsyncIterator[tuple[AsyncClient, AsyncClient]]:
    """Two web apps over one database, each under its own uvicorn: the first runs jobs,
    the second only answers."""
    sections["database"] = {"url": database_url}
    working = make_settings(tmp_path, jobs=QUICK_JOBS, **sections)
    answering = make_settings(tmp_path, jobs={**QUICK_JOBS, "run_in_server": False}, **sections)
    async with (
        open_service(working, runner) as one,
        open_service(answering, Overrides(embedder=FakeEmbedder())) as two,
        app_client(create_app(working, one)) as a,
        app_client(create_app(answering, two)) as b,
    ):
        yield a, b


async def state_of(client: AsyncClient, job_id: str, *states: str) -> dict[str, Any]:
    """The job once it is in one of ``states``."""
    for _ in range(1000):
        job: dict[str, Any] = (await client.get(f"/v1/jobs/{job_id}")).json()
        if job["state"] in states:
            return job
        await asyncio.sleep(0.01)
    raise AssertionError(f"job {job_id} never reached {states}: {job}")


async def test_a_job_started_on_one_replica_runs_and_is_seen_and_refused_on_another(
    tmp_path: Path, database_url: str
) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "guide.md").write_bytes(GUIDE)
    (folder / "llama.md").write_bytes(OTHER)
    embedder = GatedEmbedder()
    async with replicas(
        tmp_path, database_url, Overrides(embedder=embedder), web={"ingest_folder": str(folder)}
    ) as (a, b):
        started = await b.post("/v1/ingest")  # b runs no jobs: a's worker takes it
        assert started.status_code == 202, started.text
        job_id = started.json()["id"]
        twin = await a.post("/v1/ingest")
        assert twin.status_code == 409 and job_id in twin.json()["error"]["message"]
        running = await state_of(b, job_id, "running")
        assert running["worker"].startswith("serve@") and running["attempts"] == 1
        embedder.gate.set()
        done = await state_of(b, job_id, "finished")
        assert done["progress"]["files_done"] == done["progress"]["files_total"] == 2
        assert done["result"]["new"] == 2 and done["result"]["run_id"] >= 1
        assert [job["id"] for job in (await a.get("/v1/jobs")).json()] == [job_id]


async def test_a_delete_on_one_replica_stops_the_job_running_on_another(
    tmp_path: Path, database_url: str
) -> None:
    slow = SlowPdfs()
    uploads = {"folder": str(tmp_path / "uploads")}
    async with replicas(
        tmp_path, database_url, Overrides(embedder=FakeEmbedder(), loader=slow), uploads=uploads
    ) as (a, b):
        try:
            pdf = await b.post("/v1/documents", files={"file": ("slow.pdf", b"%PDF-1.7\nx\n")})
            assert pdf.status_code == 202, pdf.text
            await slow.started()  # read by a's worker
            deleted = await b.delete(f"/v1/documents/{pdf.json()['document']['id']}")
            assert deleted.status_code == 200, deleted.text
            job = await state_of(a, pdf.json()["job"]["id"], "cancelled")
            assert job["error"] == "the document was deleted"
        finally:
            slow.released.set()  # before the apps stop: no reader thread left behind


async def test_rag_ingest_takes_up_a_waiting_job_refuses_a_live_one_and_stops_when_cancelled(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "guide.md").write_bytes(GUIDE)
    settings = make_settings(tmp_path, jobs=QUICK_JOBS)
    embedder = GatedEmbedder()
    async with open_service(settings, Overrides(embedder=embedder)) as service:
        queue = JobQueue(service.sessions, settings.jobs)
        waiting = await queue.enqueue("folder", [folder])  # no worker anywhere
        job = await queue.take("cli", [folder], "rag ingest@here")
        assert (job.id, job.worker, job.state) == (waiting.id, "rag ingest@here", "running")
        with pytest.raises(JobConflict, match="by rag ingest@here, last heartbeat 0 s ago"):
            await queue.take("cli", [folder], "rag ingest@there")
        running = asyncio.create_task(
            run_job(queue, service, job, "rag ingest@here", stop=Stop(on_shutdown="cancel"))
        )
        await queue.request_cancel(job.id, "an operator said so")  # as from another process
        with pytest.raises(JobStopped, match=f"job {job.id} was cancelled: an operator said so"):
            await running
        ended = await queue.get(job.id)
    assert ended is not None and (ended.state, ended.error) == ("cancelled", "an operator said so")


class ClaimsInFlight(JobQueue):
    """A queue whose claims are held after the database has committed them, as a slow
    network holds the reply: the window in which a worker may be told to stop."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.committed = asyncio.Event()
        self.reply = asyncio.Event()

    async def claim(
        self, worker: str, job_id: str | None = None, *, running: Collection[str] = ()
    ) -> Any:
        job = await super().claim(worker, job_id, running=running)
        if job is not None:
            self.committed.set()
            await self.reply.wait()
        return job


async def test_a_worker_stopped_while_its_claim_is_in_flight_hands_that_job_back(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path)
    async with open_service(settings, Overrides(embedder=GatedEmbedder())) as service:
        assert service.sessions is not None
        queue = ClaimsInFlight(service.sessions, SETTINGS)
        job = await queue.enqueue("folder", [tmp_path / "docs"])
        worker = Worker(queue, service, slots=1)
        worker.start()
        await queue.committed.wait()
        closing = asyncio.create_task(worker.close())
        for _ in range(5):
            await asyncio.sleep(0)  # close() is under way before the claim's reply comes
        queue.reply.set()
        await asyncio.wait_for(closing, 30)
        back = await queue.get(job.id)
    # Cancelled mid-claim, the worker would have left it running under its name until stale.
    assert back is not None
    assert (back.state, back.attempts) == ("queued", 1), back.worker


class StuckQueue(ClaimsInFlight):
    """A database that stops answering: a claim whose reply never comes, and hand-backs
    that wait until the test lets them go."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.unblock = asyncio.Event()

    async def release(self, job_id: str, worker: str) -> None:
        await self.unblock.wait()
        await super().release(job_id, worker)


async def test_a_worker_stops_in_bounded_time_when_the_database_hangs(tmp_path: Path) -> None:
    # Compose kills a container 30 s after asking it to stop: close() must not wait for a
    # hung database longer than its shutdown allows (here 0.2 s, by default 10 s).
    settings = make_settings(tmp_path)
    async with open_service(settings, Overrides(embedder=GatedEmbedder())) as service:
        assert service.sessions is not None
        for stuck_in in ("claim", "hand-back"):
            queue = StuckQueue(service.sessions, SETTINGS)
            (tmp_path / stuck_in).mkdir()
            (tmp_path / stuck_in / "guide.md").write_bytes(GUIDE)  # embedding it waits
            job = await queue.enqueue("folder", [tmp_path / stuck_in])
            worker = Worker(queue, service, slots=1, shutdown_s=0.2)
            worker.start()
            await queue.committed.wait()
            if stuck_in == "hand-back":
                queue.reply.set()  # the job runs; its hand-back will hang
                for _ in range(500):
                    if worker.running:
                        break
                    await asyncio.sleep(0.01)
            began = asyncio.get_running_loop().time()
            await asyncio.wait_for(worker.close(), 10)
            assert asyncio.get_running_loop().time() - began < 5, stuck_in
            queue.reply.set()
            queue.unblock.set()  # let what was left behind end before the loop does
            for _ in range(100):
                await asyncio.sleep(0.01)
            left = await queue.get(job.id)
            assert left is not None and left.state in ("running", "queued"), stuck_in


async def test_until_idle_waits_for_a_job_whose_worker_may_be_dead(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "guide.md").write_bytes(GUIDE)
    clock = Clock()
    quick = JobSettings(heartbeat_s=0.05, stale_after_s=60.0, poll_s=0.05)
    settings = make_settings(tmp_path)
    async with open_service(settings, Overrides(embedder=FakeEmbedder())) as service:
        assert service.sessions is not None
        queue = JobQueue(service.sessions, quick, lambda: EPOCH + timedelta(seconds=clock.now))
        job = await queue.enqueue("folder", [folder])
        assert await queue.claim("gone@elsewhere") is not None  # and then it died
        draining = Worker(queue, service, slots=1).start(until_idle=True)
        await asyncio.sleep(0.5)  # ten polls: the job is running, so the queue is not idle
        assert not draining.done()
        clock.now += 61  # its heartbeat is stale now
        await asyncio.wait_for(draining, 30)
        done = await queue.get(job.id)
    assert done is not None
    assert (done.state, done.attempts) == ("finished", 2), done.error
