"""Progress displays: ingestion (files, chunks, embedded) and ``rag eval``'s two stages.

They draw on a terminal only; piped output gets the commands' summaries alone.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from rag.evaluate.results import QuestionResult
from rag.ports import Progress as IngestProgress


def progress_bar(console: Console, *, enabled: bool) -> Progress:
    """The one progress style of the CLI."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        # The detail is a file name or a question id: data, so never read as markup.
        TextColumn("{task.fields[detail]}", markup=False),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not (enabled and console.is_terminal),
        transient=True,
    )


class _Bar(IngestProgress):
    """A bar over the files of an ingestion, drawn while the ``with`` block runs."""

    def __init__(self, console: Console, *, enabled: bool, files: str) -> None:
        self.bar = progress_bar(console, enabled=enabled)
        self.files = self.bar.add_task(files, total=None, detail="")

    def __enter__(self) -> Self:
        self.bar.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.bar.stop()

    def start(self, files: int) -> None:
        self.bar.update(self.files, total=files)


class RichProgress(_Bar):
    """Files settled out of the total; chunks written, texts embedded and pages read by
    OCR so far.

    The runner reports a document's embedded texts just before the document itself,
    so both counts move together and ``embedded`` never runs ahead of ``chunks``.
    """

    def __init__(self, console: Console, *, enabled: bool) -> None:
        super().__init__(console, enabled=enabled, files="files")
        self.chunks = 0
        self.embedded_texts = 0
        self.recognised_pages = 0

    def file_done(self, path: str, outcome: str, chunks: int) -> None:
        self.chunks += chunks
        detail = f"{self.chunks} chunks, {self.embedded_texts} embedded"
        if self.recognised_pages:
            detail += f", {self.recognised_pages} pages by OCR"
        self.bar.update(self.files, advance=1, detail=f"{detail}  {path}")

    def embedded(self, count: int) -> None:
        self.embedded_texts += count

    def recognised(self, pages: int) -> None:
        self.recognised_pages += pages


class EvalProgress(_Bar):
    """Ingestion, then questions, in one display (rich allows one live display)."""

    def __init__(self, console: Console, *, enabled: bool) -> None:
        super().__init__(console, enabled=enabled, files="ingest")
        self.questions = self.bar.add_task("questions", total=None, detail="", visible=False)

    def file_done(self, path: str, outcome: str, chunks: int) -> None:
        self.bar.update(self.files, advance=1, detail=path)

    def begin_questions(self, total: int) -> None:
        self.bar.update(self.files, visible=False)
        self.bar.update(self.questions, total=total, visible=True)

    def tick(self, result: QuestionResult) -> None:
        self.bar.update(self.questions, advance=1, detail=result.id)
