"""Workers AI's Markdown conversion (``[ocr] engine = "workers-ai"``) against the fake:
the request the client sends, a file Cloudflare cannot convert, retries, the ledger,
and the local loaders taking over when a conversion fails."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from cf_fake import FOREVER, FakeCloudflare
from cf_service import cloudflare_service
from office_docs import docx_bytes, pptx_bytes, xlsx_bytes
from pypdf import PdfWriter
from scans import top_of_page, words
from sqlalchemy import select

from rag.backends.cloudflare.neurons import CallCost, PriceTable
from rag.backends.cloudflare.tomarkdown import WorkersAIConverter
from rag.config import PriceSettings, load_settings
from rag.db.tables import Chunk, Document, UsageCall
from rag.domain import DoneEvent
from rag.errors import ConfigError, ConversionFailed, UpstreamUnavailable
from rag.ingest import ocr as ocr_engine
from rag.service import RagService

DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
ROADMAP_MD = (
    "# Product roadmap\n\nThe Orca release ships in April.\n\n"
    "## Notes\n\nThe pilot customer is Brightwater Dairy.\n"
)


def drive(tmp_path: Path, **files: bytes) -> Path:
    """A folder of ``files`` (names with a dot written as ``name_ext``: ``scan_pdf``)."""
    folder = tmp_path / "drive"
    folder.mkdir()
    for name, data in files.items():
        (folder / name.replace("_", ".")).write_bytes(data)
    return folder


def blank_pdf() -> bytes:
    """A scan, as far as text goes: one page and no text layer."""
    writer = PdfWriter()
    writer.add_blank_page(612, 792)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


async def test_a_file_is_sent_as_multipart_and_its_markdown_costed(fake: FakeCloudflare) -> None:
    data = docx_bytes()
    fake.converter.markdown["policy.docx"] = "# Travel policy\n\nBook through Skyhop.\n"
    costs: list[CallCost] = []
    async with fake.client() as client:
        converter = WorkersAIConverter(client, PriceTable(PriceSettings()), costs.append)
        converted = await converter.convert("policy.docx", data, DOCX)
    assert converted.markdown == "# Travel policy\n\nBook through Skyhop.\n"
    assert converted.tokens == 6
    assert fake.converter.received == [("policy.docx", DOCX, data)]
    (call,) = fake.calls("/ai/tomarkdown")
    assert call.method == "POST" and call.headers["content-type"].startswith("multipart/form-data")
    assert [(c.kind, c.model, c.output_tokens, c.neurons, c.estimated) for c in costs] == [
        ("convert", "toMarkdown", 6, 0.0, True)
    ]


async def test_a_file_cloudflare_cannot_convert_is_a_conversion_failure(
    fake: FakeCloudflare,
) -> None:
    fake.converter.errors["scan.png"] = "Unsupported image: the file is damaged"
    costs: list[CallCost] = []
    async with fake.client() as client:
        converter = WorkersAIConverter(client, PriceTable(PriceSettings()), costs.append)
        with pytest.raises(ConversionFailed, match=r"could not convert scan\.png: Unsupported"):
            await converter.convert("scan.png", b"\x89PNG\r\n\x1a\n", "image/png")
    assert costs == []  # nothing converted, nothing counted


async def test_a_failed_call_is_retried_then_given_up(fake: FakeCloudflare) -> None:
    fake.fail_next("/ai/tomarkdown", 503, times=1, message="overloaded")
    async with fake.client() as client:
        converter = WorkersAIConverter(client, PriceTable(PriceSettings()))
        converted = await converter.convert("deck.pptx", pptx_bytes(), "application/x")
        assert converted.markdown.startswith("# deck.pptx")
        assert len(fake.calls("/ai/tomarkdown")) == 2 and len(fake.sleeps) == 1

        fake.fail_next("/ai/tomarkdown", 502, times=10)
        with pytest.raises(UpstreamUnavailable):
            await converter.convert("deck.pptx", pptx_bytes(), "application/x")
    assert len(fake.calls("/ai/tomarkdown")) == 2 + 1 + client.max_retries


def test_the_engine_needs_the_cloudflare_backend(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[ocr]\nengine = "workers-ai"\n')
    with pytest.raises(ConfigError, match=r'ocr.engine = "workers-ai" needs backend'):
        load_settings(environ={"RAG_CONFIG": str(config)})
    config.write_text('[ocr]\nengine = "tesseract"\n')
    with pytest.raises(ConfigError, match=r"ocr\.engine"):
        load_settings(environ={"RAG_CONFIG": str(config)})


async def test_ingestion_converts_office_files_and_scans_and_falls_back_locally(
    fake: FakeCloudflare, tmp_path: Path
) -> None:
    folder = drive(
        tmp_path,
        roadmap_pptx=pptx_bytes(),
        policy_docx=docx_bytes(),
        sites_xlsx=xlsx_bytes(rows=3),
        scan_pdf=blank_pdf(),
        notes_md=b"# Notes\n\nMarkdown never leaves the machine.\n",
    )
    fake.converter.markdown["roadmap.pptx"] = ROADMAP_MD
    fake.converter.markdown["scan.pdf"] = "# Scanned invoice\n\nInvoice 4471 is due in May.\n"
    fake.converter.errors["policy.docx"] = "Conversion of this file failed"
    async with cloudflare_service(fake, tmp_path, ocr={"engine": "workers-ai"}) as service:
        report = await service.ingest([folder])
        fake.vectorize.process()
        assert (report.new, report.failed, report.skipped) == (5, 0, 0), report.problems
        assert report.problems == [
            {
                "path": "policy.docx",
                "status": "fallback",
                "reason": "the workers-ai conversion failed, read locally instead: Workers AI "
                "could not convert policy.docx: Conversion of this file failed",
            }
        ]
        sent = [name for name, _, _ in fake.converter.received]
        assert sorted(sent) == ["policy.docx", "roadmap.pptx", "scan.pdf", "sites.xlsx"]
        async with service.sessions() as session:
            docs = {d.path: d for d in await session.scalars(select(Document))}
            calls = list(
                await session.scalars(select(UsageCall).where(UsageCall.kind == "convert"))
            )
        assert docs["roadmap.pptx"].title == "Product roadmap"  # Cloudflare's Markdown
        assert docs["policy.docx"].title == "Travel policy"  # read locally
        assert docs["scan.pdf"].media_type == "application/pdf"
        assert len(calls) == 3 and {c.purpose for c in calls} == {"ingest"}

        events = [e async for e in service.ask("Who is the pilot customer of the Orca release?")]
        done = events[-1]
        assert isinstance(done, DoneEvent) and done.citations, events
        assert done.citations[0].document == "roadmap.pptx"


def scan_bytes(kind: str) -> bytes:
    """The top of the runbook's first page, scanned, as an image-only PDF, PNG or TIFF."""
    out = io.BytesIO()
    top_of_page("operations-runbook.pdf").save(out, format=kind, resolution=150)
    return out.getvalue()


