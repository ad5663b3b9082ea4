"""Word, Excel and PowerPoint files: what each loader keeps, what it refuses, and a
question answered from each, over the web app, on the real service (fake embedder)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from conftest import LOCAL_URL, make_settings
from fakes import FakeEmbedder, parse_sse, upload
from litestar import Litestar
from litestar.testing import AsyncTestClient
from office_docs import (
    OLE2,
    as_macro_enabled,
    docx_bytes,
    pptx_bytes,
    with_cached_formula,
    xlsx_bytes,
    zip_bytes,
)
from sqlalchemy import select

from rag.config import IngestSettings
from rag.db.tables import Chunk, Document
from rag.errors import UnreadableDocument, UnsupportedDocument
from rag.ingest.loaders import load
from rag.registry import Overrides
from rag.service import RagService, open_service
from rag.web import create_app

SETTINGS = IngestSettings()


def write(folder: Path, name: str, data: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    return path


def test_docx_keeps_headings_lists_and_table_headers(tmp_path: Path) -> None:
    doc = load(write(tmp_path, "policy.docx", docx_bytes()), SETTINGS)
    assert doc.title == "Travel policy"
    by_heading = {section.heading_path: section.text for section in doc.sections}
    assert set(by_heading) == {("Travel policy", "Booking"), ("Travel policy", "Allowances")}
    booking = by_heading[("Travel policy", "Booking")]
    assert "- Economy class for flights under six hours" in booking
    assert "- Premium economy only with a director's approval" in booking
    table = by_heading[("Travel policy", "Allowances")]
    assert (
        "- Grade: Junior; Daily allowance: 45 EUR.\n- Grade: Senior; Daily allowance: 70 EUR."
        in table
    )


def test_docm_is_read_and_its_macros_never_loaded(tmp_path: Path) -> None:
    doc = load(write(tmp_path, "policy.docm", as_macro_enabled(docx_bytes())), SETTINGS)
    assert doc.media_type == "application/vnd.ms-word.document.macroEnabled.12"
    assert any("Skyhop portal" in section.text for section in doc.sections)


def test_xlsx_has_a_heading_per_sheet_and_every_row_group_keeps_the_header(
    tmp_path: Path,
) -> None:
    doc = load(write(tmp_path, "sites.xlsx", xlsx_bytes(rows=300)), SETTINGS)
    warehouses = [s for s in doc.sections if s.heading_path[0] == "Warehouses"]
    assert len(warehouses) > 3  # 300 rows do not fit one chunk
    next_row = 2
    for section in warehouses:
        heading, *rows = [line for line in section.text.splitlines() if line]
        first, last = (int(n) for n in heading.removeprefix("Warehouses, rows ").split("–"))
        assert section.heading_path == ("Warehouses", heading)
        assert (first, last - first + 1) == (next_row, len(rows))  # no row lost or repeated
        next_row = last + 1
        # Every row of every group keeps the header row's names.
        assert all(row.startswith("- Warehouse: WH-") and "; City: " in row for row in rows)
        assert all("; Capacity pallets: " in row for row in rows)
    assert next_row == 302
    staff = [s for s in doc.sections if s.heading_path == ("Staff",)]
    assert len(staff) == 1 and "- Name: Ines Okafor; Role: Forklift trainer." in staff[0].text


def test_xlsx_formulas_read_as_their_cached_values(tmp_path: Path) -> None:
    data = with_cached_formula(xlsx_bytes(rows=2, extra_sheet=False), "C2*3", "3000")
    doc = load(write(tmp_path, "sites.xlsx", data), SETTINGS)
    text = "\n".join(section.text for section in doc.sections)
    assert "- Warehouse: WH-000; City: Town0; Capacity pallets: 1000; Column 4: 3000." in text
    assert "C2*3" not in text


def test_a_workbook_over_the_cell_limit_is_skipped(tmp_path: Path) -> None:
    path = write(tmp_path, "big.xlsx", xlsx_bytes(rows=400))
    with pytest.raises(UnsupportedDocument, match=r"more than 1,000 cells.*xlsx_max_cells"):
        load(path, IngestSettings(xlsx_max_cells=1000))


def test_pptx_has_a_page_per_slide_with_titles_tables_and_notes(tmp_path: Path) -> None:
    doc = load(write(tmp_path, "roadmap.pptx", pptx_bytes()), SETTINGS)
    assert doc.pages == 3 and doc.title == "Product roadmap"
    by_page = {section.page: section for section in doc.sections}
    assert by_page[1].heading_path == ("Product roadmap",)
    assert "The Orca release ships in April" in by_page[1].text
    assert "Speaker notes: Mention that the pilot customer is Brightwater Dairy" in by_page[1].text
    assert by_page[2].heading_path == ("Hosting costs",)
    assert "- Item: Servers; Monthly cost: 9,400 USD." in by_page[2].text
    assert by_page[3].heading_path == ("Slide 3",)
    assert "platform team channel" in by_page[3].text


@pytest.mark.parametrize("suffix", [".doc", ".xls", ".ppt"])
def test_legacy_binary_files_are_skipped_with_the_reason(tmp_path: Path, suffix: str) -> None:
    with pytest.raises(UnsupportedDocument, match="legacy binary Office format") as caught:
        load(write(tmp_path, "old" + suffix, OLE2), SETTINGS)
    assert "save it as " + suffix + "x" in caught.value.message


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        (
            "bomb.docx",
            b"",
            r"unpacks to 3 MB, over the 1 MB limit \(ingest.office_max_unzipped_mb\)",
        ),
        ("noise.xlsx", b"PK\x03\x04" + bytes(range(256)) * 8, "damaged ZIP package"),
        ("plain.pptx", b"", "not a PowerPoint deck: it is some other ZIP archive"),
        ("sheet.docx", b"", "not a Word document: it holds an Excel workbook"),
        ("locked.docx", OLE2, "OLE2 container, not a ZIP package: a password-protected"),
        ("text.xlsx", b"just text, not a package", "not a ZIP package"),
    ],
)
def test_damaged_disguised_and_bomb_like_packages_fail_cleanly(
    tmp_path: Path, name: str, data: bytes, reason: str
) -> None:
    if name == "bomb.docx":
        data = zip_bytes(
            [("[Content_Types].xml", b"<Types/>"), ("word/document.xml", bytes(3 << 20))]
        )
    elif name == "plain.pptx":
        data = zip_bytes([("readme.txt", b"hello")])
    elif name == "sheet.docx":
        data = xlsx_bytes(rows=1)
    with pytest.raises(UnreadableDocument, match=reason):
        load(write(tmp_path, name, data), IngestSettings(office_max_unzipped_mb=1))


def test_a_package_whose_parts_are_broken_fails_with_a_reason(tmp_path: Path) -> None:
    data = zip_bytes([("[Content_Types].xml", b"<Types/>"), ("word/document.xml", b"<w:doc")])
    with pytest.raises(UnreadableDocument, match=r"the \.docx file could not be read"):
        load(write(tmp_path, "broken.docx", data), SETTINGS)


async def ask(client: AsyncTestClient[Litestar], question: str) -> dict[str, Any]:
    response = await client.post("/v1/ask", json={"question": question})
    assert response.status_code == 200, response.text
    events = {
        name: json.loads(data) for name, data in parse_sse(response.text) if name != "comment"
    }
    assert "done" in events, events
    return events


@pytest.fixture
async def office_service(
    tmp_path: Path,
) -> AsyncIterator[tuple[RagService, AsyncTestClient[Litestar]]]:
    uploads = tmp_path / "uploads"
    settings = make_settings(
        tmp_path,
        retrieval={"min_relevance": 0.2},
        uploads={"folder": str(uploads), "max_mb": 5},
    )
    async with (
        open_service(settings, Overrides(embedder=FakeEmbedder())) as service,
        AsyncTestClient(app=create_app(settings, service=service), base_url=LOCAL_URL) as client,
    ):
        yield service, client


async def test_questions_answered_from_a_docx_an_xlsx_and_a_pptx(
    tmp_path: Path, office_service: tuple[RagService, AsyncTestClient[Litestar]]
) -> None:
    service, client = office_service
    folder = tmp_path / "drive"
    write(folder, "policy.docx", docx_bytes())
    write(folder, "sites.xlsx", xlsx_bytes())
    write(folder, "roadmap.pptx", pptx_bytes())
    write(folder, "old.doc", OLE2)
    report = await service.ingest([folder])
    assert (report.new, report.skipped, report.failed) == (3, 1, 0)
    assert report.problems == [
        {
            "path": "old.doc",
            "status": "skipped",
            "reason": "legacy binary Office format (.doc); save it as .docx",
        }
    ]

    events = await ask(client, "What is the daily allowance of a senior grade?")
    assert events["sources"][0]["document"] == "policy.docx"
    assert "70 EUR" in events["done"]["answer"]

    events = await ask(client, "Who is the forklift trainer on the staff?")
    assert events["sources"][0]["document"] == "sites.xlsx"
    assert "Name: Ines Okafor; Role: Forklift trainer." in events["done"]["answer"]

    events = await ask(client, "Who is the pilot customer of the Orca release?")
    top = events["sources"][0]
    assert (top["document"], top["page"]) == ("roadmap.pptx", 1)
    assert "Brightwater Dairy" in events["done"]["answer"]
    assert events["done"]["citations"][0]["page"] == 1

    async with service.sessions() as session:
        chunks = (
            await session.execute(
                select(Chunk.text, Chunk.heading_path)
                .join(Document)
                .where(Document.path == "sites.xlsx")
            )
        ).all()
    # Every chunk of the sheet keeps the header row's names, whatever group it comes from.
    warehouse_chunks = [text for text, _ in chunks if "WH-" in text]
    assert len(warehouse_chunks) > 1
    for text in warehouse_chunks:
        rows = [line for line in text.splitlines() if "WH-" in line]
        assert all(row.startswith("- Warehouse: WH-") for row in rows)
        assert all("; City: " in row and "; Capacity pallets: " in row for row in rows)


@pytest.mark.parametrize(
    ("name", "data"),
    [("policy.docx", docx_bytes()), ("sites.xlsx", xlsx_bytes()), ("roadmap.pptx", pptx_bytes())],
)
async def test_each_office_type_uploads_through_the_web_app(
    office_service: tuple[RagService, AsyncTestClient[Litestar]], name: str, data: bytes
) -> None:
    _, client = office_service
    doc = await upload(client, name, data)
    assert doc["status"] == "ok", doc
    assert doc["media_type"].startswith("application/vnd.openxmlformats-officedocument.")


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("old.ppt", OLE2, "legacy binary Office format (.ppt); save it as .pptx"),
        ("sheet.docx", xlsx_bytes(rows=1), "not a Word document: it holds an Excel workbook"),
        ("archive.xlsx", zip_bytes([("a.txt", b"a")]), "not an Excel workbook"),
        ("fake.pptx", b"%PDF-1.4 not a deck", "not a ZIP package"),
    ],
)
async def test_uploads_of_legacy_or_disguised_office_files_are_refused(
    office_service: tuple[RagService, AsyncTestClient[Litestar]],
    name: str,
    data: bytes,
    message: str,
) -> None:
    _, client = office_service
    response = await client.post("/v1/documents", files={"file": (name, data)})
    assert response.status_code == 415, response.text
    error = response.json()["error"]
    assert error["code"] == "unsupported_media_type" and message in error["message"]
