"""A rich progress display for the ingestion job: files, chunks, embedded."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from rag.ingest.runner import Progress as IngestProgress


def progress_bar(console: Console, *, enabled: bool) -> Progress:
    """The one progress style of the CLI; it draws on a terminal only."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=console,
        disable=not (enabled and console.is_terminal),
        transient=True,
    )


class RichProgress(IngestProgress):
    """Draws on a terminal only; piped output gets the one-line summary alone."""

    def __init__(self, console: Console, *, enabled: bool) -> None:
        self._bar = progress_bar(console, enabled=enabled)
        self._files = self._bar.add_task("files", total=None, detail="")
        self._chunks = 0
        self._embedded = 0

    def __enter__(self) -> RichProgress:
        self._bar.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._bar.stop()

    def start(self, files: int) -> None:
        self._bar.update(self._files, total=files)

    def file_done(self, path: str, outcome: str, chunks: int) -> None:
        self._chunks += chunks
        self._bar.update(
            self._files,
            advance=1,
            detail=f"{self._chunks} chunks, {self._embedded} embedded  {path}",
        )

    def embedded(self, count: int) -> None:
        self._embedded += count
        self._bar.update(self._files, detail=f"{self._chunks} chunks, {self._embedded} embedded")
