"""``rag search``: the ranked chunks a question retrieves, with their scores."""

from __future__ import annotations

import json

import click
from rich.table import Table

from rag.cli import common
from rag.domain import Hit


@click.command()
@click.argument("query")
@click.option("--k", "k", type=int, default=10, show_default=True, help="How many hits.")
@click.option("--json", "as_json", is_flag=True, help="Print the hits as JSON.")
@click.pass_context
def search(ctx: click.Context, query: str, k: int, as_json: bool) -> None:
    """Show the ranked chunks a question retrieves, with their scores.

    \b
    Example:
      rag search "pdf timeout" --k 5
    """
    from rag.service import open_service

    settings = common.settings(ctx)

    async def go() -> list[Hit]:
        async with open_service(settings) as service:
            return await service.search(query, k)

    hits = common.run(go)
    if as_json:
        rows = [
            {
                "rank": i,
                "chunk_id": h.chunk_id,
                "document": h.source,
                "title": h.title,
                "page": h.page_start,
                "score": h.score,
                "relevance": h.relevance,
                "dense_rank": h.dense_rank,
                "keyword_rank": h.keyword_rank,
                "heading_path": list(h.heading_path),
                "snippet": h.text[:300],
            }
            for i, h in enumerate(hits, start=1)
        ]
        common.out.out(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    table = Table("#", "score", "cosine", "document", "page", "text")
    for i, h in enumerate(hits, start=1):
        table.add_row(
            str(i),
            f"{h.score:.4f}",
            f"{h.relevance:.3f}",
            common.literal(h.source),
            str(h.page_start or ""),
            common.literal(" ".join(h.text.split())[:90]),
        )
    common.out.print(table)
