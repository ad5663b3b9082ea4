"""Operator API: documents (upload, list, read, delete), chunks, and ingestion jobs.

An upload is stored, recorded as ``pending`` and answered at once (202, with its
ingestion job); the job turns it ``ok``, or ``failed``/``skipped`` with the reason
(``rag.web.upload_store``). A delete removes the document's chunks and
vectors from SQLite and from the serving index (the local numpy index, or Vectorize
when that backend serves), and its bytes from the blob store when it is an upload
(``rag.storage.cleanup``); a document ingested from a folder comes back on that
folder's next ingest unless its file goes too.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any, BinaryIO, Literal, cast

import msgspec
from litestar import Request, Response, delete, get, post
from litestar.datastructures import UploadFile
from litestar.enums import RequestEncodingType
from litestar.handlers import HTTPRouteHandler
from litestar.params import Body, FromPath, QueryParameter
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from rag.config import Settings
from rag.db.tables import Chunk, Document
from rag.errors import ConfigError, InputError, NotFound
from rag.jobs.queue import JobQueue, job_dict
from rag.jobs.worker import Worker, cancel_job
from rag.ports import QAService
from rag.web import uploads
from rag.web.auth import KEY_ID
from rag.web.upload_store import UploadStore

MB = 1024 * 1024
MULTIPART_SLACK = 64 * 1024
"""Room in the request-size limit for the multipart framing around the file."""
MAX_OFFSET = 2**63 - 1
"""The database's largest integer: a larger offset is a 400, not an overflow (500)."""


class DocumentOut(msgspec.Struct, frozen=True):
    id: str
    path: str
    """Relative to the folder it came from: the name answers cite."""
    title: str
    media_type: str
    size: int
    pages: int | None
    status: str
    """pending (an upload waiting for its ingestion job), ok, skipped or failed."""
    reason: str | None
    chunks: int
    sha256: str
    created_at: datetime
    updated_at: datetime
    upload: bool
    """True for an upload: its bytes are in the blob store ([storage]), and a delete
    removes them too."""


class UploadOut(msgspec.Struct, frozen=True):
    document: DocumentOut
    job: dict[str, Any] | None
    """The ingestion job (``GET /v1/jobs/{id}``); null when the document needs none."""


class DocumentPage(msgspec.Struct, frozen=True):
    items: list[DocumentOut]
    total: int
    limit: int
    offset: int
    next_offset: int | None


class ChunkOut(msgspec.Struct, frozen=True):
    id: str
    document_id: str
    document: str
    title: str
    ordinal: int
    page_start: int | None
    page_end: int | None
    heading_path: list[str]
    text: str
    recognised: bool = False
    """Recognised from a scan or image by OCR; its wording may hold misreadings."""
    confidence: float | None = None


class Deleted(msgspec.Struct, frozen=True):
    id: str
    chunks_deleted: int
    file_removed: bool
    """False for a document ingested from a folder, and for an upload whose bytes the blob
    store refused to delete now: that deletion is recorded and retried (server log)."""


def _service(request: Request[Any, Any, Any]) -> QAService:
    service: QAService = request.app.state.service
    _db(service)  # a service without a database keeps no documents: 404 at once
    return service


def _db(service: QAService) -> async_sessionmaker[AsyncSession]:
    sessions = service.sessions
    if sessions is None:
        raise NotFound("this service keeps no documents")
    return sessions


def _jobs(request: Request[Any, Any, Any]) -> JobQueue:
    """The job queue, which the app opens with the service's database (404 without one)."""
    jobs: JobQueue | None = request.app.state.jobs
    if jobs is None:
        raise NotFound("this service keeps no documents")
    return jobs


def _settings(request: Request[Any, Any, Any]) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _out(doc: Document, chunks: int) -> DocumentOut:
    return DocumentOut(
        id=doc.id,
        path=doc.path,
        title=doc.title,
        media_type=doc.media_type,
        size=doc.size,
        pages=doc.pages,
        status=doc.status,
        reason=doc.reason,
        chunks=chunks,
        sha256=doc.sha256,
        created_at=_utc(doc.created_at),
        updated_at=_utc(doc.updated_at),
        upload=doc.blob_uri is not None,
    )


