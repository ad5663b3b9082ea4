"""The error tree. Every error the service raises on purpose is a ``RagError``.

Each class knows the HTTP status it maps to, whether retrying may help, and a short
machine-readable ``code``; the message is written for the person who reads it.

    RagError
    ├── ConfigError            bad or missing settings (start-up)
    │   ├── ModelNotFound         Cloudflare has no such model (5007/3042); names the id
    │   └── AuthError             Cloudflare refused the token (401/403, 10000)
    ├── InputError             a request or command argument that cannot be served (400)
    ├── NotFound               an id that does not exist (404)
    ├── DocumentError          one file could not be read; ingestion records it and goes on
    │   ├── UnsupportedDocument   skipped: not a format we read, empty, too large, no text
    │   │   └── NoTextLayer          a PDF with no text to extract (a scan) nor recognise
    │   └── UnreadableDocument    failed: corrupt, encrypted, timed out, conversion failed
    │       └── ConversionFailed     the remote converter gave no Markdown for the file
    ├── ModelError             an embedder, reranker or chat model failed (502)
    │   ├── ModelUnavailable      model files missing or corrupt (503)
    │   └── CloudflareError       a Workers AI / Vectorize call failed (carries cf_code,
    │       │                     http_status, retry_after)
    │       ├── CapacityError        3040 or any other 429: retryable
    │       ├── DailyLimitExceeded   3036, the day's free neurons are spent: not retryable
    │       ├── RequestTooLarge      3006 / 413
    │       ├── UpstreamTimeout      408, 3007, 3008, 3046, or our own timeout: retryable
    │       ├── UpstreamUnavailable  5xx or a broken connection: retryable
    │       ├── StreamTruncated      a stream that broke or ended without [DONE]
    │       ├── ModelNotFound        (also a ConfigError, above)
    │       └── AuthError            (also a ConfigError, above)
    ├── IndexMismatch          stored vectors do not fit the configured model (409)
    ├── JobConflict            another ingestion job holds the folder; names it (409)
    ├── JobStopped             a running job was cancelled or taken up by another worker
    └── StorageError           the database or the data folder failed (503); names the cause
        ├── DatabaseBusy          another writer held the lock too long: retryable (503)
        ├── DiskFull              no room left on the disk (507)
        ├── ReadOnlyStorage       the database or its folder cannot be written (503)
        └── BlobStoreError        the bucket uploads are kept in failed (503): retryable
"""

from __future__ import annotations


class RagError(Exception):
    status_code = 500
    retryable = False
    code = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(RagError):
    code = "config"


class InputError(RagError):
    status_code = 400
    code = "bad_request"


class NotFound(RagError):
    status_code = 404
    code = "not_found"


class DocumentError(RagError):
    """A file that ingestion records with a reason instead of stopping the batch."""

    status = "failed"
    code = "document"


class UnsupportedDocument(DocumentError):
    status = "skipped"
    code = "unsupported_document"


class NoTextLayer(UnsupportedDocument):
    """A PDF without text: a scan that OCR (or a remote converter) may still read, or one
    it has read and found nothing legible in. Skipped, not failed: nothing went wrong, the
    file holds no text to index (a blank page, a photo, a drawing)."""


class UnreadableDocument(DocumentError):
    status = "failed"
    code = "unreadable_document"


class ConversionFailed(UnreadableDocument):
    code = "conversion_failed"


class ModelError(RagError):
    status_code = 502
    retryable = True
    code = "model"


class ModelUnavailable(ModelError):
    status_code = 503
    retryable = False
    code = "model_unavailable"


class IndexMismatch(RagError):
    status_code = 409
    code = "index_mismatch"


class JobConflict(RagError):
    """A queued or running ingestion job already holds the target (``rag.jobs``)."""

    status_code = 409
    code = "job_running"

    def __init__(self, message: str, job_id: str) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.headers = {"Location": f"/v1/jobs/{job_id}"}  # where to follow the running one


class JobStopped(RagError):
    """A running job learned at its heartbeat that it must stop: someone cancelled it, or
    another worker took it up (its heartbeat had been missing for too long)."""

    status_code = 409
    code = "job_stopped"


class CloudflareError(ModelError):
    """A Cloudflare REST call failed; ``cf_code`` and ``http_status`` are Cloudflare's own.

    ``retryable`` says whether the same request may succeed later; the client retries
    only those, and a stream only before its first byte. ``retry_after`` is the wait
    Cloudflare asked for, in seconds, if it asked.
    """

    retryable = False
    code = "cloudflare"

    def __init__(
        self,
        message: str,
        *,
        cf_code: int | None = None,
        http_status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.cf_code = cf_code
        self.http_status = http_status
        self.retry_after = retry_after


class CapacityError(CloudflareError):
    status_code = 429
    retryable = True
    code = "capacity"


class DailyLimitExceeded(CloudflareError):
    # Retrying cannot help before 00:00 UTC; the fallback chain moves on instead.
    status_code = 429
    code = "daily_limit"


class RequestTooLarge(CloudflareError):
    status_code = 413
    code = "request_too_large"


class UpstreamTimeout(CloudflareError):
    status_code = 504
    retryable = True
    code = "upstream_timeout"


class UpstreamUnavailable(CloudflareError):
    status_code = 503
    retryable = True
    code = "upstream_unavailable"


class StreamTruncated(CloudflareError):
    """The answer stream broke, or ended without ``[DONE]``: what arrived is incomplete.

    Never retried by the client (output had started); asking again may well work.
    """

    status_code = 502
    retryable = True
    code = "stream_truncated"


class ModelNotFound(ConfigError, CloudflareError):
    """The configured model id does not exist on Workers AI: a settings problem."""

    status_code = 500
    retryable = False
    code = "model_not_found"


class AuthError(ConfigError, CloudflareError):
    """Cloudflare refused the credentials or the account lacks access to the resource."""

    status_code = 502
    retryable = False
    code = "auth"


class StorageError(RagError):
    """The database or the data folder failed under a write that had to succeed (an
    upload, an ingest, start-up); ``rag.db.failures`` decides which one and why.

    Answers never raise these: their own writes are best-effort.
    """

    status_code = 503
    code = "storage"


class DatabaseBusy(StorageError):
    retryable = True
    code = "database_busy"


class DiskFull(StorageError):
    status_code = 507
    code = "disk_full"


class ReadOnlyStorage(StorageError):
    code = "read_only"


class BlobStoreError(StorageError):
    """The blob store (``rag.storage``: an S3-compatible bucket) refused a request or could
    not be reached; the message names the operation, never a credential."""

    retryable = True
    code = "blob_store"
