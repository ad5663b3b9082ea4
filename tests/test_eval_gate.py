"""The CI gate: the embedded default on corpus/qa.jsonl may not fall below eval/baseline.json.

It runs the real `rag eval` (real model, real corpus) in a subprocess, exactly as a person
would, on a database of its own under the test's temporary directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.model
def test_corpus_questions_hold_the_baseline(tmp_path: Path) -> None:
    env = {**os.environ, "RAG_EVAL__DATA_DIR": str(tmp_path / "eval")}
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "rag"),
            "eval",
            "corpus/qa.jsonl",
            "--baseline",
            "eval/baseline.json",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