def _with_counts() -> Any:
    counts = (
        select(Chunk.document_id, func.count().label("n")).group_by(Chunk.document_id).subquery()
    )
    return select(Document, func.coalesce(counts.c.n, 0)).outerjoin(
        counts, counts.c.document_id == Document.id
    )


async def _document(service: QAService, doc_id: str) -> DocumentOut:
    async with _db(service)() as session:
        row = (await session.execute(_with_counts().where(Document.id == doc_id))).first()
    if row is None:
        raise NotFound(f"no document with id {doc_id}")
    return _out(row[0], row[1])


async def upload_document(
    request: Request[Any, Any, Any],
    data: Annotated[UploadFile, Body(media_type=RequestEncodingType.MULTI_PART)],
) -> Response[UploadOut]:
    """Store the file, record it as pending and queue its ingestion; never wait for it.

    202 with the document and its job (``Location: /v1/jobs/{id}``); 200 with the
    existing document when the same bytes were uploaded before (whatever its name and
    outcome: a failed upload keeps its reason, and no second copy is kept).
    """
    service, settings = _service(request), _settings(request)
    desk: UploadStore = request.app.state.uploads
    try:
        name = uploads.safe_name(data.filename)
        uploads.check_type(name, settings.ingest)
        received = await asyncio.to_thread(
            uploads.receive,
            cast(BinaryIO, data.file),
            desk.folder,
            name,
            int(settings.uploads.max_mb * MB),
            f"{settings.uploads.max_mb:g} MB ([uploads] max_mb)",
        )
    finally:
        await data.close()
    owner = request.state.get(KEY_ID)
    admitted = await desk.admit(_db(service), received, name, owner)
    doc = admitted.document
    job = None
    if doc.status == "pending":
        # New; or uploaded before and still queued or running (its live job); or left
        # pending by a job that failed as a whole (a model outage): tried again now.
        job = await desk.queue(_jobs(request), doc.id, doc.source)
    out = UploadOut(await _document(service, doc.id), job_dict(job) if job else None)
    if job is None:
        return Response(out, status_code=200)
    return Response(out, status_code=202, headers={"Location": f"/v1/jobs/{job.id}"})


def upload_handler(settings: Settings) -> HTTPRouteHandler:
    """The upload route with its own body limit: the file size, not ``[web] max_body_mb``."""
    return post(
        "/v1/documents",
        summary="Upload a document (multipart); it is ingested by a job",
        request_max_body_size=int(settings.uploads.max_mb * MB) + MULTIPART_SLACK,
        status_code=202,
        before_request=require_file_part,
    )(upload_document)


async def require_file_part(request: Request[Any, Any, Any]) -> None:
    """A 400 for a form without a file, before Litestar looks for one (and fails with 500).

    A part with an empty ``filename`` is not a file to the multipart parser, so it is
    refused here too. The parsed form is kept on the request: the body is read once.
    """
    form = await request.form()
    if not any(isinstance(value, UploadFile) for value in form.values()):
        raise InputError(
            "the upload has no file: send the document as a multipart part with a "
            'non-empty file name (Content-Disposition: form-data; name="file"; '
            'filename="guide.md")'
        )


@get("/v1/documents", summary="Documents, newest first, with status and failure reasons")
async def list_documents(
    request: Request[Any, Any, Any],
    limit: Annotated[int, QueryParameter(ge=1, le=200)] = 50,
    offset: Annotated[int, QueryParameter(ge=0, le=MAX_OFFSET)] = 0,
    status: Annotated[
        Literal["pending", "ok", "skipped", "failed"] | None, QueryParameter()
    ] = None,
) -> DocumentPage:
    service = _service(request)
    query, total_query = _with_counts(), select(func.count()).select_from(Document)
    if status is not None:
        query = query.where(Document.status == status)
        total_query = total_query.where(Document.status == status)
    query = query.order_by(Document.created_at.desc(), Document.id).limit(limit).offset(offset)
    async with _db(service)() as session:
        total = int(await session.scalar(total_query) or 0)
        rows = (await session.execute(query)).all()
    items = [_out(doc, count) for doc, count in rows]
    following = offset + len(items)
    return DocumentPage(
        items=items,
        total=total,
        limit=limit,
        offset=offset,
        next_offset=following if following < total else None,
    )


