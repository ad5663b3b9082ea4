"""242 real and broken PDFs (../shared/pdf-torture): never crash, never hang, always a reason.

Runs only where the folder sits beside the project checkout; skipped cleanly elsewhere.
"""

from __future__ import annotations

import ast
import csv
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from rag.config import IngestSettings, OcrSettings
from rag.errors import DocumentError
from rag.ingest import loaders
from rag.ingest.loaders import load
from rag.ingest.loaders.pdf import MIN_TEXT_CHARS

TORTURE = Path(__file__).parents[2] / "shared" / "pdf-torture"
if not (TORTURE / "pdf_index.tsv").is_file():
    pytest.skip(f"{TORTURE} is not present", allow_module_level=True)

with (TORTURE / "pdf_index.tsv").open(newline="", encoding="utf-8") as handle:
    ROWS = [row for row in csv.DictReader(handle, delimiter="\t") if row["file"].endswith(".pdf")]


def _password(row: dict[str, str]) -> str:
    """The index's ``password`` column is a Python literal (``'foo'``, ``''``) or blank."""
    return str(ast.literal_eval(row["password"])) if row["password"] else ""


# The passwords the index knows, configured as a user would: every file gets the whole list.
SETTINGS = IngestSettings(pdf_passwords=tuple(sorted({_password(r) for r in ROWS} - {""})))

# The text layer only: OCR over the set is benchmarks/ocr_bench.py --torture (minutes).
NO_OCR = OcrSettings(enabled=False)

Outcome = tuple[str, str, int]
"""(``ok`` | an error class name, reason, characters extracted)."""


def _load(row: dict[str, str]) -> Outcome:
    try:
        doc = load(TORTURE / row["file"], SETTINGS, NO_OCR)
    except DocumentError as exc:
        return type(exc).__name__, exc.message, 0
    except Exception as exc:  # the test fails on these; the run must still finish
        return "crash", f"{type(exc).__name__}: {exc}", 0
    return "ok", "", sum(len(section.text) for section in doc.sections)


@pytest.fixture(scope="module")
def outcomes() -> Iterator[dict[str, Outcome]]:
    # Two threads, so two worker processes; the longest files go first so the other
    # thread is not left alone with them at the end.
    rows = sorted(ROWS, key=lambda row: -int(row["pages"] or 0))
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield dict(zip((r["file"] for r in rows), pool.map(_load, rows), strict=True))
    loaders.close()


def test_every_file_has_an_outcome(outcomes: dict[str, Outcome]) -> None:
    counts = Counter(kind for kind, _, _ in outcomes.values())
    assert sum(counts.values()) == len(ROWS)
    assert counts["crash"] == 0
    ok_text = sum(row["status"] == "ok-text" for row in ROWS)
    assert counts["ok"] >= ok_text, counts


@pytest.mark.parametrize("row", ROWS, ids=[row["file"] for row in ROWS])
def test_pdf(row: dict[str, str], outcomes: dict[str, Outcome]) -> None:
    kind, reason, chars = outcomes[row["file"]]
    assert kind != "crash", reason
    borderline = row["status"].startswith("ok-no-text") and int(row["chars"] or 0) >= MIN_TEXT_CHARS
    # With the index's passwords configured, only the files no known password opens stay shut.
    locked = reason.startswith("PDF is encrypted")
    assert locked == (row["status"] == "encrypted-no-known-password"), reason
    if row["status"] != "ok-text":
        # The index and the loader draw the "no text layer" line a little differently: a
        # file the index puts exactly on it (20 characters of real Arabic text) may load.
        if kind == "ok":
            assert borderline, f"{row['status']} file produced text"
        else:
            assert reason.strip()
        return
    # pypdf reads it (with the index's password, where it names one), so the loader must:
    # no exception, not even for the encrypted ones (AES needs `cryptography`, installed).
    assert kind == "ok", f"{row['status']} file refused: {reason}"
    expected = int(row["chars"])
    # Loosely: normalisation drops spaces, and the index counts differently on some
    # multi-column and CJK files.
    assert expected / 4 <= chars <= expected * 5, (chars, expected)
    assert chars >= MIN_TEXT_CHARS


def test_no_password_in_any_reason(outcomes: dict[str, Outcome]) -> None:
    # One of the index's passwords is "password", a word the reasons use themselves.
    telling = [p for p in SETTINGS.pdf_passwords if p not in "configured passwords"]
    assert telling
    for kind, reason, _ in outcomes.values():
        for password in telling:
            assert password not in reason, kind
