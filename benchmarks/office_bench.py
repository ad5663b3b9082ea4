"""How long Word, Excel and PowerPoint files take to read, in the bounded worker process.

Builds a long report (DOCX: headings, paragraphs, lists and tables), a large workbook
(XLSX: rows x 8 columns) and a deck (PPTX: slides with bullets, a table and notes) with
the libraries rag reads them with, then times ``load`` on each: the first call includes
starting the worker process and importing python-docx, openpyxl and python-pptx in it.
Prints the figures, with the worker's peak resident memory.

    python benchmarks/office_bench.py [--rows 24000] [--paragraphs 3000] [--slides 200]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import psutil
from docx import Document
from openpyxl import Workbook
from pptx import Presentation
from pptx.util import Inches

from rag.config import IngestSettings
from rag.ingest.loaders import close, load


def make_docx(path: Path, paragraphs: int) -> None:
    doc = Document()
    doc.add_heading("Operations handbook", 0)
    for n in range(paragraphs):
        if n % 50 == 0:
            doc.add_heading(f"Chapter {n // 50 + 1}", 1)
        if n % 10 == 9:
            doc.add_paragraph(f"Check item {n} before the shift starts", style="List Bullet")
        else:
            doc.add_paragraph(
                f"Paragraph {n}: the night shift logs every pallet movement in the ledger "
                "and hands the keys to the supervisor before leaving the warehouse."
            )
        if n % 200 == 199:
            table = doc.add_table(rows=6, cols=3)
            for r in range(6):
                for c in range(3):
                    table.cell(r, c).text = f"Head {c}" if r == 0 else f"value {n}-{r}-{c}"
    doc.save(path)


def make_xlsx(path: Path, rows: int) -> None:
    book = Workbook(write_only=True)
    sheet = book.create_sheet("Inventory")
    sheet.append(["SKU", "Warehouse", "City", "Shelf", "Quantity", "Price", "Updated", "Notes"])
    for n in range(rows):
        sheet.append(
            [
                f"SKU-{n:06d}",
                f"WH-{n % 40}",
                "Rotterdam",
                n % 300,
                n % 977,
                n * 0.25,
                "2026-11-30",
                "checked",
            ]
        )
    book.save(path)


def make_pptx(path: Path, slides: int) -> None:
    deck = Presentation()
    for n in range(slides):
        slide = deck.slides.add_slide(deck.slide_layouts[1])
        assert slide.shapes.title is not None
        slide.shapes.title.text = f"Quarter review {n + 1}"
        frame = slide.placeholders[1].text_frame
        frame.text = f"Revenue grew in region {n % 7}"
        for level in (1, 2):
            paragraph = frame.add_paragraph()
            paragraph.text = f"Detail {level} of slide {n + 1}"
            paragraph.level = level
        if n % 5 == 0:
            table = slide.shapes.add_table(4, 3, Inches(1), Inches(4), Inches(6), Inches(1)).table
            for r in range(4):
                for c in range(3):
                    table.cell(r, c).text = f"H{c}" if r == 0 else f"{n}.{r}.{c}"
        slide.notes_slide.notes_text_frame.text = f"Speaker note for slide {n + 1}"
    deck.save(path)


def worker_peak_mb() -> float:
    """The largest resident set among this process's children (the worker), in MB."""
    children = psutil.Process().children(recursive=True)
    return max((c.memory_info().rss for c in children), default=0) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=24_000)
    parser.add_argument("--paragraphs", type=int, default=3_000)
    parser.add_argument("--slides", type=int, default=200)
    args = parser.parse_args()
    print(f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    settings = IngestSettings()
    with tempfile.TemporaryDirectory() as tmp:
        files = {
            "report.docx": lambda p: make_docx(p, args.paragraphs),
            "inventory.xlsx": lambda p: make_xlsx(p, args.rows),
            "review.pptx": lambda p: make_pptx(p, args.slides),
        }
        for name, make in files.items():
            path = Path(tmp) / name
            make(path)
            size = path.stat().st_size / 2**10
            for attempt in ("first", "again"):
                began = time.perf_counter()
                doc = load(path, settings)
                seconds = time.perf_counter() - began
                chars = sum(len(section.text) for section in doc.sections)
                print(
                    f"{name:15} {size:6.0f} KB  {attempt:5}  {seconds:6.2f} s  "
                    f"{len(doc.sections):5} sections  {chars / 1e6:5.2f} M chars  "
                    f"worker {worker_peak_mb():5.0f} MB"
                )
    close()


if __name__ == "__main__":
    main()
