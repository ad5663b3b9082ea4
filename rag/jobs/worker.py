"""Running jobs: a worker loop (``rag worker``, or inside ``rag serve``) and one job's run.

A worker claims jobs while it has a free slot (``[uploads] max_concurrent_jobs``), wakes
every ``[jobs] poll_s`` to look for more (at once when its own process enqueued one),
and runs each with a heartbeat beside it. The heartbeat writes the progress to the row
and is how the job learns what others decided: a cancel request (a delete on another
replica) or that it was taken for dead and claimed by another worker; either stops it.

Stopping a worker (SIGTERM, Ctrl-C, the server's shutdown) puts its jobs back in the
queue for another worker, and a worker killed outright leaves them running with a
heartbeat that goes stale, after which another claims them: ingestion is resumable,
so a job taken up again redoes only what was not committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rag.config import JobSettings
from rag.db.tables import Job
from rag.domain import IngestReport
from rag.errors import JobStopped, RagError
from rag.jobs.queue import LOST, JobProgress, JobQueue, result_of, worker_name
from rag.jobs.work import perform
from rag.ports import BlobStore, Progress, QAService

log = logging.getLogger(__name__)

PRUNE_EVERY_S = 600.0
"""How often a worker deletes jobs older than ``[jobs] keep_days``."""
SHUTDOWN_S = 10.0
"""The longest ``Worker.close`` waits on the database (a claim in flight, the hand-backs).
A container is killed 30 s after it is asked to stop (compose's grace); what close could
not hand back in time stays running under a stopped worker until its heartbeat is stale
(``[jobs] stale_after_s``), and another worker then takes it up."""


@dataclass
class Stop:
    """What a job does when its task is cancelled."""

    reason: str | None = None
    """Why: a cancel reason (the job ends ``cancelled`` with it), ``LOST`` (another
    worker holds it now: write nothing), or None: its process is stopping."""
    on_shutdown: Literal["release", "cancel"] = "release"
    """A stopping worker hands its job back; an interrupted ``rag ingest`` ends its own."""
    shutdown_reason: str = "the process running the job was stopped"
    by_heartbeat: bool = False
    """The job's own heartbeat stopped it (a cancel request, or the job was lost)."""


async def run_job(
    queue: JobQueue,
    service: QAService,
    job: Job,
    worker: str,
    *,
    stop: Stop,
    display: Progress | None = None,
    blobs: BlobStore | None = None,
) -> IngestReport:
    """Run a job ``worker`` has claimed to its end, recorded on its row. Raises what
    failed it (after recording it), ``JobStopped`` when its heartbeat learned that it was
    cancelled or taken up elsewhere, and ``CancelledError`` when its own process stops it
    (``stop`` then says why, or that the process is stopping)."""
    progress = JobProgress(display)
    task = asyncio.current_task()
    assert task is not None
    beating = asyncio.create_task(_beat(queue, job.id, worker, progress, task, stop))
    try:
        report = await perform(service, job, progress, blobs)
    except asyncio.CancelledError:
        if stop.reason is None and stop.on_shutdown == "release":
            await _recorded(queue.release(job.id, worker))
        elif stop.reason != LOST:
            why = stop.reason or stop.shutdown_reason
            await _recorded(queue.finish(job.id, worker, "cancelled", progress, error=why))
        if not stop.by_heartbeat:
            raise
        # Nobody outside cancelled this task: the job ended, and says why, as an error.
        task.uncancel()
        if stop.reason == LOST:
            raise JobStopped(
                f"job {job.id} was taken up by another worker: its heartbeat had not been "
                "written for [jobs] stale_after_s"
            ) from None
        raise JobStopped(f"job {job.id} was cancelled: {stop.reason}") from None
    except RagError as exc:
        await _recorded(queue.finish(job.id, worker, "failed", progress, error=exc.message))
        raise
    except Exception as exc:
        log.exception("ingestion job %s failed", job.id)
        error = f"internal error ({type(exc).__name__})"
        await _recorded(queue.finish(job.id, worker, "failed", progress, error=error))
        raise
    finally:
        beating.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beating
    await _recorded(queue.finish(job.id, worker, "finished", progress, result=result_of(report)))
    return report


async def _beat(
    queue: JobQueue,
    job_id: str,
    worker: str,
    progress: JobProgress,
    task: asyncio.Task[Any],
    stop: Stop,
) -> None:
    while True:
        await asyncio.sleep(queue.settings.heartbeat_s)
        try:
            verdict = await queue.beat(job_id, worker, progress)
        except Exception as exc:
            # A missed beat is no failure: the job goes on, and only a run of them
            # longer than stale_after_s lets another worker take it.
            log.warning("heartbeat of ingestion job %s not written: %s", job_id, exc)
            continue
        if verdict is not None:
            if verdict == LOST:
                log.warning("ingestion job %s was taken up by another worker: stopping", job_id)
            stop.reason, stop.by_heartbeat = verdict, True
            task.cancel()
            return


async def _recorded(write: Awaitable[None]) -> None:
    """A job's final write; when it fails the row stays running, and the job is claimed
    again once its heartbeat is stale: resumed, not lost."""
    try:
        await write
    except Exception as exc:
        log.error("the state of an ingestion job could not be written: %s", exc)


class Worker:
    """Claims and runs jobs, ``slots`` at a time, until closed."""

    def __init__(
        self,
        queue: JobQueue,
        service: QAService,
        *,
        slots: int,
        role: str = "worker",
        on_report: Callable[[IngestReport, str], None] | None = None,
        blobs: BlobStore | None = None,
        shutdown_s: float = SHUTDOWN_S,
    ) -> None:
        self.queue = queue
        self.shutdown_s = shutdown_s
        self.service = service
        self.slots = max(1, slots)
        self.name = worker_name(role)
        self.on_report = on_report
        self.blobs = blobs
        """Where uploads' bytes are read from; a worker without it fails upload jobs."""
        self._jobs: dict[str, tuple[asyncio.Task[None], Stop]] = {}
        self._wake = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None
        self._closing = False
        self._pruned_at: float | None = None
        queue.listeners.append(self.nudge)

    @property
    def running(self) -> int:
        return len(self._jobs)

    def nudge(self) -> None:
        self._wake.set()

    def start(self, *, until_idle: bool = False) -> asyncio.Task[None]:
        """Run the loop in a task: forever, or until nothing is left to claim or run."""
        self._loop = asyncio.create_task(self.run(until_idle), name=f"rag-worker-{self.name}")
        return self._loop

    async def run(self, until_idle: bool = False) -> None:
        """Claim and start jobs while slots are free, until closed (or idle: nothing
        queued and nothing running anywhere, since a job running elsewhere may be a dead
        worker's, to be taken up here once its heartbeat is stale)."""
        while not self._closing:
            self._wake.clear()
            await self._fill()
            await self._prune()
            if until_idle and not self._jobs and not await self._others_busy():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.queue.settings.poll_s)

    async def _prune(self) -> None:
        """Delete long-ended jobs, once every ``PRUNE_EVERY_S`` per worker: cleaning up
        is nobody's request, and every worker doing it now and then is enough."""
        now = asyncio.get_running_loop().time()
        if self._pruned_at is not None and now - self._pruned_at < PRUNE_EVERY_S:
            return
        self._pruned_at = now
        try:
            gone = await self.queue.prune()
        except Exception as exc:
            # Old rows only take room: the next prune deletes them.
            log.warning("could not delete old ingestion jobs: %s", exc)
            return
        if gone:
            log.info("deleted %d ingestion jobs that ended over [jobs] keep_days ago", gone)

    async def _others_busy(self) -> bool:
        try:
            return await self.queue.busy()
        except Exception as exc:
            log.warning("could not look at the ingestion queue: %s", exc)
            return True  # unknown is not idle: look again at the next poll

    async def _fill(self) -> None:
        while len(self._jobs) < self.slots and not self._closing:
            try:
                job = await self.queue.claim(self.name, running=list(self._jobs))
            except Exception as exc:
                # The database is busy or away: try again at the next poll.
                log.warning("could not claim an ingestion job: %s", exc)
                return
            if job is None:
                return
            log.info(
                "%s took job %s (%s, attempt %d): %s",
                self.name,
                job.id,
                job.kind,
                job.attempts,
                ", ".join(job.paths),
            )
            stop = Stop()
            task = asyncio.create_task(self._execute(job, stop), name=f"rag-job-{job.id}")
            self._jobs[job.id] = (task, stop)
            task.add_done_callback(functools.partial(self._done, job.id))

    def _done(self, job_id: str, _: object) -> None:
        self._jobs.pop(job_id, None)
        self.nudge()  # a slot is free

    async def _execute(self, job: Job, stop: Stop) -> None:
        try:
            report = await run_job(
                self.queue, self.service, job, self.name, stop=stop, blobs=self.blobs
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Recorded on the job's row (and logged with its traceback when unexpected).
            log.info("job %s failed: %s", job.id, getattr(exc, "message", type(exc).__name__))
            return
        log.info("job %s finished: %s", job.id, report.summary())
        if self.on_report is not None:
            self.on_report(report, "upload" if job.kind == "upload" else "job")

    async def cancel_local(self, job_id: str, reason: str) -> bool:
        """Stop the job if this worker runs it, and wait until it has; False otherwise."""
        entry = self._jobs.get(job_id)
        if entry is None:
            return False
        task, stop = entry
        stop.reason = reason
        task.cancel()
        await asyncio.wait({task})
        return True

    async def close(self) -> None:
        """Stop claiming, and hand the running jobs back to the queue."""
        if self.nudge in self.queue.listeners:
            self.queue.listeners.remove(self.nudge)
        self._closing = True
        deadline = asyncio.get_running_loop().time() + self.shutdown_s
        if self._loop is not None:
            # The loop is let finish a claim it is in: cancelled there, a claim the
            # database has committed would never reach a task, and its job would stay
            # running until its heartbeat went stale. A database that hangs is not
            # waited for longer than the shutdown allows (SHUTDOWN_S).
            self.nudge()
            wait = min(self.queue.settings.stale_after_s, self.shutdown_s)
            done, _ = await asyncio.wait({self._loop}, timeout=wait)
            if not done:
                self._loop.cancel()
                await asyncio.wait({self._loop})
        entries = list(self._jobs.items())
        for _, (task, _) in entries:
            task.cancel()
        try:
            async with asyncio.timeout_at(deadline):
                if entries:
                    # A cancelled job hands itself back (run_job), which may wait on
                    # the database too.
                    await asyncio.wait([task for _, (task, _) in entries])
                # A task cancelled before its first step never ran run_job; the release
                # only touches a row still running under this worker's name.
                for job_id, _ in entries:
                    await _recorded(self.queue.release(job_id, self.name))
        except TimeoutError:
            log.warning(
                "running jobs not all handed back within %.0f s: another worker takes "
                "them up once their heartbeat is stale",
                self.shutdown_s,
            )


async def ingest_here(
    service: QAService,
    settings: JobSettings,
    paths: Sequence[Path],
    *,
    role: str,
    display: Progress | None = None,
) -> IngestReport:
    """Ingest ``paths`` in this process as a job of its own (``rag ingest``, ``rag serve``'s
    first ingest): ``JobConflict`` naming the job that holds them elsewhere; the same job
    taken up when it is only queued or its worker died. A run killed outright leaves its
    job to a worker, once stale; an interrupted one (Ctrl-C) ends it cancelled."""
    sessions = service.sessions
    assert sessions is not None  # only a service with a database ingests
    queue, me = JobQueue(sessions, settings), worker_name(role)
    job = await queue.take("cli", paths, me)
    stop = Stop(on_shutdown="cancel", shutdown_reason=f"{role} was interrupted")
    return await run_job(queue, service, job, me, stop=stop, display=display)


async def cancel_job(queue: JobQueue, worker: Worker | None, job_id: str, reason: str) -> None:
    """Stop a job wherever it runs, and return once it has (a delete is coming)."""
    if worker is not None and await worker.cancel_local(job_id, reason):
        return
    await queue.cancelled(job_id, reason)
