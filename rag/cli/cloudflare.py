"""``rag vectorize create|info`` and ``rag audit``: the Vectorize index from the shell.

These commands talk to Vectorize and SQLite only, never to the models, so they work
before the first ingest and whatever ``backend`` is selected.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import click
import httpx

from rag.backends.cloudflare.vectorize import IndexConfig, VectorizeIndex
from rag.backends.cloudflare.vectorize_mutations import MutationsPending
from rag.cli import common
from rag.cli.progress import progress_bar
from rag.config import Settings
from rag.errors import ConfigError, NotFound
from rag.ports import VectorIndex

TRANSPORT: httpx.AsyncBaseTransport | None = None
"""The transport the Cloudflare client uses here: None is the network; tests set the fake."""


def embed_dimension(settings: Settings) -> int:
    """The configured embedder's output size, known before any text is embedded."""
    from rag.backends.cloudflare.workers_ai import KNOWN_DIMENSIONS

    model = settings.cloudflare.embed_model
    if model not in KNOWN_DIMENSIONS:
        raise ConfigError(
            f"the dimension of {model!r} is not known here: pass --dimension explicitly"
        )
    return KNOWN_DIMENSIONS[model]


@asynccontextmanager
async def open_vectorize(
    settings: Settings, dimension: int | None = None
) -> AsyncIterator[VectorizeIndex]:
    """The configured index over a migrated database; closes both on exit."""
    from rag.backends.cloudflare.client import CloudflareClient
    from rag.db.engine import create_engine, session_factory, upgrade

    client = CloudflareClient.from_settings(settings, transport=TRANSPORT)
    await upgrade(settings.database_url)
    engine = create_engine(settings.database_url)
    try:
        yield VectorizeIndex(
            client,
            settings.cloudflare.index_name,
            embed_dimension(settings) if dimension is None else dimension,
            session_factory(engine),
            auto_create=False,
        )
    finally:
        await client.aclose()
        await engine.dispose()


async def wait_for_index(index: VectorIndex, timeout_s: float, *, quiet: bool) -> str:
    """Block until the index has processed every recorded write, drawing progress.

    Returns "" when done, or the reason it stopped waiting, so a caller can still print
    what it did before it reports the wait as failed.
    """
    if not isinstance(index, VectorizeIndex):
        raise ConfigError("--wait needs the cloudflare backend's Vectorize index")
    wait = index.wait_for_mutations
    bar = progress_bar(common.err, enabled=not quiet)
    task = bar.add_task("Vectorize writes", total=None, detail="")
    try:
        with bar:
            total = await wait(
                timeout_s, lambda done, of: bar.update(task, completed=done, total=of)
            )
    except MutationsPending as exc:
        return exc.message
    if not quiet:
        common.say(f"Vectorize has processed all {total} pending writes", console=common.err)
    return ""


async def _described(index: VectorizeIndex) -> IndexConfig:
    config = await index.describe()
    if config is None:
        raise NotFound(f"Vectorize index {index.name!r} does not exist: run `rag vectorize create`")
    return config


@click.group()
def vectorize() -> None:
    """The Vectorize index of the cloudflare backend ([cloudflare] index_name).

    \b
    Examples:
      rag vectorize create        # 768-d cosine for @cf/baai/bge-base-en-v1.5
      rag vectorize info --json
    """


@vectorize.command("create")
@click.option("--dimension", type=int, default=None, help="Default: the embedding model's.")
@click.option(
    "--metric",
    type=click.Choice(["cosine", "euclidean", "dot-product"]),
    default="cosine",
    show_default=True,
)
@click.option("--timeout", type=float, default=120.0, show_default=True, help="Seconds to wait.")
@click.pass_context
def create(ctx: click.Context, dimension: int | None, metric: Any, timeout: float) -> None:
    """Create the index and its metadata indexes (idempotent).

    An existing index of another dimension or metric is refused and left untouched.
    Waits until the metadata indexes are processed, since Vectorize only indexes vectors
    written after them.
    """
    settings = common.settings(ctx)

    async def go() -> tuple[bool, int, str]:
        async with open_vectorize(settings, dimension) as index:
            created = await index.create(metric=metric)
            problem = await wait_for_index(index, timeout, quiet=True)
            return created, index.dimension, problem

    created, dims, problem = common.run(go)
    name = settings.cloudflare.index_name
    verb = "created" if created else "already exists and fits:"
    common.say(f"Vectorize index {name!r} {verb} {dims}-d {metric}")
    if problem:
        common.note("warning:", problem)


