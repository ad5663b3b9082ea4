"""XLSX (and XLSM) to Markdown with openpyxl: runs in the bounded worker process.

Every worksheet is a heading, and its rows a table whose first non-empty row is the
header: each row below it names its columns, and the rows are cut into groups that fit
a chunk, each under its own heading (``## Sheet1, rows 2-41``) when there are several.

Formulas read as the values Excel cached when it last saved the file (``data_only``):
openpyxl computes nothing, and a file never opened in Excel after a formula was written
has no cached value, so such a cell is empty. Macros in an
``.xlsm`` are never loaded (``keep_vba`` stays off). The workbook is streamed
(``read_only``) and bounded by ``ingest.xlsx_max_cells``: a larger one is skipped, not
cut short silently.
"""

from __future__ import annotations

from typing import Any

from rag.ingest.loaders.office_markdown import cell_text, heading, table_groups


def _sheet(rows: list[tuple[int, list[str]]], title: str, budget: int) -> str:
    blocks = [heading(1, title)]
    groups = table_groups([texts for _, texts in rows], budget)
    for first, last, text in groups:
        if len(groups) > 1:
            # The sheet's name again: the group's chunk is read (and embedded) alone.
            blocks.append(heading(2, f"{title}, rows {rows[first][0]}–{rows[last][0]}"))
        blocks.append(text)
    return "\n\n".join(blocks)


def extract(path: str, budget: int, max_cells: int) -> dict[str, Any]:
    """``{"title", "parts": [markdown]}``, or ``{"problem": (status, reason)}``."""
    from openpyxl import load_workbook

    workbook = load_workbook(path, read_only=True, data_only=True, keep_links=False)
    try:
        sheets: list[str] = []
        cells = 0
        for sheet in workbook.worksheets:
            # The stored dimension may claim the whole grid; read the cells that exist.
            sheet.reset_dimensions()
            rows: list[tuple[int, list[str]]] = []
            for number, values in enumerate(sheet.iter_rows(values_only=True), 1):
                cells += len(values)
                if cells > max_cells:
                    reason = (
                        f"the workbook has more than {max_cells:,} cells, over the limit "
                        "(ingest.xlsx_max_cells)"
                    )
                    return {"problem": ("skipped", reason)}
                texts = [cell_text(value) for value in values]
                while texts and not texts[-1]:
                    texts.pop()
                if texts:
                    rows.append((number, texts))
            if rows:
                sheets.append(_sheet(rows, sheet.title, budget))
        title = (workbook.properties.title or "").strip()
    finally:
        workbook.close()
    return {"title": title, "parts": ["\n\n".join(sheets)]}
