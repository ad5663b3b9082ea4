"""OCR: speed, accuracy on the handbook, and what it adds on the PDF torture set.

    .venv/bin/python benchmarks/ocr_bench.py [--dpi 150] [--torture] [--torture-dir DIR]

1. Speed and accuracy: every page of the handbook's PDFs (corpus/*.pdf) is rendered at
   ``--dpi`` and saved as an image-only PDF, which the real loader reads through the bounded
   OCR worker, a page per call, after one warm-up page. It prints pages a second, seconds a
   page (median, p95) and the character error rate (edit distance over reference length)
   of the recognised text against the page's own text layer, whitespace runs counted as
   one space.
2. ``--torture``: ``rag ingest --json`` over the shared PDF torture set (used only when
   present, with the passwords its index names) into a temporary database, once with OCR
   off and once on; prints how many more files yield text, the OCR run's total time,
   whether anything printed a traceback, the files OCR made readable, and why the others
   stay unread, counted by reason.
"""

from __future__ import annotations

import argparse
import ast
import csv
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pypdfium2 as pdfium
from PIL import Image

from rag.config import IngestSettings, OcrSettings
from rag.ingest import loaders
from rag.ingest.loaders.ocr_pages import recognise
from rag.ingest.ocr.worker import pdf_page

ROOT = Path(__file__).resolve().parents[1]
TORTURE = ROOT.parent / "shared" / "pdf-torture"


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance, a row at a time in numpy (a page is ~2,000 characters)."""
    if not a or not b:
        return max(len(a), len(b))
    bs = np.frombuffer(b.encode("utf-32-le"), dtype=np.uint32)
    steps = np.arange(len(b) + 1)
    row = steps.copy()
    for i, ch in enumerate(a, 1):
        cost = (bs != ord(ch)).astype(np.int64)
        diagonal = np.empty_like(row)
        diagonal[0] = i
        diagonal[1:] = np.minimum(row[1:] + 1, row[:-1] + cost)
        # Insertions chain left to right: row[j] = min over k <= j of diagonal[k] + (j - k).
        row = np.minimum.accumulate(diagonal - steps) + steps
    return int(row[-1])


def flat(text: str) -> str:
    return " ".join(text.split())


def handbook_pages(dpi: int, folder: Path) -> tuple[Path, list[str]]:
    """An image-only PDF of every handbook page, and each page's text layer."""
    images, references = [], []
    for pdf in sorted((ROOT / "corpus").glob("*.pdf")):
        document = pdfium.PdfDocument(pdf)
        for page in document:
            references.append(flat(page.get_textpage().get_text_range()))
            images.append(page.render(scale=dpi / 72).to_pil().convert("RGB"))
        document.close()
    scan = folder / "handbook-scan.pdf"
    images[0].save(scan, resolution=dpi, save_all=True, append_images=images[1:])
    return scan, references


def speed_and_accuracy(dpi: int) -> None:
    ingest, ocr = IngestSettings(), OcrSettings(dpi=dpi, page_timeout_s=300)
    with tempfile.TemporaryDirectory() as tmp:
        scan, references = handbook_pages(dpi, Path(tmp))

        def call(index: int) -> tuple[Callable[..., Any], tuple[Any, ...]]:
            return pdf_page, (str(scan), index, "", dpi, ocr.min_confidence)

        began = time.perf_counter()
        recognise([0], call, ocr, ingest)
        print(f"worker start and first page (models load): {time.perf_counter() - began:.1f} s")
        seconds, hypotheses = [], []
        for index in range(len(references)):
            began = time.perf_counter()
            done = recognise([index], call, ocr, ingest)
            seconds.append(time.perf_counter() - began)
            hypotheses.append(flat(done.replies[index]["text"]) if index in done.replies else "")
        worker_rss = (
            max((p.memory_info().rss for p in psutil.Process().children()), default=0) / 2**20
        )
    loaders.close()
    edits = sum(edit_distance(r, h) for r, h in zip(references, hypotheses, strict=True))
    chars = sum(len(r) for r in references)
    total = sum(seconds)
    print(f"pages: {len(seconds)} A4 at {dpi} dpi, cores: {os.cpu_count()}")
    print(
        f"speed: {len(seconds) / total:.2f} pages/s; {statistics.median(seconds):.2f} s a page "
        f"median, {sorted(seconds)[int(0.95 * (len(seconds) - 1))]:.2f} s p95"
    )
    print(f"worker memory after the run (RSS): {worker_rss:.0f} MiB")
    print(f"character error rate: {edits / chars:.3%} ({edits} edits in {chars} characters)")
    for index, (ref, hyp) in enumerate(zip(references, hypotheses, strict=True), 1):
        print(f"  page {index}: {edit_distance(ref, hyp) / max(1, len(ref)):.2%}")