async def _documents(service: RagService) -> list[Document]:
    async with service.sessions() as session:
        return list(await session.scalars(select(Document)))


# Generous: a page takes 1-2 s on idle cores, but this machine's cores are shared.
LOCAL_FALLBACK = {"engine": "workers-ai", "page_timeout_s": 300}


async def test_scans_and_images_are_read_by_local_ocr_when_the_day_is_spent(
    fake: FakeCloudflare, tmp_path: Path
) -> None:
    folder = drive(
        tmp_path,
        runbook_pdf=scan_bytes("PDF"),
        runbook_png=scan_bytes("PNG"),
        runbook_tiff=scan_bytes("TIFF"),
    )
    fake.fail_next("/ai/tomarkdown", 429, 3036, times=FOREVER, message="daily free allocation")
    async with cloudflare_service(fake, tmp_path, ocr=LOCAL_FALLBACK) as service:
        report = await service.ingest([folder])
        fake.vectorize.process()
        assert (report.new, report.failed, report.skipped) == (3, 0, 0), report.problems
        assert report.recognised == 3
        # The converter takes no TIFF: it is read by local OCR from the start.
        assert len(fake.calls("/ai/tomarkdown")) == 2
        fell_back = {p["path"]: p["reason"] for p in report.problems}
        assert set(fell_back) == {"runbook.pdf", "runbook.png"}
        assert all(
            reason.startswith("the workers-ai conversion failed, read by local OCR instead: ")
            and "daily free allocation" in reason
            for reason in fell_back.values()
        ), fell_back
        docs = await _documents(service)
        async with service.sessions() as session:
            chunks = list(await session.scalars(select(Chunk)))
    assert {c.document_id for c in chunks if c.recognised} == {d.id for d in docs}
    assert any("the people who keep a rag service running" in words(c.text) for c in chunks)


