"""The ``rag`` command line, end to end on the real all-MiniLM-L6-v2 model.

Every test points ``RAG_CONFIG`` at a config file under ``tmp_path``, so the repo's
``data/`` is never touched. The documents are three tiny files (one chunk each), so a
whole run of this file takes a few seconds even though every command loads the model.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from fakes import ScriptedService, done_event, hit

from rag import service as rag_service
from rag.answer.flow import NOT_COVERED
from rag.cli import main
from rag.domain import (
    Citation,
    DeltaEvent,
    Latency,
    Source,
    SourcesEvent,
)

DOCS = {
    "install.md": "# Installing Quillstore\n\n"
    "Quillstore is an embedded key-value database written in Rust.\n"
    "Install it with `cargo install quillstore` and start the server with `quill serve`.\n"
    "The server listens on port 7070 by default.\n",
    "backup.txt": "Backups in Quillstore\n\n"
    "Quillstore writes a snapshot of the database every ten minutes.\n"
    "To restore a snapshot, stop the server and run quill restore with the snapshot file.\n"
    "Snapshots are compressed with zstd and kept for seven days.\n",
    "replication.md": "# Replication\n\n"
    "Quillstore replicates writes to follower nodes over a Raft log.\n"
    "A cluster needs at least three nodes to survive the loss of one node.\n"
    "Followers serve reads when the client allows stale reads.\n",
}
ON_TOPIC = "How do I restore a Quillstore snapshot?"
OFF_TOPIC = "How long should I boil pasta for a good carbonara?"
SECRET = "tok-very-secret-4711"


def write_docs(folder: Path, docs: dict[str, str | bytes] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in (docs if docs is not None else dict(DOCS)).items():
        if isinstance(content, bytes):
            (folder / name).write_bytes(content)
        else:
            (folder / name).write_text(content, encoding="utf-8")
    return folder


def config_env(root: Path, text: str = "") -> dict[str, str]:
    """An environment whose config file keeps every byte of state under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    config = root / "config.toml"
    config.write_text(f'data_dir = "{root / "data"}"\n{text}', encoding="utf-8")
    # A secret or override from the developer's shell must not change what is tested.
    return {"RAG_CONFIG": str(config), "CLOUDFLARE_API_TOKEN": "", "COLUMNS": "200"}


