"""An answer on the terminal as it streams, then its sources: ``rag ask`` and ``rag chat``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import click

from rag.cli.common import err, error, literal, note, out, say
from rag.domain import (
    AnswerEvent,
    DeltaEvent,
    DoneEvent,
    ErrorEvent,
    Source,
    SourcesEvent,
    event_payload,
)


async def print_answer(events: AsyncIterator[AnswerEvent], *, as_json: bool) -> DoneEvent | None:
    """Print the stream (``as_json``: only its final event); None when it ended in an
    error, which is printed too."""
    sources: tuple[Source, ...] = ()
    async for event in events:
        if isinstance(event, SourcesEvent):
            sources = event.sources
        elif isinstance(event, DeltaEvent) and not as_json:
            # Pieces carry their own spacing (model tokens split words).
            out.out(event.text, end="", highlight=False)
        elif isinstance(event, ErrorEvent):
            error(event.message)
            return None
        elif isinstance(event, DoneEvent):
            if as_json:
                click.echo(event_payload(event).decode())
            else:
                _print_sources(event, sources)
            if event.degraded:
                note("degraded:", event.degraded)
            return event
    return None


def _print_sources(done: DoneEvent, sources: tuple[Source, ...]) -> None:
    out.print()
    if not done.grounded:
        return
    cited = {c.n for c in done.citations}
    out.print("\n[bold]Sources[/]")
    for source in sources:
        if source.n in cited:
            page = f", page {source.page}" if source.page else ""
            say(f"  [{source.n}] {source.title} — {source.document}{page}")
    latency = done.latency_ms
    err.print(
        literal(
            f"retrieval {latency.retrieve:.0f} ms, first token {latency.first_token or 0:.0f} ms,"
            f" total {latency.total:.0f} ms",
            style="dim",
        )
    )
