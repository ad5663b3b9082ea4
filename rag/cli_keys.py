"""``rag keys``: create, list and revoke the API keys of the HTTP API.

Reads and writes the database only: no model is loaded, no credentials are needed.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TypeVar

import click
from rich.console import Console
from rich.table import Table

from rag.config import Settings
from rag.errors import RagError
from rag.keys import KeyInfo, KeyStore

T = TypeVar("T")
out = Console()
err = Console(stderr=True)


def _with_store(ctx: click.Context, work: Callable[[KeyStore], Awaitable[T]]) -> T:
    settings = ctx.find_root().obj
    assert isinstance(settings, Settings)

    async def go() -> T:
        from rag.db.engine import create_engine, session_factory, upgrade

        await upgrade(settings.database_url)
        engine = create_engine(settings.database_url)
        try:
            return await work(KeyStore(session_factory(engine)))
        finally:
            await engine.dispose()

    try:
        return asyncio.run(go())
    except RagError as exc:
        err.print(f"[bold red]error:[/] {exc.message}", highlight=False)
        sys.exit(2 if exc.status_code in (400, 404) else 1)


def _when(moment: datetime | None) -> str:
    return moment.isoformat(sep=" ", timespec="seconds") + " UTC" if moment else ""


def _as_dict(key: KeyInfo) -> dict[str, object]:
    return {
        "id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "created_at": key.created_at.isoformat() + "Z",
        "last_used_at": key.last_used_at.isoformat() + "Z" if key.last_used_at else None,
        "revoked": key.revoked,
    }


@click.group("keys")
def keys() -> None:
    """API keys for the HTTP API (`Authorization: Bearer <key>`).

    \b
    Examples:
      rag keys create ci-bot        # prints the key once: store it now
      rag keys list
      rag keys revoke 3
    """


@keys.command("create")
@click.argument("name")
@click.pass_context
def create(ctx: click.Context, name: str) -> None:
    """Create a key named NAME and print it (the only time it is shown)."""
    info, key = _with_store(ctx, lambda store: store.create(name))
    # The key alone on stdout, so `KEY=$(rag keys create bot)` works; the rest to stderr.
    click.echo(key)
    err.print(
        f"key {info.id} ({info.name}) created. It is shown only now: only its hash is stored.",
        highlight=False,
    )


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the keys as JSON.")
@click.pass_context
def list_keys(ctx: click.Context, as_json: bool) -> None:
    """List keys: id, name, prefix, created, last used, revoked."""
    found = _with_store(ctx, lambda store: store.list())
    if as_json:
        out.out(json.dumps([_as_dict(key) for key in found], indent=2))
        return
    if not found:
        err.print("no API keys: create one with `rag keys create NAME`")
        return
    table = Table("id", "name", "prefix", "created", "last used", "revoked")
    for key in found:
        table.add_row(
            str(key.id),
            key.name,
            key.prefix + "…",
            _when(key.created_at),
            _when(key.last_used_at),
            _when(key.revoked_at),
        )
    out.print(table)


@keys.command("revoke")
@click.argument("key_id", metavar="ID", type=int)
@click.pass_context
def revoke(ctx: click.Context, key_id: int) -> None:
    """Revoke key ID: requests with it are refused from now on."""
    info = _with_store(ctx, lambda store: store.revoke(key_id))
    click.echo(f"key {info.id} ({info.name}) revoked")
