"""The progress display of ``rag eval``: ingestion, then questions, on a terminal only."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console

from rag.cli_progress import progress_bar
from rag.evaluate.results import QuestionResult
from rag.ingest.runner import Progress as IngestProgress


class EvalProgress(IngestProgress):
    """One rich progress display for both stages (rich allows one live display)."""

    def __init__(self, console: Console, *, enabled: bool) -> None:
        self.bar = progress_bar(console, enabled=enabled)
        self.files = self.bar.add_task("ingest", total=None, detail="")
        self.questions = self.bar.add_task("questions", total=None, detail="", visible=False)

    def __enter__(self) -> EvalProgress:
        self.bar.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.bar.stop()

    def start(self, files: int) -> None:
        self.bar.update(self.files, total=files)

    def file_done(self, path: str, outcome: str, chunks: int) -> None:
        self.bar.update(self.files, advance=1, detail=path)

    def begin_questions(self, total: int) -> None:
        self.bar.update(self.files, visible=False)
        self.bar.update(self.questions, total=total, visible=True)

    def tick(self, result: QuestionResult) -> None:
        self.bar.update(self.questions, advance=1, detail=result.id)
