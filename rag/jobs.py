"""Ingestion jobs started over HTTP (``POST /v1/ingest``), run as tasks in the app process.

A job is ``RagService.ingest`` over one server-side folder, with its progress kept in
memory for ``GET /v1/jobs/{id}``. The result is also written by the ingest runner to
the ``ingest_runs`` table (``run_id`` in the job links the two).

Two jobs never run over the same folder at once: the second is refused with the id of
the running one. Uploads into a folder and jobs over it take turns (a per-folder lock),
so a document is never written by two ingests at the same time.

Restarts: job status lives in memory, so a restart forgets jobs in flight (their run
is marked ``interrupted`` in ``ingest_runs`` by the next run). Nothing is lost:
ingestion is resumable, and starting the job again skips every document already done.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
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

JobState = Literal["running", "finished", "failed", "cancelled"]


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
    state: JobState = "running"
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    finished_at: datetime | None = None
    files_total: int | None = None
    """Unknown until the folder has been walked."""
    files_done: int = 0
    chunks: int = 0
    embedded: int = 0
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
            "folder": self.folder,
            "state": self.state,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "progress": {
                "files_done": self.files_done,
                "files_total": self.files_total,
                "chunks": self.chunks,
                "embedded": self.embedded,
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


Ingest = Callable[[list[Path], Progress], Any]
"""``RagService.ingest``: an awaitable ``IngestReport`` for paths and a progress sink."""


class JobRunner:
    """Starts, tracks and (at shutdown) cancels ingestion jobs; one lock per folder."""

    def __init__(self, on_report: Callable[[IngestReport, str], None] | None = None) -> None:
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._holders: dict[str, str] = {}
        self._on_report = on_report

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def jobs(self) -> list[Job]:
        return list(reversed(self._jobs.values()))

    @property
    def running(self) -> int:
        return sum(1 for job in self._jobs.values() if job.state == "running")

    def start(self, folder: Path, ingest: Ingest) -> Job:
        """A new running job over ``folder``, or ``JobConflict`` if one already runs there."""
        key = _key(folder)
        # Checked and claimed without an await in between: two requests in the same
        # instant cannot both pass.
        if (holder := self._holders.get(key)) is not None:
            raise JobConflict(
                f"an ingestion job over {folder} is already running: {holder}", holder
            )
        job = Job(id=uuid.uuid4().hex, folder=str(folder))
        self._jobs[job.id] = job
        self._holders[key] = job.id
        self._forget_old()
        self._tasks[job.id] = asyncio.create_task(
            self._run(job, key, folder, ingest), name=f"rag-ingest-{job.id}"
        )
        return job

    @asynccontextmanager
    async def folder(self, folder: Path) -> AsyncIterator[None]:
        """Hold ``folder`` for an ingest outside the jobs (an upload); waits for a job."""
        key = _key(folder)
        async with self._locks.setdefault(key, asyncio.Lock()):
            yield

    async def _run(self, job: Job, key: str, folder: Path, ingest: Ingest) -> None:
        try:
            async with self._locks.setdefault(key, asyncio.Lock()):
                report: IngestReport = await ingest([folder], _JobProgress(job))
            job.report, job.state = report, "finished"
            if self._on_report is not None:
                self._on_report(report, "job")
        except asyncio.CancelledError:
            job.state, job.error = "cancelled", "the server stopped during the job"
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
        finished = [j.id for j in self._jobs.values() if j.state != "running"]
        for job_id in finished[: max(len(finished) - KEEP_FINISHED, 0)]:
            del self._jobs[job_id]

    async def close(self) -> None:
        """Cancel running jobs (ingestion resumes where they stopped on the next run)."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)


def _key(folder: Path) -> str:
    return str(folder.expanduser().resolve())
