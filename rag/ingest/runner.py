"""The ingestion job: discover, load, chunk, diff, embed, write, delete what vanished.

Idempotent and resumable: every document is written in one transaction, chunk ids
are derived from content, and text that already has a vector is never embedded again.
A run killed at any moment (even SIGKILL) leaves each document either as it was or
fully updated; the next run picks up where it stopped and duplicates nothing.

Files are read ahead while the embedder works, and embedded across documents in full
batches (``batching.Window``), then written one document after the other, in order.

The serving index is fed in one of two ways, chosen by the index:

* ``durable_outbox = True`` (Vectorize): the index writes a document owes are queued in
  ``index_outbox`` in the document's own transaction, and ``index.flush()`` sends them
  in batches across documents: when ``FLUSH_AT`` upserts or deletes are queued, and at
  the end of the run. A crash between the commit and the flush loses nothing: the rows
  wait for the next flush (``open_service`` drains leftovers at start).
* otherwise (the local ``NumpyIndex``): ``catch_up`` right after the commit, which
  applies this write (and any other process's) from ``index_log``, the same path every
  process follows. Nothing is queued, so the outbox stays empty on the local backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from rag.config import IngestSettings, JobSettings, OcrSettings
from rag.db.tables import utcnow
from rag.domain import ChunkDraft, IngestReport, LoadedDocument, Staged
from rag.errors import DocumentError, IndexMismatch
from rag.ingest import convert, store
from rag.ingest import ocr as ocr_engine
from rag.ingest.batching import Prepared, Ready, Window
from rag.ingest.chunker import chunk_document, chunker_fingerprint
from rag.ingest.discover import Discovery, Found, discover
from rag.ingest.loaders import load
from rag.ports import DocumentConverter, Embedder, Loader, Progress, UnitStore, VectorIndex

log = logging.getLogger(__name__)

Sessions = Callable[[], Any]
"""An ``async_sessionmaker``: calling it gives an ``AsyncSession`` context manager."""

FLUSH_AT = 1000
"""Queued upserts (or deletes) that make the runner flush a durable-outbox index: one
full Vectorize request (its batch size), so a 5,000-file run costs tens of requests."""


class Ingestor:
    def __init__(
        self,
        settings: IngestSettings,
        sessions: Sessions,
        embedder: Embedder,
        index: VectorIndex,
        progress: Progress | None = None,
        loader: Loader = load,
        converter: DocumentConverter | None = None,
        jobs: JobSettings | None = None,
        *,
        units: UnitStore | None = None,
        ocr: OcrSettings | None = None,
    ) -> None:
        self.settings = settings
        self.jobs = jobs or JobSettings()
        self.units = units
        """Computes the extractive answerer's units, stored with the chunks; None: none kept."""
        self.loader = loader
        self.ocr = ocr or OcrSettings()
        self.converter = converter
        """Reads scans, images and Office files first (``rag.ingest.convert``), when set."""
        self.sessions = sessions
        self.embedder = embedder
        self.index = index
        self.progress = progress or Progress()
        self.fingerprint = chunker_fingerprint(
            settings.chunk_tokens,
            settings.overlap_tokens,
            embedder.model_id,
            settings.max_chunk_chars,
        ) + _limits_tag(settings, converter, self.ocr)
        self.outbox: str | None = None
        """The model id index writes are queued under, or None: the index is written directly."""
        if index.durable_outbox:
            if index.model_id != embedder.model_id:
                raise IndexMismatch(
                    f"the index serves vectors of {index.model_id!r}, but ingestion embeds with "
                    f"{embedder.model_id!r}"
                )
            self.outbox = embedder.model_id
        self._upserts = 0
        self._deletes = 0

    async def run(self, paths: Sequence[Path | Staged]) -> IngestReport:
        began = time.perf_counter()
        found = discover(paths, self.settings.extensions)
        report = IngestReport(files=len(found.files), ignored=found.ignored)
        now = utcnow()
        stale_before = now - timedelta(seconds=self.jobs.stale_after_s)
        async with self.sessions() as session, session.begin():
            report.run_id = await store.start_run(
                session, [str(r) for r in found.roots], now, stale_before
            )
        beating = asyncio.ensure_future(self._beat(report.run_id))
        try:
            await self._run(found, report)
        finally:
            beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beating
        report.seconds = time.perf_counter() - began
        async with self.sessions() as session, session.begin():
            await store.finish_run(
                session, report.run_id, report.counts(), report.problems, report.seconds
            )
        return report

    async def _beat(self, run_id: int) -> None:
        """The run's heartbeat: while it beats, no other run takes this one for dead."""
        while True:
            await asyncio.sleep(self.jobs.heartbeat_s)
            try:
                async with self.sessions() as session, session.begin():
                    await store.beat_run(session, run_id, utcnow())
            except Exception as exc:
                # The ingestion goes on; a run of missed beats only mislabels the run.
                log.warning("heartbeat of ingest run %d not written: %s", run_id, exc)

    async def _run(self, found: Discovery, report: IngestReport) -> None:
        self.progress.start(len(found.files))
        # Reading, parsing and chunking the next files overlaps embedding and writing
        # these, so the model is rarely idle.
        window = Window(self.settings.batch_size)
        reading = asyncio.ensure_future(self._read(found.files, window, report))
        try:
            while (step := await window.next()) is not None:
                if isinstance(step, Ready):
                    outcome, chunks = await self._write(step, report)
                    self._settled(step.prepared.item, outcome, chunks, report)
                else:
                    await window.store(list(step), await self._embed(list(step.values())))
            await reading  # raises what stopped the reading, once what it read is written
        finally:
            if not reading.done():
                reading.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reading
        present = {item.source for item in found.files}
        for root in found.roots:
            await self._delete_vanished(str(root), present, report)
        await self._flush()

    async def _read(self, files: Sequence[Found], window: Window, report: IngestReport) -> None:
        """Prepare the files in turn into the window, as fast as it makes room."""
        try:
            for item in files:
                prepared = await self._prepare(item, report)
                if isinstance(prepared, Prepared):
                    await window.add(prepared)
                else:
                    self._settled(item, *prepared, report)
        finally:
            await window.close()

    def _settled(self, item: Found, outcome: str, chunks: int, report: IngestReport) -> None:
        setattr(report, outcome, getattr(report, outcome) + 1)
        self.progress.file_done(item.relpath, outcome, chunks)

    async def _prepare(self, item: Found, report: IngestReport) -> Prepared | tuple[str, int]:
        """Everything before embedding; a file that needs no embedding is settled here."""
        try:
            facts = await asyncio.to_thread(_facts, item)
        except OSError as exc:
            report.problems.append({"path": item.relpath, "status": "failed", "reason": str(exc)})
            return "failed", 0
        async with self.sessions() as session:
            doc = await store.find_document(session, facts.source)
            if (
                doc is not None
                and doc.sha256 == facts.sha256
                and doc.chunker == self.fingerprint
                and (
                    doc.status != "ok"
                    or (
                        await store.has_all_vectors(session, doc.id, self.embedder.model_id)
                        and (
                            self.units is None
                            or await store.has_all_units(session, doc.id, self.units.version)
                        )
                    )
                )
            ):
                if doc.status != "ok":
                    # Still unreadable: say so on every run, not only the first.
                    reason = f"{doc.reason} (unchanged since the last run)"
                    report.problems.append(
                        {"path": item.relpath, "status": doc.status, "reason": reason}
                    )
                return "unchanged", 0
        # An upload's pending record was never ingested: its first run makes it new.
        outcome = "new" if doc is None or doc.status == "pending" else "updated"
        try:
            loaded = await self._load(item, report)
        except DocumentError as exc:
            return await self._problem(item, facts, exc.status, exc.message, report)
        except Exception as exc:  # a loader bug must cost one file, never the batch
            log.exception("unexpected error while reading %s", item.path)
            reason = f"unexpected error while reading the file ({type(exc).__name__}: {exc})"
            return await self._problem(item, facts, "failed", reason, report)
        if loaded.recognised_pages:
            report.recognised += loaded.recognised_pages
            self.progress.recognised(loaded.recognised_pages)
        if loaded.notes:
            # Read, but not whole (a page over its OCR time limit): indexed, and said so.
            reason = "; ".join(loaded.notes)
            report.problems.append({"path": item.relpath, "status": "partial", "reason": reason})
        drafts = chunk_document(
            loaded,
            self.embedder.tokenizer,
            self.settings.chunk_tokens,
            self.settings.overlap_tokens,
            max_chars=self.settings.max_chunk_chars,
        )
        ids = store.chunk_ids(store.document_id(facts.source), drafts)
        async with self.sessions() as session:
            known = await store.known_vectors(
                session, [d.sha256 for d in drafts], self.embedder.model_id
            )
        return Prepared(item, facts, outcome, loaded, drafts, ids, known)

    async def _load(self, item: Found, report: IngestReport) -> LoadedDocument:
        if self.converter is None:
            return await asyncio.to_thread(self.loader, item.path, self.settings)

        def fell_back(reason: str) -> None:
            # The document still gets read: a note for the run, not a failure.
            log.warning("%s: %s", item.relpath, reason)
            report.problems.append({"path": item.relpath, "status": "fallback", "reason": reason})

        return await convert.load(
            item.path, self.settings, self.converter, self.loader, fell_back, self.ocr
        )

    async def _write(self, ready: Ready, report: IngestReport) -> tuple[str, int]:
        """Write a document whose every chunk has a vector, in one transaction."""
        prepared = ready.prepared
        facts, loaded, drafts, ids = prepared.facts, prepared.loaded, prepared.drafts, prepared.ids
        vectors = {cid: ready.vectors[d.sha256] for cid, d in zip(ids, drafts, strict=True)}
        if self._upserts and self._upserts + len(vectors) > FLUSH_AT:
            # Flush before, not after, the batch would overflow: each request goes out full.
            await self._flush()
        units = await self._units(ids, drafts)
        async with self.sessions() as session, session.begin():
            new_vectors = await store.without_vector(session, vectors, self.embedder.model_id)
            gone = await store.write_document(
                session,
                facts,
                title=loaded.title,
                media_type=loaded.media_type,
                pages=loaded.pages,
                fingerprint=self.fingerprint,
                drafts=drafts,
                ids=ids,
                new_vectors=new_vectors,
                model_id=self.embedder.model_id,
                dimension=self.embedder.dimension,
                outbox=self.outbox,
                units=units,
            )
        if self.outbox is not None:
            await self._queued(len(new_vectors), len(gone))
        else:
            await self.index.catch_up()
        report.chunks += len(drafts)
        report.embedded += ready.embedded
        report.reused += len(drafts) - ready.embedded
        # Counted with the document it was embedded for, not when its batch came back:
        # a batch runs ahead of the documents it serves, so the two counts would disagree.
        self.progress.embedded(ready.embedded)
        return prepared.outcome, len(drafts)

    async def _units(
        self, ids: Sequence[str], drafts: Sequence[ChunkDraft]
    ) -> store.UnitRows | None:
        """Answer units for the chunks that lack them (all of a new document's), computed
        before the document's transaction so it holds no lock while the model runs."""
        if self.units is None:
            return None
        async with self.sessions() as session:
            have = await store.with_units(session, ids, self.units.version)
        todo = [(cid, d.text) for cid, d in zip(ids, drafts, strict=True) if cid not in have]
        rows = await self.units.rows([text for _, text in todo]) if todo else []
        return store.UnitRows(
            self.units.version, {cid: row for (cid, _), row in zip(todo, rows, strict=True)}
        )

    async def _problem(
        self,
        item: Found,
        facts: store.DocumentFacts,
        status: str,
        reason: str,
        report: IngestReport,
    ) -> tuple[str, int]:
        report.problems.append({"path": item.relpath, "status": status, "reason": reason})
        async with self.sessions() as session, session.begin():
            lost = await store.record_problem(
                session, facts, status, reason, self.fingerprint, outbox=self.outbox
            )
        await self._deleted(lost)
        return ("skipped" if status == "skipped" else "failed"), 0

    async def _embed(self, texts: list[str]) -> list[bytes]:
        blobs: list[bytes] = []
        size = max(1, self.settings.batch_size)
        for start in range(0, len(texts), size):
            batch = texts[start : start + size]
            blobs.extend(store.to_blobs(await self.embedder.embed(batch, "passage")))
        return blobs

    async def _delete_vanished(self, root: str, present: set[str], report: IngestReport) -> None:
        async with self.sessions() as session:
            gone_docs = await store.vanished(session, root, present)
        for doc in gone_docs:
            async with self.sessions() as session, session.begin():
                current = await store.find_document(session, doc.source)
                if current is None:
                    continue
                lost = await store.delete_document(session, current, outbox=self.outbox)
            await self._deleted(lost)
            report.deleted += 1

    async def _deleted(self, lost: list[str]) -> None:
        if self.outbox is not None:
            await self._queued(0, len(lost))
        else:
            await self.index.catch_up()

    async def _queued(self, upserts: int, deletes: int) -> None:
        self._upserts += upserts
        self._deletes += deletes
        if self._upserts >= FLUSH_AT or self._deletes >= FLUSH_AT:
            await self._flush()

    async def _flush(self) -> None:
        """Send what the outbox holds (leftovers of a killed run included)."""
        if self.outbox is None:
            return
        await self.index.flush()
        self._upserts = self._deletes = 0