def ingest_json(folder: Path, data_dir: Path, env: dict[str, str]) -> tuple[dict[str, Any], str]:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "rag"), "ingest", str(folder), "--json"],
        env={**os.environ, "RAG_DATA_DIR": str(data_dir), **env},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        print(done.stderr[-2000:])
    return json.loads(done.stdout), done.stderr


def index_passwords(folder: Path) -> list[str]:
    """The passwords the torture set's index names: the run measures OCR, not locks."""
    with (folder / "pdf_index.tsv").open(newline="") as handle:
        rows = csv.DictReader(handle, delimiter="\t")
        return sorted({ast.literal_eval(r["password"]) for r in rows if r["password"]} - {""})


def torture(folder: Path) -> None:
    if not (folder / "pdf_index.tsv").is_file():
        print(f"torture set: {folder} is not present; skipped")
        return
    passwords = json.dumps(index_passwords(folder))
    with tempfile.TemporaryDirectory() as tmp:
        runs = {}
        for name, enabled in (("without OCR", "false"), ("with OCR", "true")):
            began = time.perf_counter()
            report, stderr = ingest_json(
                folder,
                Path(tmp) / name.replace(" ", "-"),
                {"RAG_OCR__ENABLED": enabled, "RAG_INGEST__PDF_PASSWORDS": passwords},
            )
            seconds = time.perf_counter() - began
            runs[name] = report
            partial = sum(p["status"] == "partial" for p in report["problems"])
            print(
                f"torture set {name}: {report['files']} files, {report['new']} yield text, "
                f"{report['skipped']} skipped, {report['failed']} failed, {partial} partial, "
                f"{report.get('recognised', 0)} pages recognised; {seconds:.0f} s; "
                f"traceback: {'Traceback' in stderr}"
            )
    off, on = runs["without OCR"], runs["with OCR"]
    print(f"files that yield text thanks to OCR: {on['new'] - off['new']}")
    unread = {p["path"] for p in off["problems"] if p["status"] in ("skipped", "failed")}
    still = {p["path"]: p for p in on["problems"] if p["status"] in ("skipped", "failed")}
    for path in sorted(unread - set(still)):
        print(f"  read by OCR: {path}")
    # Why the rest stay unread, by reason with its numbers taken out, most common first.
    reasons = Counter(
        f"{p['status']}: {re.sub(r'[0-9]+', 'N', p['reason'])[:110]}" for p in still.values()
    )
    for reason, count in reasons.most_common():
        print(f"  {count:4d} {reason}")
    for problem in on["problems"]:
        if problem["status"] == "partial":
            print(f"  partial: {problem['path']}: {problem['reason'][:120]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dpi", type=int, default=OcrSettings().dpi)
    parser.add_argument("--torture", action="store_true", help="also ingest the torture set")
    parser.add_argument("--torture-dir", type=Path, default=TORTURE)
    parser.add_argument("--skip-handbook", action="store_true")
    args = parser.parse_args()
    if not args.skip_handbook:
        speed_and_accuracy(args.dpi)
    if args.torture:
        torture(args.torture_dir)


if __name__ == "__main__":
    Image.init()
    main()
