"""The command line's exit-code policy (``rag.cli.common``), and messages that print
exactly what they say, brackets and colons included. No model is loaded here."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from fakes import ScriptedService, hit
from test_cli import config_env, flat, rag, write_docs

from rag import service as rag_service
from rag.domain import ErrorEvent, SourcesEvent
from rag.errors import ModelError


def broken(failure: BaseException) -> ScriptedService:
    """A service in trouble: its search raises, its answer stream ends in an error."""
    stream_error = ErrorEvent(code="model", message="the stream broke [no DONE]", retryable=True)
    return ScriptedService(
        [SourcesEvent(()), stream_error], hits=[hit(1, "x")], search_error=failure
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return config_env(tmp_path / "state")


def use(monkeypatch: pytest.MonkeyPatch, service: ScriptedService) -> None:
    @asynccontextmanager
    async def open_service(settings: object) -> AsyncIterator[ScriptedService]:
        yield service

    monkeypatch.setattr(rag_service, "open_service", open_service)


def test_an_unknown_section_exits_2_and_is_named_whole(env: dict[str, str]) -> None:
    result = rag({**env, "RAG_RETRIVAL__TOP_K": "8"}, "config")
    assert result.exit_code == 2
    assert "configuration error: RAG_RETRIVAL__TOP_K: unknown section [retrival]" in flat(
        result.stderr
    )


@pytest.mark.parametrize("command", [["ask", "anything"], ["vectorize", "info"]])
def test_missing_cloudflare_credentials_exit_2_naming_the_setting(
    tmp_path: Path, command: list[str]
) -> None:
    result = rag(config_env(tmp_path, 'backend = "cloudflare"\n'), *command)
    assert result.exit_code == 2
    assert (
        "configuration error: the cloudflare backend needs credentials: set CLOUDFLARE_API_TOKEN"
        in flat(result.stderr)
    )
    assert "set [cloudflare] account_id in config.toml or CLOUDFLARE_ACCOUNT_ID" in flat(
        result.stderr
    )


@pytest.mark.usefixtures("cli_on_fake_embedder")
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ask", ""], "error: question must not be empty"),
        (["search", "  \t"], "error: query must not be empty"),
        (["ask", "a question", "--top-k", "99"], "error: top_k must be between 1 and 50, not 99"),
        (["ingest", "/nonexistent/folder"], "error: no such file or folder: /nonexistent/folder"),
    ],
)
def test_input_errors_exit_2(env: dict[str, str], args: list[str], message: str) -> None:
    result = rag(env, *args)
    assert result.exit_code == 2, result.output
    assert message in flat(result.stderr)
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ("search", "error: the embedder is down [HTTP 503]"),  # raised by the service
        ("ask", "error: the stream broke [no DONE]"),  # an answer stream's error event
    ],
)
def test_runtime_failures_exit_1_with_their_message(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, command: str, message: str
) -> None:
    use(monkeypatch, broken(ModelError("the embedder is down [HTTP 503]")))
    result = rag(env, command, "anything")
    assert result.exit_code == 1
    assert message in flat(result.stderr)


def test_ctrl_c_exits_130(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    use(monkeypatch, broken(KeyboardInterrupt()))
    assert rag(env, "search", "anything").exit_code == 130


def test_rag_debug_is_no_setting(env: dict[str, str]) -> None:
    result = rag({**env, "RAG_DEBUG": "1"}, "config")
    assert result.exit_code == 0, result.output


def test_rag_debug_shows_where_an_unexpected_error_happened(tmp_path: Path) -> None:
    # A database written by something else, as in test_cli: the real program, in a process.
    env = config_env(tmp_path / "state")
    (tmp_path / "state" / "data").mkdir()
    (tmp_path / "state" / "data" / "rag.db").write_bytes(b"this is not a database" * 100)
    rag_program = str(Path(sys.executable).parent / "rag")

    def upgrade(**debug: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [rag_program, "db", "upgrade"],
            env={**os.environ, **env, **debug},
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )

    quiet = upgrade()
    assert quiet.returncode == 1
    assert "unexpected error: DatabaseError" in quiet.stderr and "RAG_DEBUG=1" in quiet.stderr
    assert "Traceback" not in quiet.stderr
    debug = upgrade(RAG_DEBUG="1")
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr
    assert "sqlite3.DatabaseError" in debug.stderr


@pytest.mark.usefixtures("cli_on_fake_embedder")
def test_file_names_and_reasons_print_as_they_are(tmp_path: Path, env: dict[str, str]) -> None:
    docs = write_docs(
        tmp_path / "docs", {"[draft] notes.txt": bytes(range(256)) * 8, "a :memo: b.md": ""}
    )
    result = rag(env, "ingest", str(docs))
    assert result.exit_code == 0, result.output
    problems = flat(result.stderr)
    assert "skipped [draft] notes.txt: binary content in a .txt file" in problems
    assert "skipped a :memo: b.md: empty file" in problems