@vectorize.command("info")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def info(ctx: click.Context, as_json: bool) -> None:
    """Show the index: dimensions, metric, vector count, processing state, pending writes."""
    settings = common.settings(ctx)

    async def go() -> dict[str, Any]:
        # 0: only reading, so the index's own dimension is all that matters.
        async with open_vectorize(settings, 0) as index:
            config = await _described(index)
            state = await index.info()
            return {
                "name": config.name,
                "dimensions": config.dimensions,
                "metric": config.metric,
                "created_on": config.created_on,
                "vector_count": state.vector_count,
                "processed_up_to_mutation": state.processed_up_to_mutation,
                "processed_up_to_datetime": state.processed_up_to_datetime,
                "metadata_indexes": await index.metadata_indexes(),
                "pending_writes": len(await index.pending_mutations()),
            }

    data = common.run(go)
    if as_json:
        common.out.out(json.dumps(data, indent=2))
        return
    for key, value in data.items():
        common.say(f"{key:>25}  {value}")


@click.command()
@click.option("--repair", is_flag=True, help="Rewrite missing and stale vectors, delete orphans.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--sample", type=int, default=200, show_default=True, help="Ids compared by value; -1: all."
)
@click.option(
    "--model", default=None, help="Vectors of this model id (default: [cloudflare] embed_model)."
)
@click.option(
    "--timeout",
    type=float,
    default=600.0,
    show_default=True,
    help="Seconds to wait for queued writes.",
)
@click.pass_context
def audit(
    ctx: click.Context, repair: bool, as_json: bool, sample: int, model: str | None, timeout: float
) -> None:
    """Compare Vectorize with SQLite: missing, orphaned and stale vectors.

    Queued writes are waited for first, so lag is not reported as drift. Exits 1 when
    drift remains.

    \b
    Examples:
      rag audit --sample 500
      rag audit --repair --json
    """
    from rag.backends.cloudflare import audit as auditing

    settings = common.settings(ctx)
    model_id = model or settings.cloudflare.embed_model

    async def go() -> dict[str, Any]:
        async with open_vectorize(settings) as index:
            await _described(index)
            problem = await wait_for_index(index, timeout, quiet=as_json)
            report = await auditing.audit(index.sessions, index, model_id, sample)
            result: dict[str, Any] = {"report": report, "problem": problem}
            if repair and not report.clean:
                result["repaired"] = await auditing.repair(index.sessions, index, report)
                result["problem"] = await wait_for_index(index, timeout, quiet=as_json)
                result["after"] = await auditing.audit(index.sessions, index, model_id, sample)
            return result

    result = common.run(go)
    final = result.get("after", result["report"])
    if as_json:
        data = {**result["report"].to_dict(), "problem": result["problem"]}
        if "after" in result:
            data.update(repaired=result["repaired"], after=result["after"].to_dict())
        common.out.out(json.dumps(data, indent=2))
    else:
        _print_report(result["report"])
        if "after" in result:
            common.say(f"repaired {result['repaired']} vectors; audit again:")
            _print_report(result["after"])
        if result["problem"]:
            common.note("warning:", result["problem"])
    if not final.clean:
        sys.exit(common.FAILURE)


def _print_report(report: Any) -> None:
    common.say(report.summary())
    for kind in ("missing", "orphaned", "stale"):
        ids: list[str] = getattr(report, kind)
        if ids:
            more = f" (+{len(ids) - 10} more)" if len(ids) > 10 else ""
            common.say(f"  {kind}: {', '.join(ids[:10])}{more}")
