"""``rag serve PATH`` serves only PATH's documents, ``rag forget`` removes a folder's, and
the README's example questions get right answers from the bundled handbook.

One real ``rag serve`` (a subprocess, the real model, uvicorn on 127.0.0.1) over a copy of
the handbook, started where a decoy ``corpus/`` folder would be ingested by a plain
``rag serve``: the README's questions go to it exactly as its curl examples send them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest
from conftest import CORPUS, ROOT
from fakes import parse_sse
from test_cli import config_env, rag, write_docs

pytestmark = pytest.mark.model

DECOY = "The zanzibar ferry timetable changes every spring."

# Each example question of the README, with a fact its answer must hold (as in qa.jsonl:
# a list means any one of them).
EXAMPLES: dict[str, list[str]] = {
    "how do I change the port": ["--port"],
    "What happens to a scanned PDF?": ["OCR"],
    "What does the evidence gate do?": ["refuses to answer"],
    "pdf timeout": ["pdf_timeout_s"],
    "and how long are they kept?": ["7 daily"],
}


class Served(NamedTuple):
    url: str
    env: dict[str, str]
    work: Path
    handbook: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("own")
    work, handbook = root / "work", root / "handbook"
    write_docs(work / "corpus", {"decoy.md": f"# Ferries\n\n{DECOY}\n"})
    shutil.copytree(CORPUS, handbook)
    env = {**os.environ, **config_env(root / "state")}
    port = _free_port()
    rag_bin = str(Path(sys.executable).parent / "rag")
    proc = subprocess.Popen(
        [rag_bin, "serve", str(handbook), "--port", str(port)],
        cwd=work,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600  # the handbook is ingested first, on shared cores
        while True:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "rag serve did not start"
            time.sleep(0.5)
        yield Served(url, env, work, handbook)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def _ask(url: str, question: str, **body: Any) -> dict[str, Any]:
    response = httpx.post(f"{url}/v1/ask", json={"question": question, **body}, timeout=60)
    assert response.status_code == 200, response.text
    frames = parse_sse(response.text)
    assert frames[-1][0] == "done", frames[-1]
    done: dict[str, Any] = json.loads(frames[-1][1])
    return done


def _documents_found(url: str, query: str) -> set[str]:
    response = httpx.post(f"{url}/v1/search", json={"query": query, "k": 10}, timeout=60)
    assert response.status_code == 200, response.text
    return {hit["document"] for hit in response.json()["hits"]}


def test_serve_path_serves_only_that_folder(served: Served) -> None:
    health = httpx.get(f"{served.url}/healthz", timeout=10).json()
    on_disk = [p for p in served.handbook.iterdir() if p.suffix != ".jsonl"]
    assert health["documents"] == len(on_disk)
    assert "decoy.md" not in _documents_found(served.url, DECOY)


def test_readme_example_questions_are_the_ones_checked() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    shell = "\n".join(re.findall(r"```sh\n(.*?)```", readme, flags=re.DOTALL))
    asked = {q.replace("+", " ") for q in re.findall(r"/v1/ask\?q=([^\"&]+)", shell)}
    # A request's own question, not the earlier turns of its history ([{"question": ...).
    asked |= set(re.findall(r'(?<!\[)\{\s*"question": "([^"]+)"', shell))
    asked |= set(re.findall(r'rag (?:ask|search) "([^"]+)"', shell))
    assert asked == set(EXAMPLES)


@pytest.mark.parametrize("question", sorted(set(EXAMPLES) - {"pdf timeout"}))
def test_readme_example_questions_get_right_answers(served: Served, question: str) -> None:
    history = []
    if question.startswith("and "):  # the README's follow-up, sent with its history
        history = [{"question": "How do I restore a backup?", "answer": "Stop the server"}]
    done = _ask(served.url, question, history=history)
    assert done["grounded"], done["answer"]
    assert any(fact.lower() in done["answer"].lower() for fact in EXAMPLES[question]), done[
        "answer"
    ]


def test_readme_example_search_finds_the_setting(served: Served) -> None:
    response = httpx.post(f"{served.url}/v1/search", json={"query": "pdf timeout", "k": 5})
    assert response.status_code == 200, response.text
    assert any("pdf_timeout_s" in hit["snippet"] for hit in response.json()["hits"])


def test_forget_removes_a_folder_and_the_server_follows(served: Served) -> None:
    decoys = served.work / "corpus"
    assert rag(served.env, "ingest", str(decoys)).exit_code == 0
    assert "decoy.md" in _documents_found(served.url, DECOY)

    result = rag(served.env, "forget", str(decoys))
    assert result.exit_code == 0, result.output
    assert "1 documents and 1 chunks removed" in result.output
    assert "decoy.md" not in _documents_found(served.url, DECOY)
    health = httpx.get(f"{served.url}/healthz", timeout=10).json()
    assert health["documents"] == len([p for p in served.handbook.iterdir()]) - 1

    again = rag(served.env, "forget", str(decoys))
    assert again.exit_code == 2
    assert "no document in the index under" in again.output