async def test_a_scan_is_read_by_local_ocr_through_an_outage(
    fake: FakeCloudflare, tmp_path: Path
) -> None:
    folder = drive(tmp_path, runbook_pdf=scan_bytes("PDF"))
    fake.fail_next("/ai/tomarkdown", 503, times=FOREVER, message="service unavailable")
    async with cloudflare_service(fake, tmp_path, ocr=LOCAL_FALLBACK) as service:
        report = await service.ingest([folder])
    assert (report.new, report.recognised) == (1, 1), report.problems
    # Retried like every call before the local engine takes over.
    assert len(fake.calls("/ai/tomarkdown")) > 1
    [problem] = report.problems
    assert problem["status"] == "fallback" and "service unavailable" in problem["reason"]


async def test_a_blank_scan_no_engine_reads_is_skipped(
    fake: FakeCloudflare, tmp_path: Path
) -> None:
    folder = drive(tmp_path, scan_pdf=blank_pdf())
    fake.converter.errors["scan.pdf"] = "no text found"
    async with cloudflare_service(fake, tmp_path, ocr=LOCAL_FALLBACK) as service:
        report = await service.ingest([folder])
        (doc,) = await _documents(service)
    assert (report.failed, report.skipped, doc.status) == (0, 1, "skipped")
    assert [p["status"] for p in report.problems] == ["fallback", "skipped"]
    assert doc.reason == "PDF has no text layer and OCR found no readable text on its page"


async def test_without_local_ocr_a_failed_conversion_fails_with_both_reasons(
    fake: FakeCloudflare, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ocr_engine, "NEEDED", (*ocr_engine.NEEDED, "rag_no_such_module"))
    folder = drive(tmp_path, scan_pdf=blank_pdf(), photo_png=scan_bytes("PNG"))
    fake.converter.errors["scan.pdf"] = "no text found"
    fake.converter.errors["photo.png"] = "Unsupported image"
    async with cloudflare_service(fake, tmp_path, ocr=LOCAL_FALLBACK) as service:
        report = await service.ingest([folder])
    assert report.failed == 2
    reasons = {p["path"]: p["reason"] for p in report.problems}
    missing = "local OCR cannot read it instead: OCR is not installed (pip install 'rag[ocr]')"
    assert reasons == {
        "scan.pdf": "PDF has no text layer (scanned or image-only); its conversion failed: "
        f"Workers AI could not convert scan.pdf: no text found; {missing}",
        "photo.png": "the image's conversion failed: Workers AI could not convert photo.png: "
        f"Unsupported image; {missing}",
    }


async def test_the_local_engine_never_calls_the_converter(
    fake: FakeCloudflare, tmp_path: Path
) -> None:
    folder = drive(tmp_path, roadmap_pptx=pptx_bytes())
    async with cloudflare_service(fake, tmp_path) as service:
        report = await service.ingest([folder])
    assert report.new == 1 and fake.calls("/ai/tomarkdown") == []


async def test_a_disguised_office_file_is_never_uploaded(
    fake: FakeCloudflare, tmp_path: Path
) -> None:
    folder = drive(tmp_path, sheet_docx=xlsx_bytes(rows=1))
    async with cloudflare_service(fake, tmp_path, ocr={"engine": "workers-ai"}) as service:
        report = await service.ingest([folder])
    assert report.failed == 1 and "not a Word document" in report.problems[0]["reason"]
    assert fake.calls("/ai/tomarkdown") == []