def rag(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return config_env(tmp_path / "state")


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """One ingested copy of ``DOCS`` shared by the read-only tests (ask, search)."""
    root = tmp_path_factory.mktemp("indexed")
    env = config_env(root / "state")
    result = rag(env, "ingest", str(write_docs(root / "docs")))
    assert result.exit_code == 0, result.output
    return env


def ask_json(env: dict[str, str], question: str) -> dict[str, Any]:
    result = rag(env, "ask", question, "--json")
    assert result.exit_code == 0, result.output
    done: dict[str, Any] = json.loads(result.stdout)
    return done


@pytest.mark.model
def test_ingest_twice_embeds_only_the_first_time(tmp_path: Path, env: dict[str, str]) -> None:
    docs = write_docs(tmp_path / "docs")
    first = rag(env, "ingest", str(docs))
    assert first.exit_code == 0, first.output
    line = flat(first.stdout)
    assert "3 files, 3 new, 0 updated, 0 unchanged" in line
    assert re.search(r"; [1-9]\d* chunks embedded, 0 reused", line), line

    second = rag(env, "ingest", str(docs))
    assert second.exit_code == 0, second.output
    line = flat(second.stdout)
    assert "3 files, 0 new, 0 updated, 3 unchanged" in line
    assert "; 0 chunks embedded" in line

    third = rag(env, "ingest", str(docs), "--json")
    summary = json.loads(third.stdout)
    assert (summary["files"], summary["unchanged"], summary["new"]) == (3, 3, 0)
    assert (summary["chunks"], summary["embedded"], summary["problems"]) == (0, 0, [])
    assert summary["run_id"] == 3
    assert third.stderr == ""  # no progress bar, no problems: stdout is the whole story


@pytest.mark.model
def test_ingest_summary_is_one_line_when_piped(tmp_path: Path) -> None:
    # As under `rag ingest docs | tee log`: rich falls back to 80 columns.
    env = {**config_env(tmp_path / "state"), "COLUMNS": "80"}
    result = rag(env, "ingest", str(write_docs(tmp_path / "docs")))
    assert result.exit_code == 0, result.output
    assert result.stdout.count("\n") == 1, result.stdout


@pytest.mark.model
def test_bad_files_are_listed_with_their_reason(tmp_path: Path, env: dict[str, str]) -> None:
    docs = write_docs(
        tmp_path / "docs",
        {
            **DOCS,
            "blob.txt": bytes(range(256)) * 8,
            "empty.md": "",
        },
    )
    result = rag(env, "ingest", str(docs))
    assert result.exit_code == 0, result.output
    assert "5 files, 3 new, 0 updated, 0 unchanged, 0 deleted, 2 skipped, 0 failed" in flat(
        result.stdout
    )
    problems = flat(result.stderr)
    assert "skipped blob.txt: binary content" in problems
    assert "skipped empty.md: empty file" in problems
    assert "Traceback" not in result.output

    # The same, machine-readable, on a fresh database: a second run counts known-bad files
    # as "unchanged" and lists no problems. (Broken PDFs are covered in test_loaders.py.)
    json_env = config_env(tmp_path / "json-state")
    summary = json.loads(rag(json_env, "ingest", str(docs), "--json").stdout)
    assert (summary["files"], summary["new"], summary["skipped"], summary["failed"]) == (5, 3, 2, 0)
    assert summary["updated"] == summary["unchanged"] == summary["deleted"] == 0
    assert summary["chunks"] == summary["embedded"] >= 3
    assert summary["reused"] == 0
    assert isinstance(summary["seconds"], float)
    assert sorted(summary["problems"], key=lambda p: p["path"]) == [
        {"path": "blob.txt", "status": "skipped", "reason": "binary content in a .txt file"},
        {"path": "empty.md", "status": "skipped", "reason": "empty file"},
    ]


@pytest.mark.model
def test_ask_json_prints_a_grounded_done_event(indexed: dict[str, str]) -> None:
    done = ask_json(indexed, ON_TOPIC)
    assert done["grounded"] is True
    assert done["provider"] == "extractive"
    assert done["cached"] is False
    assert done["usage"] == {"neurons": 0.0, "usd": 0.0, "input_tokens": 0, "output_tokens": 0}
    assert re.fullmatch(r"[0-9a-f]{32}", done["trace_id"])
    assert done["citations"]
    assert {c["document"] for c in done["citations"]} <= set(DOCS)
    # The best evidence is the backup note, and the extractive answer quotes it verbatim.
    assert done["citations"][0]["document"] == "backup.txt"
    for citation in done["citations"]:
        assert f"[{citation['n']}]" in done["answer"]
        assert citation["quote"] in DOCS[citation["document"]]
    assert "quill restore" in done["answer"]
    latency = done["latency_ms"]
    assert set(latency) == {"retrieve", "first_token", "total"}
    assert all(isinstance(latency[k], float) for k in latency)
    assert 0 < latency["retrieve"] <= latency["first_token"] <= latency["total"]


@pytest.mark.model
def test_ask_prints_the_answer_then_its_sources(indexed: dict[str, str]) -> None:
    result = rag(indexed, "ask", ON_TOPIC)
    assert result.exit_code == 0, result.output
    answer, _, sources = result.stdout.partition("Sources")
    assert "To restore a snapshot, stop the server and run quill restore" in answer
    assert "[1]" in answer
    assert "[1] backup — backup.txt" in sources
    cited = set(re.findall(r"\[(\d+)\]", answer))
    listed = set(re.findall(r"^\s+\[(\d+)\]", sources, flags=re.MULTILINE))
    assert listed == cited
    assert re.search(r"retrieval \d+ ms, first token \d+ ms, total \d+ ms", result.stderr)


@pytest.mark.model
def test_off_topic_question_is_not_covered(indexed: dict[str, str]) -> None:
    done = ask_json(indexed, OFF_TOPIC)
    assert done["grounded"] is False
    assert done["answer"] == NOT_COVERED
    assert done["citations"] == []

    plain = rag(indexed, "ask", OFF_TOPIC)
    assert plain.exit_code == 0, plain.output
    assert flat(plain.stdout) == flat(NOT_COVERED)
    assert "Sources" not in plain.output


@pytest.mark.model
def test_search_json_gives_ranked_hits_with_scores(indexed: dict[str, str]) -> None:
    result = rag(indexed, "search", "snapshot restore", "--k", "2", "--json")
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)
    assert len(hits) == 2
    result = rag(indexed, "search", "snapshot restore", "--k", "3", "--json")
    hits = json.loads(result.stdout)
    assert 1 <= len(hits) <= 3
    assert [h["rank"] for h in hits] == list(range(1, len(hits) + 1))
    assert hits[0]["document"] == "backup.txt"
    assert {h["document"] for h in hits} <= set(DOCS)
    scores = [h["score"] for h in hits]
    assert all(isinstance(s, float) for s in scores)
    assert scores == sorted(scores, reverse=True)
    assert all(-1.0 <= h["relevance"] <= 1.0 for h in hits)
    assert len({h["chunk_id"] for h in hits}) == len(hits)


