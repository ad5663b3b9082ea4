"""``rag search``: the ranked chunks a question retrieves, with every score that placed them."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.table import Table

from rag.cli import common
from rag.domain import Hit, SearchResult


@click.command()
@click.argument("query")
@click.option("--k", "k", type=int, default=10, show_default=True, help="How many hits.")
@click.option("--json", "as_json", is_flag=True, help="Print the hits as JSON.")
@click.pass_context
def search(ctx: click.Context, query: str, k: int, as_json: bool) -> None:
    """Show the ranked chunks a question retrieves: the fused score that orders them,
    their cosine, and their ranks in the dense and keyword (BM25) lists ("-": absent).

    \b
    Example:
      rag search "pdf timeout" --k 5
    """
    from rag.service import open_service

    settings = common.settings(ctx)

    async def go() -> SearchResult:
        async with open_service(settings) as service:
            return await service.search_result(query, k)

    found = common.run(go)
    hits = found.hits
    if found.degraded:
        # On stderr, so --json output stays one JSON document.
        common.note("degraded:", f"keyword-ranked only. {found.degraded}")
    if as_json:
        rows = [_row(rank, hit) for rank, hit in enumerate(hits, start=1)]
        common.out.out(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    table = Table()
    for figure in ("#", "score", "cosine", "dense", "keyword"):
        table.add_column(figure, justify="right")
    table.add_column("document", overflow="fold")
    table.add_column("page", justify="right")
    table.add_column("text")
    for rank, hit in enumerate(hits, start=1):
        table.add_row(
            str(rank),
            f"{hit.score:.4f}",
            _figure(hit.dense_score, "{:.3f}"),
            _figure(hit.dense_rank, "{}"),
            _figure(hit.keyword_rank, "{}"),
            common.literal(hit.source),
            str(hit.page_start or ""),
            common.literal(" ".join(hit.text.split())[:90]),
        )
    common.out.print(table)


def _figure(value: float | None, form: str) -> str:
    return "-" if value is None else form.format(value)


def _row(rank: int, hit: Hit) -> dict[str, Any]:
    return {
        "rank": rank,
        "chunk_id": hit.chunk_id,
        "document": hit.source,
        "title": hit.title,
        "page": hit.page_start,
        "score": hit.score,
        "relevance": hit.relevance,
        "dense_score": hit.dense_score,
        "dense_rank": hit.dense_rank,
        "keyword_score": hit.keyword_score,
        "keyword_rank": hit.keyword_rank,
        "heading_path": list(hit.heading_path),
        "recognised": hit.recognised,
        "confidence": hit.confidence,
        "snippet": hit.text[:300],
    }
