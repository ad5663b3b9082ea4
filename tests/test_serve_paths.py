"""What ``rag serve PATH...`` ingests before it serves, on the fake embedder and with the
server itself stopped at once (tests/test_own_documents.py runs the real one)."""

from __future__ import annotations

from pathlib import Path

import pytest
import uvicorn
from test_cli import config_env, flat, rag, write_docs

from rag import logs
from rag.web import access_log


@pytest.fixture
def no_server(monkeypatch: pytest.MonkeyPatch) -> None:
    async def return_at_once(self: uvicorn.Server, sockets: object = None) -> None:
        return None

    monkeypatch.setattr(uvicorn.Server, "serve", return_at_once)
    # Both change the process's loggers for good (filters on the root logger's handlers,
    # caplog's among them; a handler on CliRunner's stderr): later tests would inherit them.
    monkeypatch.setattr(logs, "guard_logging", lambda *args, **kwargs: None)
    monkeypatch.setattr(access_log, "configure_access_log", lambda *args, **kwargs: None)


@pytest.fixture
def folders(tmp_path: Path) -> tuple[dict[str, str], Path, Path]:
    handbook = write_docs(tmp_path / "corpus")
    mine = write_docs(tmp_path / "mine", {"notes.md": "# Notes\n\nOur own meeting notes.\n"})
    env = config_env(tmp_path / "state", f'[ingest]\ncorpus = "{handbook}"\n')
    return env, handbook, mine


@pytest.mark.usefixtures("cli_on_fake_embedder", "no_server")
def test_serve_path_ingests_it_and_leaves_the_handbook_out(
    folders: tuple[dict[str, str], Path, Path],
) -> None:
    env, handbook, mine = folders
    result = rag(env, "serve", str(mine))
    assert result.exit_code == 0, result.output
    assert "1 files, 1 new" in flat(result.output)
    hits = rag(env, "search", "meeting notes", "--json")
    assert hits.exit_code == 0, hits.output
    assert '"notes.md"' in hits.stdout
    assert str(handbook) not in hits.stdout and "backup.txt" not in hits.stdout


@pytest.mark.usefixtures("cli_on_fake_embedder", "no_server")
def test_serve_path_says_how_to_remove_a_handbook_already_indexed(
    folders: tuple[dict[str, str], Path, Path],
) -> None:
    env, handbook, mine = folders
    assert rag(env, "ingest", str(handbook)).exit_code == 0
    result = rag(env, "serve", str(mine))
    assert result.exit_code == 0, result.output
    assert f"`rag forget {handbook}` removes them" in flat(result.output)

    # Serving the handbook itself is what was asked for: nothing to point out.
    itself = rag(env, "serve", str(handbook))
    assert itself.exit_code == 0, itself.output
    assert "rag forget" not in itself.output


def test_serve_of_a_missing_path_is_a_usage_error(tmp_path: Path) -> None:
    result = rag(config_env(tmp_path / "state"), "serve", str(tmp_path / "nowhere"))
    assert result.exit_code == 2
    assert "does not exist" in result.output