@pytest.mark.model
def test_search_table(indexed: dict[str, str]) -> None:
    result = rag(indexed, "search", "Raft follower nodes", "--k", "1")
    assert result.exit_code == 0, result.output
    assert "replication.md" in result.stdout
    assert "install.md" not in result.stdout


@pytest.mark.usefixtures("cli_on_fake_embedder")
def test_search_shows_how_each_hit_was_ranked(tmp_path: Path, env: dict[str, str]) -> None:
    assert rag(env, "ingest", str(write_docs(tmp_path / "docs"))).exit_code == 0
    result = rag(env, "search", "restore a snapshot", "--json")
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)
    assert len(hits) == 3
    best = hits[0]
    assert best["document"] == "backup.txt"
    assert best["dense_rank"] >= 1 and best["keyword_rank"] == 1
    assert isinstance(best["dense_score"], float) and isinstance(best["keyword_score"], float)
    assert any(hit["keyword_rank"] is None for hit in hits)  # words only backup.txt has

    table = rag(env, "search", "restore a snapshot").stdout
    header = next(line for line in table.splitlines() if "score" in line)
    headers = ["#", "score", "cosine", "dense", "keyword", "document", "page", "text"]
    assert [cell.strip() for cell in header.split("┃")[1:-1]] == headers
    rows = [
        [cell.strip() for cell in line.split("│")[1:-1]]
        for line in table.splitlines()
        if line.startswith("│") and line.split("│")[1].strip().isdigit()
    ]
    expected = [
        [
            str(hit["rank"]),
            f"{hit['score']:.4f}",
            f"{hit['dense_score']:.3f}",
            str(hit["dense_rank"]),
            "-" if hit["keyword_rank"] is None else str(hit["keyword_rank"]),
            hit["document"],
        ]
        for hit in hits
    ]
    assert [row[:6] for row in rows] == expected


@pytest.mark.model
@pytest.mark.parametrize(("command", "question"), [("ask", ""), ("search", "   \n\t")])
def test_empty_question_exits_2_with_a_message(
    env: dict[str, str], command: str, question: str
) -> None:
    result = rag(env, command, question)
    assert result.exit_code == 2
    named = "question" if command == "ask" else "query"
    assert f"{named} must not be empty" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.model
def test_ask_on_an_empty_index_says_what_to_do(env: dict[str, str]) -> None:
    result = rag(env, "ask", ON_TOPIC, "--json")
    assert result.exit_code == 0, result.output
    assert "the index is empty" in result.stderr
    assert json.loads(result.stdout)["grounded"] is False


@pytest.mark.model
def test_ingest_of_a_missing_path_is_a_clean_error(tmp_path: Path, env: dict[str, str]) -> None:
    missing = tmp_path / "nonexistent"
    result = rag(env, "ingest", str(missing))
    assert result.exit_code == 2
    assert f"no such file or folder: {missing}" in flat(result.stderr)
    assert "Traceback" not in result.output
    assert result.stdout == ""


def test_config_masks_secrets(env: dict[str, str]) -> None:
    env = {
        **env,
        "CLOUDFLARE_API_TOKEN": SECRET,
        "RAG_INGEST__PDF_PASSWORDS": '["hunter2-pdf"]',
        "RAG_RETRIEVAL__TOP_K": "7",
    }
    result = rag(env, "config")
    assert result.exit_code == 0, result.output
    assert SECRET not in result.output
    assert "hunter2-pdf" not in result.output
    shown = json.loads(result.stdout)
    assert shown["secrets"]["CLOUDFLARE_API_TOKEN"] == "***"
    assert shown["secrets"]["OPENAI_API_KEY"] in ("***", "(not set)")
    assert shown["ingest"]["pdf_passwords"] == ["***"]
    assert shown["retrieval"]["top_k"] == 7
    data_dir = Path(env["RAG_CONFIG"]).parent / "data"
    assert shown["data_dir"] == str(data_dir)
    assert shown["database"]["effective_url"].endswith(f"{data_dir / 'rag.db'}")


