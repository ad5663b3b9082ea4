"""The ``jobs`` table as a queue: enqueue, claim, heartbeat, finish, cancel, read.

Every statement that decides who holds a job is one atomic ``UPDATE``, the first
statement of its transaction: on PostgreSQL its subquery locks the chosen row with
``FOR UPDATE SKIP LOCKED``, so concurrent claimers take different jobs without waiting
on each other; on SQLite, which renders no ``FOR UPDATE``, the statement takes the
database's write lock before it reads, so two claimers simply run one after the other.
(A ``SELECT`` first would read a snapshot that another writer may outdate before the
write, which WAL reports as busy rather than waiting.)

Times are the workers' UTC clocks, compared across machines: ``[jobs] stale_after_s``
(a minute) dwarfs the skew of NTP-synchronised hosts.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, Text, and_, delete, func, literal, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from rag.config import JobSettings
from rag.db.tables import ACTIVE_JOB_STATES, Job, utcnow
from rag.domain import IngestReport
from rag.errors import JobConflict
from rag.ports import Progress

LIST_LIMIT = 100
"""Jobs ``GET /v1/jobs`` lists, newest first."""

LOST = "lost"
"""What ``beat`` answers when the job is no longer this worker's."""


def worker_name(role: str) -> str:
    """Who holds a job, readable in a conflict message: role, host, process, and a
    random suffix so that two workers of one process never pass for each other."""
    return f"{role}@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def located(path: Path | str) -> str:
    """A path resolved on this machine; a blob store's location (``s3://bucket/key``, an
    upload's bytes) as it is: it names an object, not a file here."""
    if isinstance(path, str) and "://" in path:
        return path
    return str(Path(path).expanduser().resolve())


def target_of(paths: Sequence[Path | str]) -> str:
    """The located paths, sorted, one a line: what no two active jobs may share."""
    return "\n".join(sorted({located(p) for p in paths}))


class JobProgress(Progress):
    """Counts what the ingestion reports, for the row's progress columns; passes it on to
    ``display`` (the CLI's bar) as well."""

    def __init__(self, display: Progress | None = None) -> None:
        self.display = display or Progress()
        self.files_total: int | None = None
        self.files_done = 0
        self.chunks = 0
        self.embedded_count = 0
        self.pages_recognised = 0
        self.current: str | None = None

    def start(self, files: int) -> None:
        self.files_total = files
        self.display.start(files)

    def file_done(self, path: str, outcome: str, chunks: int) -> None:
        self.files_done += 1
        self.chunks += chunks
        self.current = path
        self.display.file_done(path, outcome, chunks)

    def embedded(self, count: int) -> None:
        self.embedded_count += count
        self.display.embedded(count)

    def recognised(self, pages: int) -> None:
        self.pages_recognised += pages
        self.display.recognised(pages)

    def columns(self) -> dict[str, Any]:
        return {
            "files_total": self.files_total,
            "files_done": self.files_done,
            "chunks": self.chunks,
            "embedded": self.embedded_count,
            "pages_recognised": self.pages_recognised,
            "current": self.current,
        }


def result_of(report: IngestReport) -> dict[str, Any]:
    return {
        "run_id": report.run_id,
        **report.counts(),
        "seconds": round(report.seconds, 3),
        "neurons": report.neurons,
        "usd": report.usd,
        "problems": report.problems,
    }


def _utc(moment: datetime | None) -> datetime | None:
    return None if moment is None else moment.replace(tzinfo=UTC)


def job_dict(job: Job) -> dict[str, Any]:
    """The job as ``GET /v1/jobs/{id}`` shows it."""
    folder = job.paths[0] if job.paths else ""
    if job.kind == "upload":
        folder = str(Path(folder).parent)
    return {
        "id": job.id,
        "kind": job.kind,
        "folder": folder,
        "paths": list(job.paths),
        "document_id": job.document_id,
        "state": job.state,
        "worker": job.worker,
        "attempts": job.attempts,
        "created_at": _utc(job.created_at),
        "started_at": _utc(job.started_at),
        "finished_at": _utc(job.finished_at),
        "heartbeat_at": _utc(job.heartbeat_at),
        "progress": {
            "files_done": job.files_done,
            "files_total": job.files_total,
            "chunks": job.chunks,
            "embedded": job.embedded,
            "pages_recognised": job.pages_recognised,
            "current": job.current,
        },
        "result": job.result,
        "error": job.error,
    }


