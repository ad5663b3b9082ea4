"""``rag keys``: create, list and revoke the API keys of the HTTP API.

Reads and writes the database only: no model is loaded, no credentials are needed.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TypeVar

import click
from rich.table import Table

from rag.cli import common
from rag.config import Settings
from rag.keys import KeyInfo, KeyStore

T = TypeVar("T")


async def with_key_store(settings: Settings, work: Callable[[KeyStore], Awaitable[T]]) -> T:
    """``work`` done on the keys of a migrated database, closed after."""
    from rag.db.engine import create_engine, session_factory, upgrade

    await upgrade(settings.database_url)
    engine = create_engine(settings.database_url)
    try:
        return await work(KeyStore(session_factory(engine)))
    finally:
        await engine.dispose()


def _with_store(ctx: click.Context, work: Callable[[KeyStore], Awaitable[T]]) -> T:
    settings = common.settings(ctx)
    return common.run(lambda: with_key_store(settings, work))


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
    common.say(
        f"key {info.id} ({info.name}) created. It is shown only now: only its hash is stored.",
        console=common.err,
    )


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the keys as JSON.")
@click.pass_context
def list_keys(ctx: click.Context, as_json: bool) -> None:
    """List keys: id, name, prefix, created, last used, revoked."""
    found = _with_store(ctx, lambda store: store.list())
    if as_json:
        common.out.out(json.dumps([_as_dict(key) for key in found], indent=2))
        return
    if not found:
        common.say("no API keys: create one with `rag keys create NAME`", console=common.err)
        return
    table = Table("id", "name", "prefix", "created", "last used", "revoked")
    for key in found:
        table.add_row(
            str(key.id),
            common.literal(key.name),
            key.prefix + "…",
            _when(key.created_at),
            _when(key.last_used_at),
            _when(key.revoked_at),
        )
    common.out.print(table)


@keys.command("revoke")
@click.argument("key_id", metavar="ID", type=int)
@click.pass_context
def revoke(ctx: click.Context, key_id: int) -> None:
    """Revoke key ID: requests with it are refused from now on."""
    info = _with_store(ctx, lambda store: store.revoke(key_id))
    click.echo(f"key {info.id} ({info.name}) revoked")
