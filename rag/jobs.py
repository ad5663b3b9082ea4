"""Ingestion jobs started over HTTP, run as tasks in the app process.

A job is ``RagService.ingest`` over one server-side folder (``POST /v1/ingest``) or
over one uploaded file (``POST /v1/documents``), with its progress kept in memory for
``GET /v1/jobs/{id}``. The result is also written by the ingest runner to the
``ingest_runs`` table (``run_id`` in the job links the two).

Jobs are ``queued`` until one of ``max_concurrent`` slots is free, then ``running``: the
requests that start them never wait for them, and a slow file holds one slot, not the
process. Two jobs never run over the same target (folder or file) at once: a second
folder job is refused with the id of the first, a second job for an upload is the
first one.

Restarts: job status lives in memory, so a restart forgets jobs in flight (their run
is marked ``interrupted`` in ``ingest_runs`` by the next run). Nothing is lost:
ingestion is resumable, starting a folder job again skips every document already done,
and the web app queues the uploads still ``pending`` again at start
(``rag.web.upload_store``).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from rag.domain import IngestReport
from rag.errors import RagError
from rag.ports import Progress

log = logging.getLogger(__name__)

KEEP_FINISHED = 100
"""Finished jobs remembered for ``GET /v1/jobs/{id}``; older ones are forgotten."""

JobState = Literal["queued", "running", "finished", "failed", "cancelled"]
JobKind = Literal["folder", "upload"]


class JobConflict(RagError):
    status_code = 409
    code = "job_running"

    def __init__(self, message: str, job_id: str) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.headers = {"Location": f"/v1/jobs/{job_id}"}  # where to follow the running one


@dataclass
class Job:
    id: str
    folder: str
    kind: JobKind = "folder"
    document_id: str | None = None
    """The uploaded document an upload job ingests."""
    state: JobState = "queued"
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    started_at: datetime | None = None
    finished_at: datetime | None = None
    files_total: int | None = None
    """Unknown until the folder has been walked."""
    files_done: int = 0
    chunks: int = 0
    embedded: int = 0
    recognised: int = 0
    """Pages read by OCR so far."""
    current: str | None = None
    report: IngestReport | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        result = None
        if self.report is not None:
            result = {
                "run_id": self.report.run_id,
                **self.report.counts(),
                "seconds": round(self.report.seconds, 3),
                "neurons": self.report.neurons,
                "usd": self.report.usd,
                "problems": self.report.problems,
            }
        return {
            "id": self.id,
            "kind": self.kind,
            "folder": self.folder,
            "document_id": self.document_id,
            "state": self.state,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "progress": {
                "files_done": self.files_done,
                "files_total": self.files_total,
                "chunks": self.chunks,
                "embedded": self.embedded,
                "recognised": self.recognised,
                "current": self.current,
            },
            "result": result,
            "error": self.error,
        }


class _JobProgress(Progress):
    def __init__(self, job: Job) -> None:
        self.job = job

    def start(self, files: int) -> None:
        self.job.files_total = files

    def file_done(self, path: str, outcome: str, chunks: int) -> None:
        self.job.files_done += 1
        self.job.chunks += chunks
        self.job.current = path

    def embedded(self, count: int) -> None:
        self.job.embedded += count

    def recognised(self, pages: int) -> None:
        self.job.recognised += pages


Ingest = Callable[[list[Path], Progress], Any]
"""``RagService.ingest``: an awaitable ``IngestReport`` for paths and a progress sink."""

Work = Callable[[Progress], Awaitable[IngestReport]]
"""What an upload job runs: the ingest of its file, and what follows it."""

LIVE: tuple[JobState, ...] = ("queued", "running")


class JobRunner:
    """Queues, runs, tracks and (at shutdown) cancels ingestion jobs, a few at a time."""

    def __init__(
        self,
        on_report: Callable[[IngestReport, str], None] | None = None,
        max_concurrent: int = 2,
    ) -> None:
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._holders: dict[str, str] = {}
        self._slots = asyncio.Semaphore(max(1, max_concurrent))
        self._on_report = on_report

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def jobs(self) -> list[Job]:
        return list(reversed(self._jobs.values()))

    @property
    def running(self) -> int:
        return sum(1 for job in self._jobs.values() if job.state == "running")

    def start(self, folder: Path, ingest: Ingest) -> Job:
        """A new job over ``folder``, or ``JobConflict`` if one is already queued or running."""
        key = _key(folder)
        # Checked and claimed without an await in between: two requests in the same
        # instant cannot both pass.
        if (holder := self._holders.get(key)) is not None:
            raise JobConflict(
                f"an ingestion job over {folder} is already running: {holder}", holder
            )
        job = Job(id=uuid.uuid4().hex, folder=str(folder))
        return self._launch(job, key, lambda progress: ingest([folder], progress), "job")

    def start_upload(self, path: Path, document_id: str, work: Work) -> Job:
        """The job that ingests the uploaded ``path``: a new one, or the live one."""
        key = _key(path)
        if (holder := self._holders.get(key)) is not None:
            return self._jobs[holder]
        job = Job(id=uuid.uuid4().hex, folder=str(path.parent), kind="upload")
        job.document_id = document_id
        return self._launch(job, key, work, "upload")

    def live_for(self, document_id: str) -> Job | None:
        """The queued or running job of an uploaded document, if any."""
        return next(
            (j for j in self._jobs.values() if j.document_id == document_id and j.state in LIVE),
            None,
        )

    async def cancel_for(self, document_id: str, reason: str) -> None:
        """Stop the document's job, if any, and wait until it has (a delete is coming)."""
        job = self.live_for(document_id)
        task = self._tasks.get(job.id) if job is not None else None
        if job is None or task is None:
            return
        job.error = reason
        task.cancel()
        await asyncio.wait({task})

    def _launch(self, job: Job, key: str, work: Work, trigger: str) -> Job:
        self._jobs[job.id] = job
        self._holders[key] = job.id
        self._forget_old()
        self._tasks[job.id] = asyncio.create_task(
            self._run(job, key, work, trigger), name=f"rag-ingest-{job.id}"
        )
        return job

    async def _run(self, job: Job, key: str, work: Work, trigger: str) -> None:
        try:
            async with self._slots:
                job.state, job.started_at = "running", datetime.now(UTC)
                report = await work(_JobProgress(job))
            job.report, job.state = report, "finished"
            if self._on_report is not None:
                self._on_report(report, trigger)
        except asyncio.CancelledError:
            job.state = "cancelled"
            job.error = job.error or "the server stopped during the job"
            raise
        except RagError as exc:
            job.state, job.error = "failed", exc.message
        except Exception as exc:
            log.exception("ingestion job %s failed", job.id)
            job.state, job.error = "failed", f"internal error ({type(exc).__name__})"
        finally:
            job.finished_at = datetime.now(UTC)
            job.current = None
            self._holders.pop(key, None)
            self._tasks.pop(job.id, None)

    def _forget_old(self) -> None:
        finished = [j.id for j in self._jobs.values() if j.state not in LIVE]
        for job_id in finished[: max(len(finished) - KEEP_FINISHED, 0)]:
            del self._jobs[job_id]

    async def close(self) -> None:
        """Cancel queued and running jobs (ingestion resumes where they stopped next time)."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)


def _key(folder: Path) -> str:
    return str(folder.expanduser().resolve())