class JobQueue:
    """The jobs of one database, for the web app, the workers and the CLI."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        settings: JobSettings,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.clock = clock
        self.listeners: list[Callable[[], None]] = []
        """Called when a job becomes claimable here (enqueued, or handed back): a worker
        in this process wakes at once."""

    def _stale_before(self) -> datetime:
        return self.clock() - timedelta(seconds=self.settings.stale_after_s)

    def _claimable(self, table: Any = Job) -> ColumnElement[bool]:
        return or_(
            table.state == "queued",
            and_(table.state == "running", table.heartbeat_at < self._stale_before()),
        )

    async def enqueue(
        self,
        kind: str,
        paths: Sequence[Path | str],
        *,
        document_id: str | None = None,
        holder: str | None = None,
    ) -> Job:
        """A new queued job (running for ``holder`` at once when given), or ``JobConflict``
        naming the active job that holds the same target."""
        resolved = [located(p) for p in paths]
        target = target_of(resolved)
        for _ in range(3):
            now = self.clock()
            job = Job(
                id=uuid.uuid4().hex,
                kind=kind,
                target=target,
                paths=resolved,
                document_id=document_id,
                state="queued" if holder is None else "running",
                worker=holder,
                attempts=0 if holder is None else 1,
                created_at=now,
                started_at=None if holder is None else now,
                heartbeat_at=None if holder is None else now,
                files_done=0,
                chunks=0,
                embedded=0,
            )
            try:
                async with self.sessions() as session, session.begin():
                    session.add(job)
            except IntegrityError:
                active = await self.active_on(target)
                if active is None:
                    continue  # it ended between the insert and the look: try again
                raise JobConflict(_conflict_message(active, self.clock()), active.id) from None
            for listener in self.listeners:
                listener()
            return job
        raise JobConflict(f"jobs over {target} keep starting and ending: try again", "")

    async def take(self, kind: str, paths: Sequence[Path], holder: str) -> Job:
        """A job over ``paths`` that ``holder`` runs itself (``rag ingest``): a new one; or
        the one already over them when it is only queued, or its worker died, which is
        the same work; ``JobConflict`` naming it when it is alive elsewhere."""
        try:
            return await self.enqueue(kind, paths, holder=holder)
        except JobConflict as exc:
            taken = await self.claim(holder, exc.job_id)
            if taken is None:
                raise
            return taken

    async def active_on(self, target: str) -> Job | None:
        async with self.sessions() as session:
            found: Job | None = await session.scalar(
                select(Job).where(Job.target == target, Job.state.in_(ACTIVE_JOB_STATES))
            )
        return found

    async def claim(
        self, worker: str, job_id: str | None = None, *, running: Collection[str] = ()
    ) -> Job | None:
        """The oldest claimable job (or ``job_id`` if it is claimable), now ``worker``'s.

        ``running``: the jobs the caller runs now, never claimed again however late their
        heartbeat. A worker whose own beat was held up past ``stale_after_s`` (a busy
        machine) would otherwise take its own job for a dead worker's and run it twice
        at once, under one name, so neither run would learn it had lost it.
        """
        # A read first, which takes no lock: idle workers polling an empty queue never
        # queue up for SQLite's write lock. The write below decides; this only skips it.
        waiting = select(Job.id).where(self._claimable())
        if job_id is not None:
            waiting = waiting.where(Job.id == job_id)
        if running:
            waiting = waiting.where(Job.id.not_in(list(running)))
        async with self.sessions() as session:
            if await session.scalar(waiting.limit(1)) is None:
                return None
        pick = aliased(Job, name="pick")
        choice = select(pick.id).where(self._claimable(pick))
        if job_id is not None:
            choice = choice.where(pick.id == job_id)
        if running:
            choice = choice.where(pick.id.not_in(list(running)))
        chosen = (
            choice.order_by(pick.created_at, pick.id)
            .limit(1)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        now = self.clock()
        statement = (
            update(Job)
            .where(Job.id == chosen, self._claimable())
            .values(
                state="running",
                worker=worker,
                heartbeat_at=now,
                started_at=func.coalesce(Job.started_at, now),
                attempts=Job.attempts + 1,
            )
            .returning(Job.id)
            .execution_options(synchronize_session=False)
        )
        async with self.sessions() as session, session.begin():
            claimed = await session.scalar(statement)
            if claimed is None:
                return None
            job: Job | None = await session.get(Job, claimed)
        return job

    async def busy(self) -> bool:
        """Whether any job is queued or running (on any worker, live or not)."""
        async with self.sessions() as session:
            found = await session.scalar(
                select(Job.id).where(Job.state.in_(ACTIVE_JOB_STATES)).limit(1)
            )
        return found is not None

    async def beat(self, job_id: str, worker: str, progress: JobProgress) -> str | None:
        """Write the heartbeat and progress: None while the job is ``worker``'s to go on
        with, the cancel reason when someone asked it to stop, ``LOST`` when it is not
        ``worker``'s any more (taken for dead and claimed by another)."""
        async with self.sessions() as session, session.begin():
            written = await session.execute(
                update(Job)
                .where(Job.id == job_id, Job.worker == worker, Job.state == "running")
                .values(heartbeat_at=self.clock(), **progress.columns())
                .execution_options(synchronize_session=False)
            )
            if not _rowcount(written):
                return LOST
            reason: str | None = await session.scalar(
                select(Job.cancel_reason).where(Job.id == job_id)
            )
        return reason

    async def finish(
        self,
        job_id: str,
        worker: str,
        state: str,
        progress: JobProgress,
        *,
        result: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        """End ``worker``'s job: finished, failed or cancelled (with ``cancel_reason``
        as the error when someone asked for it); the target is free again."""
        values: dict[str, Any] = {
            "state": state,
            "finished_at": self.clock(),
            "current": None,
            "result": result,
            **{k: v for k, v in progress.columns().items() if k != "current"},
        }
        if state == "cancelled":
            # Typed, so that PostgreSQL can tell what the parameter is when it is NULL.
            values["error"] = func.coalesce(Job.cancel_reason, literal(error, Text()))
        else:
            values["error"] = error
        async with self.sessions() as session, session.begin():
            await session.execute(
                update(Job)
                .where(Job.id == job_id, Job.worker == worker, Job.state == "running")
                .values(**values)
                .execution_options(synchronize_session=False)
            )

    async def release(self, job_id: str, worker: str) -> None:
        """Put ``worker``'s job back in the queue (its worker is stopping): another takes
        it up and the ingestion resumes where this one stopped."""
        async with self.sessions() as session, session.begin():
            await session.execute(
                update(Job)
                .where(Job.id == job_id, Job.worker == worker, Job.state == "running")
                .values(state="queued", heartbeat_at=None, current=None)
                .execution_options(synchronize_session=False)
            )
        for listener in self.listeners:
            listener()

    async def request_cancel(self, job_id: str, reason: str) -> None:
        """Cancel a queued job (or one whose worker died) now; ask a running one to stop."""
        now = self.clock()
        async with self.sessions() as session, session.begin():
            ended = await session.execute(
                update(Job)
                .where(Job.id == job_id, self._claimable())
                .values(state="cancelled", error=reason, finished_at=now, current=None)
                .execution_options(synchronize_session=False)
            )
            if not _rowcount(ended):
                await session.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.state == "running")
                    .values(cancel_reason=reason)
                    .execution_options(synchronize_session=False)
                )

    async def cancelled(self, job_id: str, reason: str) -> None:
        """Ask the job to stop and wait until it has, wherever it runs: its worker notices
        within a heartbeat; one that died meanwhile is cancelled here once it is stale."""
        deadline = asyncio.get_running_loop().time() + self.settings.stale_after_s * 2
        while True:
            await self.request_cancel(job_id, reason)
            job = await self.get(job_id)
            if job is None or job.state not in ACTIVE_JOB_STATES:
                return
            if asyncio.get_running_loop().time() > deadline:
                return
            await asyncio.sleep(min(self.settings.heartbeat_s / 2, self.settings.poll_s))

    async def get(self, job_id: str) -> Job | None:
        async with self.sessions() as session:
            job: Job | None = await session.get(Job, job_id)
        return job

    async def recent(self, limit: int = LIST_LIMIT) -> list[Job]:
        async with self.sessions() as session:
            rows = await session.scalars(
                select(Job).order_by(Job.created_at.desc(), Job.id).limit(limit)
            )
        return list(rows)

    async def prune(self) -> int:
        """Delete the jobs that ended more than ``[jobs] keep_days`` ago; how many went.

        Only ended states are named, so a job that is queued or running is never touched,
        however old; one whose end was never stamped counts from its creation.
        """
        if self.settings.keep_days <= 0:
            return 0
        before = self.clock() - timedelta(days=self.settings.keep_days)
        ended = func.coalesce(Job.finished_at, Job.created_at)
        async with self.sessions() as session, session.begin():
            gone = await session.execute(
                delete(Job)
                .where(Job.state.not_in(ACTIVE_JOB_STATES), ended < before)
                .execution_options(synchronize_session=False)
            )
        return _rowcount(gone)

    async def live_for(self, document_id: str) -> Job | None:
        """The queued or running job of an uploaded document, if any."""
        async with self.sessions() as session:
            job: Job | None = await session.scalar(
                select(Job)
                .where(Job.document_id == document_id, Job.state.in_(ACTIVE_JOB_STATES))
                .limit(1)
            )
        return job


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


def _conflict_message(job: Job, now: datetime) -> str:
    over = job.target.replace("\n", ", ")
    if job.state == "queued":
        return f"an ingestion job over {over} is already queued: {job.id}"
    beat = ""
    if job.heartbeat_at is not None:
        beat = f", last heartbeat {max((now - job.heartbeat_at).total_seconds(), 0):.0f} s ago"
    return f"an ingestion job over {over} is already running: {job.id} (by {job.worker}{beat})"
