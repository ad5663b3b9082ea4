"""``rag ask``: one question, its answer streamed, then its sources."""

from __future__ import annotations

import sys

import click

from rag.cli import common
from rag.cli.streaming import print_answer


@click.command()
@click.argument("question")
@click.option("--top-k", type=int, default=None, help="How many sources to use.")
@click.option("--json", "as_json", is_flag=True, help="Print only the final event as JSON.")
@click.pass_context
def ask(ctx: click.Context, question: str, top_k: int | None, as_json: bool) -> None:
    """Ask a question; the answer streams, then its sources are listed.

    \b
    Example:
      rag ask "What does the evidence gate do?"
    """
    from rag.service import open_service

    settings = common.settings(ctx)

    async def go() -> bool:
        async with open_service(settings) as service:
            if await common.index_is_empty(service):
                common.note("the index is empty:", "run `rag ingest corpus/` first")
            return await print_answer(service.ask(question, top_k), as_json=as_json) is not None

    if not common.run(go):
        sys.exit(common.FAILURE)
