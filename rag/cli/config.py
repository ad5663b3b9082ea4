"""``rag config`` and ``rag db``: the effective settings, and database maintenance."""

from __future__ import annotations

import json

import click

from rag.cli import common
from rag.config import effective
from rag.redact import masked_url


@click.command("config")
@click.pass_context
def show_config(ctx: click.Context) -> None:
    """Print the effective settings (file + environment), secrets masked."""
    common.out.print_json(json.dumps(effective(common.settings(ctx))))


@click.group()
def db() -> None:
    """Database maintenance."""


@db.command("upgrade")
@click.pass_context
def db_upgrade(ctx: click.Context) -> None:
    """Migrate the database to the latest schema."""
    from rag.db.engine import upgrade

    settings = common.settings(ctx)
    common.run(lambda: upgrade(settings.database_url))
    common.say(f"database at head: {masked_url(settings.database_url)}")