@get("/v1/documents/{doc_id:str}", summary="One document")
async def get_document(request: Request[Any, Any, Any], doc_id: FromPath[str]) -> DocumentOut:
    return await _document(_service(request), doc_id)


@delete(
    "/v1/documents/{doc_id:str}",
    summary="Delete a document, its chunks and vectors",
    status_code=200,
)
async def delete_document(request: Request[Any, Any, Any], doc_id: FromPath[str]) -> Deleted:
    service = _service(request)
    desk: UploadStore = request.app.state.uploads
    # Before the delete, wherever the job runs: one finishing afterwards would write the
    # document back.
    jobs = _jobs(request)
    if (live := await jobs.live_for(doc_id)) is not None:
        worker: Worker | None = request.app.state.worker
        await cancel_job(jobs, worker, live.id, "the document was deleted")
    deleted = await service.delete_document(doc_id)
    if deleted is None:
        raise NotFound(f"no document with id {doc_id}")
    source, lost = deleted
    # An upload's source is where its bytes are: the delete recorded them as garbage.
    removed = source in await desk.remove_garbage(_db(service), source)
    return Deleted(id=doc_id, chunks_deleted=len(lost), file_removed=removed)


@get("/v1/chunks/{chunk_id:str}", summary="One chunk with its document, pages and headings")
async def get_chunk(request: Request[Any, Any, Any], chunk_id: FromPath[str]) -> ChunkOut:
    service = _service(request)
    async with _db(service)() as session:
        row = (
            await session.execute(
                select(Chunk, Document.path, Document.title)
                .join(Document, Document.id == Chunk.document_id)
                .where(Chunk.id == chunk_id)
            )
        ).first()
    if row is None:
        raise NotFound(f"no chunk with id {chunk_id}")
    chunk, path, title = row
    return ChunkOut(
        id=chunk.id,
        document_id=chunk.document_id,
        document=path,
        title=title,
        ordinal=chunk.ordinal,
        page_start=chunk.page_start,
        page_end=chunk.page_end,
        heading_path=list(chunk.heading_path),
        text=chunk.text,
        recognised=chunk.recognised,
        confidence=chunk.confidence,
    )


@post("/v1/ingest", summary="Start ingesting the configured server-side folder", status_code=202)
async def start_ingest(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
    """202 with the job; 409 (naming the running job) if the folder is being ingested."""
    _service(request)  # a service without a database ingests nothing: 404
    settings = _settings(request)
    folder = settings.ingest_folder.expanduser().resolve()
    if not folder.is_dir():
        raise ConfigError(f"the ingest folder {folder} does not exist: set [web] ingest_folder")
    job = await _jobs(request).enqueue("folder", [folder])
    return Response(job_dict(job), status_code=202, headers={"Location": f"/v1/jobs/{job.id}"})


@get("/v1/jobs", summary="The latest ingestion jobs of every replica and worker, newest first")
async def list_jobs(request: Request[Any, Any, Any]) -> list[dict[str, Any]]:
    jobs: JobQueue | None = request.app.state.jobs
    if jobs is None:
        return []  # a service without a database runs no jobs
    return [job_dict(job) for job in await jobs.recent()]


@get("/v1/jobs/{job_id:str}", summary="An ingestion job's progress and result")
async def get_job(request: Request[Any, Any, Any], job_id: FromPath[str]) -> dict[str, Any]:
    job = await _jobs(request).get(job_id)
    if job is None:
        raise NotFound(f"no job with id {job_id}")
    return job_dict(job)


ROUTES = [
    list_documents,
    get_document,
    delete_document,
    get_chunk,
    start_ingest,
    list_jobs,
    get_job,
]
