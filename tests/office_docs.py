"""Word, Excel and PowerPoint files built by the libraries rag reads them with."""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Sequence

from docx import Document
from openpyxl import Workbook
from pptx import Presentation
from pptx.util import Inches

OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504)
"""The start of an OLE2 compound file: a legacy .doc, .xls or .ppt."""


def docx_bytes() -> bytes:
    """A travel policy: a title, headings, a bulleted list and a table with a header row."""
    doc = Document()
    doc.add_heading("Travel policy", 0)
    doc.add_heading("Booking", 1)
    doc.add_paragraph("Employees book every flight through the Skyhop portal.")
    doc.add_paragraph("Economy class for flights under six hours", style="List Bullet")
    doc.add_paragraph("Premium economy only with a director's approval", style="List Bullet 2")
    doc.add_heading("Allowances", 1)
    table = doc.add_table(rows=3, cols=2)
    for r, cells in enumerate(
        [("Grade", "Daily allowance"), ("Junior", "45 EUR"), ("Senior", "70 EUR")]
    ):
        for c, text in enumerate(cells):
            table.cell(r, c).text = text
    out = io.BytesIO()
    doc.save(out)
    return out.getvalue()


def xlsx_bytes(rows: int = 120, extra_sheet: bool = True) -> bytes:
    """Sheet "Warehouses" (a header row, then ``rows`` rows), and a small sheet "Staff"."""
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "Warehouses"
    sheet.append(["Warehouse", "City", "Capacity pallets"])
    for n in range(rows):
        sheet.append([f"WH-{n:03d}", "Rotterdam" if n == 77 else f"Town{n}", 1000 + n])
    if extra_sheet:
        staff = book.create_sheet("Staff")
        staff.append(["Name", "Role"])
        staff.append(["Ines Okafor", "Forklift trainer"])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def with_cached_formula(data: bytes, formula: str, value: str) -> bytes:
    """``data`` (an XLSX) with cell D2 holding ``formula`` and the value Excel would cache.

    openpyxl writes formulas without a cached value, as a file nobody opened in Excel
    has; this writes the ``<v>`` Excel would have written on saving.
    """
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for item in source.infolist():
            body = source.read(item.filename)
            if item.filename == "xl/worksheets/sheet1.xml":
                text = body.decode()
                cell = f'<c r="D2"><f>{formula}</f><v>{value}</v></c>'
                text = re.sub(r'(<row r="2"[^>]*>)(.*?)(</row>)', rf"\1\2{cell}\3", text, count=1)
                body = text.encode()
            target.writestr(item, body)
    return out.getvalue()


def pptx_bytes() -> bytes:
    """Three slides: a roadmap with speaker notes, a table of costs, a slide with no title."""
    deck = Presentation()
    first = deck.slides.add_slide(deck.slide_layouts[1])
    assert first.shapes.title is not None
    first.shapes.title.text = "Product roadmap"
    first.placeholders[1].text_frame.text = "The Orca release ships in April"
    first.notes_slide.notes_text_frame.text = "Mention that the pilot customer is Brightwater Dairy"
    second = deck.slides.add_slide(deck.slide_layouts[5])
    assert second.shapes.title is not None
    second.shapes.title.text = "Hosting costs"
    table = second.shapes.add_table(3, 2, Inches(1), Inches(2), Inches(6), Inches(2)).table
    for r, cells in enumerate(
        [("Item", "Monthly cost"), ("Servers", "9,400 USD"), ("Backups", "650 USD")]
    ):
        for c, text in enumerate(cells):
            table.cell(r, c).text = text
    third = deck.slides.add_slide(deck.slide_layouts[6])
    box = third.shapes.add_textbox(Inches(1), Inches(1), Inches(6), Inches(1))
    box.text_frame.text = "Questions go to the platform team channel"
    out = io.BytesIO()
    deck.save(out)
    return out.getvalue()


def zip_bytes(members: Sequence[tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, body in members:
            archive.writestr(name, body)
    return out.getvalue()


def as_macro_enabled(data: bytes) -> bytes:
    """A DOCX turned into a DOCM: its main part's content type, and a VBA project part."""
    source = zipfile.ZipFile(io.BytesIO(data))
    members = []
    for item in source.infolist():
        body = source.read(item.filename)
        if item.filename == "[Content_Types].xml":
            body = body.replace(
                b"application/vnd.openxmlformats-officedocument.wordprocessingml.document.main",
                b"application/vnd.ms-word.document.macroEnabled.main",
            )
        members.append((item.filename, body))
    members.append(("word/vbaProject.bin", OLE2))
    return zip_bytes(members)