def test_no_command_prints_the_database_password(env: dict[str, str]) -> None:
    env = {**env, "RAG_DATABASE__URL": "postgresql+asyncpg://rag:pw-4711@127.0.0.1:1/rag"}
    shown = rag(env, "config")
    assert shown.exit_code == 0 and "pw-4711" not in shown.output
    assert json.loads(shown.stdout)["database"]["url"].startswith("postgresql+asyncpg://rag:***@")
    upgrade = rag(env, "db", "upgrade")  # nothing listens on port 1: it fails, and says why
    assert upgrade.exit_code != 0 and upgrade.stderr
    assert "pw-4711" not in upgrade.output


def test_unset_secret_is_reported_as_not_set(env: dict[str, str]) -> None:
    env = {**env, "OPENAI_API_KEY": "", "OPENROUTER_API_KEY": ""}
    shown = json.loads(rag(env, "config").stdout)
    assert shown["secrets"]["CLOUDFLARE_API_TOKEN"] == "(not set)"
    assert shown["secrets"]["OPENAI_API_KEY"] == "(not set)"


@pytest.mark.parametrize(
    ("config", "environ", "named"),
    [
        ("[retrieval]\ntop_kk = 3\n", {}, "top_kk"),
        ("colour = 'blue'\n", {}, "colour"),
        ("[retrieval]\ntop_k = 'many'\n", {}, "retrieval.top_k"),
        ("", {"RAG_RETREIVAL__TOP_K": "3"}, "RAG_RETREIVAL__TOP_K"),
        ("", {"RAG_RETRIEVAL__TOP_KK": "3"}, "top_kk"),
    ],
)
def test_bad_config_exits_2_naming_the_key(
    tmp_path: Path, config: str, environ: dict[str, str], named: str
) -> None:
    env = {**config_env(tmp_path, config), **environ}
    for command in (["config"], ["ask", ON_TOPIC], ["db", "upgrade"]):
        result = rag(env, *command)
        assert result.exit_code == 2, (command, result.output)
        assert "configuration error" in result.stderr
        assert named in flat(result.stderr)
        assert "Traceback" not in result.output
    assert not (tmp_path / "data").exists()


def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    result = rag({"RAG_CONFIG": str(tmp_path / "absent.toml")}, "config")
    assert result.exit_code == 2
    assert "config file not found" in result.stderr


def test_db_upgrade_creates_the_database_under_data_dir(env: dict[str, str]) -> None:
    database = Path(env["RAG_CONFIG"]).parent / "data" / "rag.db"
    for _ in range(2):  # idempotent
        result = rag(env, "db", "upgrade")
        assert result.exit_code == 0, result.output
        assert "database at head" in result.stdout
    assert database.is_file()


def test_help_shows_examples() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert "rag ingest corpus/" in result.output
    for command in ("ingest", "ask", "chat", "search", "serve", "config", "db"):
        assert command in result.output


def token_stream(*pieces: str) -> ScriptedService:
    """A service whose model streams sub-word tokens, as Workers AI and OpenAI do."""
    source = Source(
        n=1, chunk_id="c1", document="backup.txt", title="backup", page=None, score=0.8, snippet=""
    )
    done = done_event(
        "".join(pieces),
        citations=(Citation(n=1, chunk_id="c1", document="backup.txt", page=None, quote=""),),
        provider="llm",
        latency_ms=Latency(retrieve=1.0, first_token=2.0, total=3.0),
    )
    return ScriptedService(
        [SourcesEvent((source,)), *(DeltaEvent(p) for p in pieces), done], hits=[hit(1, "x")]
    )


def test_ask_prints_streamed_tokens_as_they_are(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pieces = ("Snap", "shots are", " kept for seven days", " [1].")
    service = token_stream(*pieces)

    @asynccontextmanager
    async def open_service(settings: object) -> AsyncIterator[ScriptedService]:
        yield service

    monkeypatch.setattr(rag_service, "open_service", open_service)
    result = rag(env, "ask", "How long are snapshots kept?")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Snapshots are kept for seven days [1].\n"), result.stdout


def test_an_unexpected_error_is_one_readable_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A database written by something else: the CLI must not dump a traceback at people.
    data = tmp_path / "data"
    data.mkdir()
    (data / "rag.db").write_bytes(b"this is not a database" * 100)
    monkeypatch.setenv("RAG_DATA_DIR", str(data))
    monkeypatch.delenv("RAG_DEBUG", raising=False)
    result = CliRunner().invoke(main, ["db", "upgrade"])
    assert result.exit_code == 1
    assert "unexpected error" in result.output and "RAG_DEBUG=1" in result.output
    assert "Traceback" not in result.output