def _facts(item: Found) -> store.DocumentFacts:
    stat = item.path.stat()
    digest = hashlib.sha256()
    with item.path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return store.DocumentFacts(
        source=item.source,
        root=item.recorded_root,
        path=item.relpath,
        sha256=digest.hexdigest(),
        size=stat.st_size,
        mtime_ns=stat.st_mtime_ns,
    )


def _limits_tag(
    settings: IngestSettings, converter: DocumentConverter | None, ocr: OcrSettings
) -> str:
    # A file skipped for its size or a PDF that timed out deserves another try when the
    # limits change, and every file the converter reads when it comes or goes; folding
    # them into the fingerprint makes that happen. So does a scan skipped for want of OCR
    # once OCR is installed or turned on, or read with other settings. Passwords are
    # counted, never hashed into a stored value.
    limits = (
        f"{settings.max_file_mb}:{settings.pdf_timeout_s}:{settings.pdf_memory_mb}:"
        f"{settings.pdf_max_pages}:{len(settings.pdf_passwords)}:"
        f"{settings.office_max_unzipped_mb}:{settings.xlsx_max_cells}:"
        f"{converter.name if converter else 'local'}"
    )
    # Under the workers-ai engine, local OCR reads what the converter cannot: whether it
    # can is part of how files were read too.
    if ocr_engine.unavailable(convert.local_ocr(ocr)) is None:
        limits += (
            f":ocr:{ocr.engine}:{ocr.dpi}:{ocr.page_timeout_s}:{ocr.max_pages}:{ocr.min_confidence}"
        )
    return ":" + hashlib.sha256(limits.encode()).hexdigest()[:8]
