"""OCR: scanned PDF pages and image files read by the real recogniser, offline.

The fixtures are made here, at test time, from the handbook's own PDFs: a page is
rendered with pypdfium2 (cropped to its top part, so a page reads in a second or two)
and saved as PNG, JPEG, TIFF, WebP and an image-only PDF with Pillow. Every recognition
runs in the bounded OCR worker process, which stays warm between tests.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pypdfium2 as pdfium
import pytest
from conftest import LOCAL_URL, make_settings
from fakes import FakeEmbedder, FakeTokenizer, parse_sse, upload
from litestar.testing import AsyncTestClient
from PIL import Image
from pypdf import PdfReader
from scans import CORPUS, captioned, top_of_page, words

from rag.config import IngestSettings, OcrSettings
from rag.domain import LoadedDocument, Section
from rag.errors import NoTextLayer, UnreadableDocument, UnsupportedDocument
from rag.ingest import loaders
from rag.ingest import ocr as ocr_engine
from rag.ingest.chunker import chunk_document
from rag.ingest.loaders import load
from rag.ingest.loaders.ocr_pages import recognise
from rag.ingest.ocr.page import read_page
from rag.ingest.ocr.worker import image_page
from rag.ports import Image as Pixels
from rag.ports import Progress
from rag.registry import Overrides
from rag.service import open_service
from rag.web import create_app

INGEST = IngestSettings()
# Generous: a page takes 1-2 s on idle cores, but this machine's cores are shared.
OCR = OcrSettings(page_timeout_s=300)
SLOW_OK = {"page_timeout_s": 300}


@pytest.fixture(scope="module")
def scans(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    folder = tmp_path_factory.mktemp("scans")
    runbook = top_of_page("operations-runbook.pdf")
    notes = top_of_page("release-notes.pdf")
    files = {
        "scan.pdf": folder / "runbook-scan.pdf",
        "png": folder / "release-notes.png",
        "tiff": folder / "two-pages.tiff",
        "webp": folder / "notes.webp",
        "exif.jpg": folder / "phone.jpg",
        "corrupt.png": folder / "corrupt.png",
        "mixed.pdf": folder / "mixed.pdf",
        "two.pdf": folder / "two-scans.pdf",
    }
    runbook.save(files["scan.pdf"], resolution=150)
    runbook.save(files["two.pdf"], resolution=150, save_all=True, append_images=[notes])
    notes.save(files["png"])
    notes.save(files["webp"], lossless=True)
    runbook.save(files["tiff"], save_all=True, append_images=[notes], compression="tiff_lzw")
    # A phone keeps the sensor's pixels and records the turn in EXIF (6: rotate 90° clockwise
    # to view): the pixels here lie on their side, as the camera stored them.
    exif = Image.Exif()
    exif[0x0112] = 6
    notes.rotate(90, expand=True).save(files["exif.jpg"], quality=92, exif=exif)
    files["corrupt.png"].write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    # A text page from the handbook followed by the scanned page: a mixed PDF.
    mixed = pdfium.PdfDocument.new()
    for source in (CORPUS / "release-notes.pdf", files["scan.pdf"]):
        mixed.import_pages(pdfium.PdfDocument(source), [0])
    mixed.save(files["mixed.pdf"])
    yield files
    loaders.close()


# -- what is kept of a page: a scripted recogniser, no model ---------------------------


class TurnedPage:
    """Reads well only when the marked corner is top left, as a real page reads only the
    right way up; upside-down text still "reads", at the telling lower scores."""

    def __init__(self) -> None:
        self.calls = 0

    def recognise(self, image: Pixels) -> list[tuple[str, float]]:
        self.calls += 1
        if not image.any():
            return []
        if image[0, 0, 0]:
            return [("Quarterly report", 0.98), ("speck", 0.3), ("Revenue rose", 0.96)]
        return [("lɐǝɹ", 0.64), ("ʇɹodǝɹ", 0.62)]


def marked(turns: int) -> Pixels:
    """A page turned ``turns`` quarter turns clockwise."""
    image = np.zeros((4, 6, 3), dtype=np.uint8)
    image[0, 0] = 255
    image[2, 3] = 1  # not blank
    return np.ascontiguousarray(np.rot90(image, -turns))


def test_an_upright_page_is_read_once_and_low_lines_are_dropped() -> None:
    reader = TurnedPage()
    page = read_page(reader, marked(0), min_confidence=0.5)
    assert (page.text, page.turns, reader.calls) == ("Quarterly report\nRevenue rose", 0, 1)
    assert page.confidence == pytest.approx(0.97)


@pytest.mark.parametrize("turns", [1, 2, 3])
def test_a_turned_page_is_read_the_right_way_up(turns: int) -> None:
    page = read_page(TurnedPage(), marked(turns), min_confidence=0.5)
    assert page.text == "Quarterly report\nRevenue rose"
    assert page.turns == turns  # counter-clockwise quarter turns undo the clockwise ones


def test_a_blank_page_is_not_turned_and_a_high_cut_keeps_nothing() -> None:
    reader = TurnedPage()
    blank = read_page(reader, np.zeros((4, 6, 3), dtype=np.uint8), min_confidence=0.5)
    assert (blank.text, blank.confidence, reader.calls) == ("", None, 1)
    strict = read_page(TurnedPage(), marked(0), min_confidence=0.99)
    assert (strict.text, strict.confidence) == ("", None)


def test_a_chunk_keeps_the_confidence_of_its_recognised_page() -> None:
    doc = LoadedDocument(
        title="t",
        media_type="application/pdf",
        sections=(
            Section("Typed page one.", page=1),
            Section("Scanned page two.", page=2, confidence=0.9),
            Section("Scanned page three.", page=3, confidence=0.8),
        ),
    )
    # A chunk never spans two pages (its quotes are cited with its page), so room for the
    # three pages in one chunk still makes three, each with its own page's confidence.
    for tokens in (50, 5):
        chunks = chunk_document(doc, FakeTokenizer(), tokens, 0, max_chars=2000)
        assert [(c.page_start, c.page_end, c.confidence) for c in chunks] == [
            (1, 1, None),
            (2, 2, 0.9),
            (3, 3, 0.8),
        ]


def test_a_missing_install_or_a_switch_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ocr_engine.unavailable(OCR) is None
    assert ocr_engine.unavailable(OcrSettings(enabled=False)) == (
        "OCR is turned off (ocr.enabled = false)"
    )
    monkeypatch.setattr(ocr_engine, "NEEDED", (*ocr_engine.NEEDED, "rag_no_such_module"))
    assert ocr_engine.unavailable(OCR) == "OCR is not installed (pip install 'rag[ocr]')"


# -- the real recogniser in the worker process ------------------------------------------


def test_a_scanned_pdf_page_is_recognised_with_its_page_and_confidence(
    scans: dict[str, Path],
) -> None:
    doc = load(scans["scan.pdf"], INGEST, OCR)
    assert (doc.pages, doc.recognised_pages, doc.notes) == (1, 1, ())
    [section] = doc.sections
    assert section.page == 1
    assert section.confidence is not None and section.confidence > 0.9
    assert "this runbook is for the people who keep a rag service running" in words(section.text)


def test_a_mixed_pdf_keeps_its_text_layer_and_recognises_only_the_scan(
    scans: dict[str, Path],
) -> None:
    doc = load(scans["mixed.pdf"], INGEST, OCR)
    assert [(s.page, s.confidence is None) for s in doc.sections] == [(1, True), (2, False)]
    assert doc.recognised_pages == 1
    assert "release notes" in words(doc.sections[0].text)


@pytest.mark.parametrize("kind", ["png", "webp"])
def test_an_image_is_a_document(scans: dict[str, Path], kind: str) -> None:
    doc = load(scans[kind], INGEST, OCR)
    assert doc.media_type == f"image/{kind}"
    assert (doc.pages, doc.recognised_pages) == (1, 1)
    [section] = doc.sections
    assert section.page is None  # one picture: no page to speak of
    assert "commands: rag serve, rag ingest, rag ask" in words(section.text)


def test_a_tiff_is_read_a_page_a_frame(scans: dict[str, Path]) -> None:
    doc = load(scans["tiff"], INGEST, OCR)
    assert [s.page for s in doc.sections] == [1, 2]
    assert "operations runbook" in words(doc.sections[0].text)
    assert "release notes" in words(doc.sections[1].text)


def test_exif_orientation_is_applied_before_reading(scans: dict[str, Path]) -> None:
    def call(index: int) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return image_page, (str(scans["exif.jpg"]), index, 0.5, 10)

    reply = recognise([0], call, OCR, INGEST).replies[0]
    assert reply["turns"] == 0, "the page was read only after turning it: EXIF was ignored"
    assert "release notes" in words(reply["text"])


def test_a_corrupt_image_fails_with_a_reason(scans: dict[str, Path]) -> None:
    with pytest.raises(UnreadableDocument) as caught:
        load(scans["corrupt.png"], INGEST, OCR)
    assert caught.value.message.startswith("image could not be read: ")
    assert "Traceback" not in caught.value.message


def test_a_file_with_too_many_pages_is_skipped(scans: dict[str, Path]) -> None:
    with pytest.raises(UnsupportedDocument, match=r"image has 2 pages, over the 1 page limit"):
        load(scans["tiff"], INGEST, OcrSettings(max_pages=1, page_timeout_s=300))
    with pytest.raises(UnsupportedDocument) as caught:
        load(scans["two.pdf"], INGEST, OcrSettings(max_pages=1))
    assert caught.value.message == (
        "PDF has no text layer and 2 of its pages need OCR, over the 1 page limit (ocr.max_pages)"
    )


def test_a_page_over_its_time_limit_is_skipped_and_the_rest_kept(scans: dict[str, Path]) -> None:
    doc = load(scans["mixed.pdf"], INGEST, OcrSettings(page_timeout_s=0.01))
    assert [s.page for s in doc.sections] == [1]
    assert doc.notes == ("page 2: recognition took over 0.01 s (ocr.page_timeout_s); skipped",)
    with pytest.raises(UnreadableDocument, match=r"over 0.01 s \(ocr.page_timeout_s\)"):
        load(scans["scan.pdf"], INGEST, OcrSettings(page_timeout_s=0.01))


def test_a_scan_with_a_stray_caption_in_its_text_layer_is_recognised_whole(
    tmp_path: Path,
) -> None:
    # 18 characters on a small page pass its size's bar (12 on 24 square inches), but a
    # file of under 20 has no text layer to speak of: the picture is what holds the text.
    path = tmp_path / "stamped.pdf"
    path.write_bytes(captioned(top_of_page("operations-runbook.pdf", share=0.25), STAMP))
    assert "".join(PdfReader(path).pages[0].extract_text().split()) == STAMP.replace(" ", "")
    doc = load(path, INGEST, OCR)
    assert doc.recognised_pages == 1
    [section] = doc.sections
    assert section.confidence is not None and "operations runbook" in words(section.text)


STAMP = "Scanned 2026-05-04"


def test_without_ocr_a_scan_is_skipped_with_the_reason(scans: dict[str, Path]) -> None:
    off = OcrSettings(enabled=False)
    with pytest.raises(UnsupportedDocument) as caught:
        load(scans["scan.pdf"], INGEST, off)
    assert caught.value.message == (
        "PDF has no text layer (scanned or image-only) and OCR is turned off (ocr.enabled = false)"
    )
    with pytest.raises(UnsupportedDocument, match="images are read by OCR, and OCR is turned off"):
        load(scans["png"], INGEST, off)


# -- end to end: questions answered from a scan and an image ----------------------------


class Recording(Progress):
    def __init__(self) -> None:
        self.pages = 0

    def recognised(self, pages: int) -> None:
        self.pages += pages


async def test_questions_are_answered_from_a_scan_and_an_image(
    tmp_path: Path, scans: dict[str, Path]
) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    for kind in ("scan.pdf", "png"):
        (folder / scans[kind].name).write_bytes(scans[kind].read_bytes())
    (folder / "unrelated.md").write_text("# Gardening\n\nWater tomatoes twice a week.\n")
    settings = make_settings(tmp_path, retrieval={"min_relevance": 0.2}, ocr=SLOW_OK)
    async with open_service(settings, Overrides(embedder=FakeEmbedder())) as service:
        progress = Recording()
        report = await service.ingest([folder], progress)
        assert (report.new, report.failed, report.skipped) == (3, 0, 0), report.problems
        assert report.recognised == progress.pages == 2
        assert "2 pages recognised by OCR" in report.summary()
        async with AsyncTestClient(
            app=create_app(settings, service=service), base_url=LOCAL_URL
        ) as client:
            for question, document, answer in [
                ("Who is the operations runbook for?", "runbook-scan.pdf", "the people who keep"),
                ("What was the first release of rag?", "release-notes.png", "first release of rag"),
            ]:
                response = await client.post("/v1/ask", json={"question": question})
                events = [(name, json.loads(data)) for name, data in parse_sse(response.text)]
                sources = events[0][1]
                done = events[-1][1]
                assert sources[0]["document"] == document, sources
                assert sources[0]["recognised"] is True
                assert 0.9 < sources[0]["confidence"] <= 1
                assert done["grounded"] is True and answer in done["answer"], done
                # Citations are checked against the recognised text itself.
                chunk = (await client.get(f"/v1/chunks/{sources[0]['chunk_id']}")).json()
                assert chunk["recognised"] is True
                cited = [c for c in done["citations"] if c["chunk_id"] == chunk["id"]]
                assert cited and all(words(c["quote"]) in words(chunk["text"]) for c in cited)
            hits = (await client.post("/v1/search", json={"query": "Water tomatoes"})).json()
            assert hits["hits"][0]["recognised"] is False
            assert hits["hits"][0]["confidence"] is None


async def test_a_scan_with_nothing_legible_is_skipped_not_failed(tmp_path: Path) -> None:
    # Nothing is wrong with the service: the file holds no text, like an empty one. The
    # loader, the upload's status and its job's result all say skipped, with the reason.
    blank = Image.new("RGB", (1240, 600), "white")
    blank.paste(Image.new("RGB", (400, 200), (90, 90, 90)), (400, 200))  # a photo, no print
    pdf_bytes, png_bytes = io.BytesIO(), io.BytesIO()
    blank.save(pdf_bytes, format="PDF", resolution=150)
    blank.save(png_bytes, format="PNG")
    (tmp_path / "blank.pdf").write_bytes(pdf_bytes.getvalue())
    with pytest.raises(NoTextLayer) as caught:
        load(tmp_path / "blank.pdf", INGEST, OCR)
    assert caught.value.status == "skipped"
    reason = "PDF has no text layer and OCR found no readable text on its page"
    assert caught.value.message == reason
    settings = make_settings(tmp_path, uploads={"folder": str(tmp_path / "uploads")}, ocr=SLOW_OK)
    async with (
        open_service(settings, Overrides(embedder=FakeEmbedder())) as service,
        AsyncTestClient(app=create_app(settings, service=service), base_url=LOCAL_URL) as client,
    ):
        for name, data, why in [
            ("blank.pdf", pdf_bytes.getvalue(), reason),
            ("blank.png", png_bytes.getvalue(), "no text recognised in the image"),
        ]:
            doc = await upload(client, name, data, timeout_s=300)
            assert (doc["status"], doc["reason"]) == ("skipped", why), doc
            job = (await client.get("/v1/jobs")).json()[0]
            assert (job["result"]["skipped"], job["result"]["failed"]) == (1, 0), job
            assert job["result"]["problems"][0]["status"] == "skipped"


async def test_an_uploaded_image_is_sniffed_and_read(
    tmp_path: Path, scans: dict[str, Path]
) -> None:
    settings = make_settings(tmp_path, uploads={"folder": str(tmp_path / "uploads")}, ocr=SLOW_OK)
    async with (
        open_service(settings, Overrides(embedder=FakeEmbedder())) as service,
        AsyncTestClient(app=create_app(settings, service=service), base_url=LOCAL_URL) as client,
    ):
        refused = await client.post(
            "/v1/documents", files={"file": ("note.png", b"just some text\n")}
        )
        assert refused.status_code == 415
        assert refused.json()["error"]["message"].startswith("the file is not an image")
        doc = await upload(client, "notes.jpg", scans["png"].read_bytes(), timeout_s=300)
        assert (doc["status"], doc["pages"]) == ("ok", 1), doc
        # The job's progress counts the pages OCR read, as its bar does in the terminal.
        job = (await client.get("/v1/jobs")).json()[0]
        assert job["progress"]["pages_recognised"] == 1, job
