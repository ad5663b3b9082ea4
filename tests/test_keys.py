"""API keys: hashed at rest, shown once, revocable; ``rag keys`` on the command line."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from rag.cli import main
from rag.config import Settings
from rag.db.engine import create_engine, session_factory, upgrade
from rag.errors import InputError, NotFound
from rag.keys import PREFIX, KeyStore


@pytest.fixture
async def keys(settings: Settings) -> AsyncIterator[KeyStore]:
    await upgrade(settings.database_url)
    engine = create_engine(settings.database_url)
    yield KeyStore(session_factory(engine))
    await engine.dispose()


async def stored_rows(settings: Settings) -> list[tuple[object, ...]]:
    engine = create_engine(settings.database_url)
    async with engine.connect() as connection:
        rows = (await connection.execute(text("SELECT * FROM api_keys"))).all()
    await engine.dispose()
    return [tuple(row) for row in rows]


async def test_only_the_hash_is_stored(keys: KeyStore, settings: Settings) -> None:
    info, key = await keys.create("ci-bot")
    assert key.startswith(PREFIX) and len(key) >= len(PREFIX) + 43  # 32 random bytes
    assert info.name == "ci-bot" and info.prefix == key[:8] and not info.revoked
    [row] = await stored_rows(settings)
    assert key not in repr(row)
    assert hashlib.sha256(key.encode()).hexdigest() in row
    other = (await keys.create("other"))[1]
    assert other != key


async def test_verify_revoke_and_last_used(keys: KeyStore) -> None:
    info, key = await keys.create("ops")
    assert await keys.verify(key) == info.id
    assert await keys.verify(key + "x") is None
    assert await keys.verify("") is None
    [listed] = await keys.list()
    assert listed.last_used_at is not None
    revoked = await keys.revoke(info.id)
    assert revoked.revoked and await keys.verify(key) is None
    again = await keys.revoke(info.id)
    assert again.revoked_at == revoked.revoked_at
    assert await keys.active_count() == 0
    with pytest.raises(NotFound):
        await keys.revoke(999)
    with pytest.raises(InputError):
        await keys.create("  ")


def run(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    config = tmp_path / "config.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n', encoding="utf-8")
    result = CliRunner().invoke(main, ["--config", str(config), "keys", *args])
    return result.exit_code, result.stdout, result.stderr


def test_keys_cli_create_list_revoke(tmp_path: Path) -> None:
    code, out, err = run(tmp_path, "create", "ci-bot")
    assert code == 0, err
    key = out.strip()
    assert key.startswith(PREFIX) and "\n" not in key and "shown only now" in err
    code, out, _ = run(tmp_path, "list", "--json")
    [listed] = json.loads(out)
    assert listed["name"] == "ci-bot" and listed["revoked"] is False and key not in out
    assert listed["prefix"] == key[:8] and listed["last_used_at"] is None
    code, out, _ = run(tmp_path, "list")
    assert code == 0 and "ci-bot" in out and key not in out
    code, out, _ = run(tmp_path, "revoke", str(listed["id"]))
    assert code == 0 and "revoked" in out
    assert json.loads(run(tmp_path, "list", "--json")[1])[0]["revoked"] is True
    code, _, err = run(tmp_path, "revoke", "42")
    assert code == 2 and "no API key with id 42" in err
