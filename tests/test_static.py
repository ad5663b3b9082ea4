"""ruff and mypy are part of the suite, so the README's test command runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, check=False
    )


def test_ruff_is_clean() -> None:
    result = _run("ruff", "check", "rag", "tests", "migrations", "benchmarks")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_is_clean() -> None:
    result = _run("mypy", "rag")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_checks_the_tests() -> None:
    """The tests type-check too, so a fake that drifts from its Protocol fails the suite.

    The flags are relaxed for them only: test functions and fixtures need not annotate
    every parameter and return (pytest injects fixtures by name), helpers may call untyped
    code and decorators (pytest's own), and bare generics or ``Any`` returns are allowed.
    What stays checked is what matters here: the bodies of unannotated functions, every
    call into ``rag``, and fakes typed against the Protocols they stand in for. ``rag``
    itself stays under ``--strict`` (``test_mypy_strict_is_clean``).
    """
    result = _run(
        "mypy",
        "tests",
        "--allow-untyped-defs",
        "--allow-incomplete-defs",
        "--allow-untyped-calls",
        "--allow-untyped-decorators",
        "--allow-any-generics",
        "--no-warn-return-any",
        "--check-untyped-defs",
    )
    assert result.returncode == 0, result.stdout + result.stderr
