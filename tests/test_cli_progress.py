"""The ingest progress display: its counts agree, it estimates the time left, and file
names show as they are. Fed a runner-like sequence of events; no terminal needed."""

from __future__ import annotations

import io

from rich.console import Console
from rich.progress import TimeRemainingColumn

from rag.cli.progress import RichProgress


def rendered(progress: RichProgress) -> str:
    buffer = io.StringIO()
    Console(file=buffer, width=160).print(progress.bar.make_tasks_table(progress.bar.tasks))
    return buffer.getvalue()


def test_counts_move_with_the_files_and_the_time_left_is_shown() -> None:
    progress = RichProgress(Console(file=io.StringIO()), enabled=True)
    seen: list[tuple[int, int]] = []

    def done(path: str, outcome: str, chunks: int, embedded: int = 0) -> None:
        # As the runner does: a written document's embedded texts, then the document.
        if outcome in ("new", "updated"):
            progress.embedded(embedded)
        progress.file_done(path, outcome, chunks)
        seen.append((progress.chunks, progress.embedded_texts))

    progress.start(5)
    done("same.md", "unchanged", 0)
    done("[draft] a.md", "new", 3, embedded=3)
    done("b.md", "updated", 4, embedded=1)  # three of its chunks kept their vectors
    done("scan.pdf", "failed", 0)
    done("c.md", "new", 2, embedded=1)  # one text is also in a.md: embedded once

    assert seen == [(0, 0), (3, 3), (7, 4), (7, 4), (9, 5)]
    assert all(embedded <= chunks for chunks, embedded in seen)
    [task] = progress.bar.tasks
    assert (task.completed, task.total) == (5, 5)
    table = rendered(progress)
    assert "5/5" in table
    assert "9 chunks, 5 embedded  c.md" in table
    assert any(isinstance(column, TimeRemainingColumn) for column in progress.bar.columns)


def test_file_names_are_not_markup() -> None:
    progress = RichProgress(Console(file=io.StringIO()), enabled=True)
    progress.start(1)
    progress.embedded(2)
    progress.file_done("[bold]notes[/] :memo:.md", "new", 2)
    assert "2 chunks, 2 embedded  [bold]notes[/] :memo:.md" in rendered(progress)
