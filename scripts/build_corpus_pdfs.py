"""Render the handbook's PDF documents into corpus/ from the sources in scripts/pdf_sources/.

DEV-ONLY TOOL. It needs fpdf2, which is not a runtime dependency of rag (it is the
`corpus` extra). Install it into the project's environment first:

    .venv/bin/pip install -e '.[corpus]'
    .venv/bin/python scripts/build_corpus_pdfs.py

The PDFs exist so that the PDF loader (pypdf, page numbers, page-level citations) is
exercised by the sample corpus out of the box. Their text lives only in the PDFs once built;
the plain sources here are kept so the PDFs can be regenerated. Only the PDF core fonts
(Helvetica, Courier) are used, so no font is downloaded and the text must be latin-1
(this script refuses anything else).

Source format (one file per PDF):
    # Title                   document title (PDF metadata and first-page heading)
    @subtitle text            optional line under the title on page 1
    ## Heading                a section heading
    - item                    a bullet (continuation lines are indented by two spaces)
    <4 spaces>code            a preformatted line, set in Courier
    <<<PAGE>>>                start a new page
    blank line                ends a paragraph
Every source page must fit on one PDF page: the script fails if text overflows, so page
numbers cited in corpus/qa.jsonl stay true.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

from fpdf import FPDF

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ROOT / "scripts" / "pdf_sources"
OUTPUT = ROOT / "corpus"
DOCUMENTS = {
    "operations-runbook.txt": "operations-runbook.pdf",
    "release-notes.txt": "release-notes.pdf",
}
PAGE_BREAK = "<<<PAGE>>>"
# A fixed creation date keeps rebuilt PDFs byte-identical, so re-ingesting them is a no-op.
FIXED_DATE = datetime(2026, 1, 1, tzinfo=UTC)


class HandbookPDF(FPDF):
    def __init__(self, title: str) -> None:
        super().__init__(format="A4")
        self.doc_title = title
        self.set_margins(20, 20, 20)
        self.set_auto_page_break(auto=True, margin=20)
        self.source_page = 0

    def header(self) -> None:
        if self.page_no() > 1:
            self.set_font("Helvetica", "I", 8)
            self.cell(0, 6, f"rag handbook - {self.doc_title}", align="R")
            self.ln(10)

    def footer(self) -> None:
        self.set_y(-15)
        self.set_font("Helvetica", "I", 8)
        self.cell(0, 10, f"Page {self.page_no()} of {{nb}}", align="C")


def parse(text: str) -> tuple[str, str, list[list[str]]]:
    """Split a source into its title, subtitle and the lines of each page."""
    title, subtitle = "", ""
    pages: list[list[str]] = [[]]
    for line in text.splitlines():
        if line.startswith("# ") and not title:
            title = line[2:].strip()
        elif line.startswith("@subtitle "):
            subtitle = line[len("@subtitle ") :].strip()
        elif line.strip() == PAGE_BREAK:
            pages.append([])
        else:
            pages[-1].append(line)
    if not title:
        raise SystemExit("source has no '# Title' line")
    return title, subtitle, pages


def blocks(lines: list[str]) -> list[tuple[str, str]]:
    """Group lines into (kind, text) blocks: heading, para, bullet, code."""
    out: list[tuple[str, str]] = []
    for line in lines:
        if not line.strip():
            out.append(("blank", ""))
        elif line.startswith("## "):
            out.append(("heading", line[3:].strip()))
        elif line.startswith("    ") and not (out and out[-1][0] == "bullet"):
            out.append(("code", line[4:]))
        elif line.startswith("- "):
            out.append(("bullet", line[2:].strip()))
        elif line.startswith("  ") and out and out[-1][0] == "bullet":
            out[-1] = ("bullet", out[-1][1] + " " + line.strip())
        elif out and out[-1][0] == "para":
            out[-1] = ("para", out[-1][1] + " " + line.strip())
        else:
            out.append(("para", line.strip()))
    return out


def render(source: Path, target: Path) -> int:
    text = source.read_text(encoding="utf-8")
    try:
        text.encode("latin-1")
    except UnicodeEncodeError as exc:
        raise SystemExit(f"{source}: core fonts need latin-1 text: {exc}") from exc
    title, subtitle, pages = parse(text)
    pdf = HandbookPDF(title)
    pdf.set_title(title)
    pdf.set_author("rag project")
    pdf.set_subject("rag handbook")
    pdf.set_creator("scripts/build_corpus_pdfs.py (fpdf2)")
    pdf.set_creation_date(FIXED_DATE)
    pdf.alias_nb_pages()
    width = pdf.epw
    for number, page_lines in enumerate(pages, start=1):
        pdf.add_page()
        if number == 1:
            pdf.set_font("Helvetica", "B", 20)
            pdf.multi_cell(width, 10, title)
            if subtitle:
                pdf.set_font("Helvetica", "", 12)
                pdf.multi_cell(width, 7, subtitle)
            pdf.ln(4)
        for kind, body in blocks(page_lines):
            if kind == "blank":
                pdf.ln(2)
            elif kind == "heading":
                pdf.set_font("Helvetica", "B", 14)
                pdf.multi_cell(width, 8, body)
                pdf.ln(1)
            elif kind == "code":
                pdf.set_font("Courier", "", 8.5)
                pdf.set_x(pdf.l_margin + 6)
                pdf.multi_cell(width - 6, 4.6, body)
            elif kind == "bullet":
                pdf.set_font("Helvetica", "", 10)
                pdf.set_x(pdf.l_margin + 4)
                pdf.multi_cell(width - 4, 5, "- " + body)
            else:
                pdf.set_font("Helvetica", "", 10)
                pdf.multi_cell(width, 5, body)
        if pdf.page_no() != number:
            raise SystemExit(
                f"{source}: source page {number} overflows onto PDF page {pdf.page_no()}; "
                "shorten it or move text to another page"
            )
    target.parent.mkdir(parents=True, exist_ok=True)
    pdf.output(str(target))
    return pdf.page_no()


def main() -> int:
    for name, out_name in DOCUMENTS.items():
        pages = render(SOURCES / name, OUTPUT / out_name)
        print(f"{OUTPUT / out_name}: {pages} pages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
