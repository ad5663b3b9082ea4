"""242 real and broken PDFs (../shared/pdf-torture): never crash, never hang, always a reason.

Runs only where the folder sits beside the project checkout; skipped cleanly elsewhere.
"""

from __future__ import annotations

import csv
import importlib.util
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from rag.config import IngestSettings
from rag.errors import DocumentError
from rag.ingest import loaders
from rag.ingest.loaders import load
from rag.ingest.loaders.pdf import MIN_TEXT_CHARS

TORTURE = Path(__file__).parents[2] / "shared" / "pdf-torture"
if not (TORTURE / "pdf_index.tsv").is_file():
    pytest.skip(f"{TORTURE} is not present", allow_module_level=True)

SETTINGS = IngestSettings()
HAS_CRYPTOGRAPHY = importlib.util.find_spec("cryptography") is not None
AES_MISSING = "PDF uses AES encryption, which needs the 'cryptography' package"

with (TORTURE / "pdf_index.tsv").open(newline="", encoding="utf-8") as handle:
    ROWS = [row for row in csv.DictReader(handle, delimiter="\t") if row["file"].endswith(".pdf")]

Outcome = tuple[str, str, int]
"""(``ok`` | an error class name, reason, characters extracted)."""


def _load(row: dict[str, str]) -> Outcome:
    try:
        doc = load(TORTURE / row["file"], SETTINGS)
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
    assert counts["ok"] >= 70, counts


@pytest.mark.parametrize("row", ROWS, ids=[row["file"] for row in ROWS])
def test_pdf(row: dict[str, str], outcomes: dict[str, Outcome]) -> None:
    kind, reason, chars = outcomes[row["file"]]
    assert kind != "crash", reason
    borderline = row["status"].startswith("ok-no-text") and int(row["chars"] or 0) >= MIN_TEXT_CHARS
    if row["status"] != "ok-text":
        # The index and the loader draw the "no text layer" line a little differently: a
        # file the index puts exactly on it (20 characters of real Arabic text) may load.
        if kind == "ok":
            assert borderline, f"{row['status']} file produced text"
        else:
            assert reason.strip()
        return
    if kind == "ok":
        expected = int(row["chars"])
        # Loosely: normalisation drops spaces, and the index counts differently on
        # some multi-column and CJK files.
        assert expected / 4 <= chars <= expected * 5, (chars, expected)
        return
    over_limits = (
        int(row["bytes"]) > SETTINGS.max_file_mb * 2**20
        or int(row["pages"] or 0) > SETTINGS.pdf_max_pages
    )
    needs_password = row["encrypted"] == "True" and row["password"] not in ("", "''")
    if over_limits:
        assert kind == "UnsupportedDocument", reason
    elif reason.startswith(AES_MISSING):
        assert not HAS_CRYPTOGRAPHY and row["encrypted"] == "True"
    else:
        assert needs_password and "encrypted" in reason, reason
