"""The error tree. Every error the service raises on purpose is a ``RagError``.

Each class knows the HTTP status it maps to, whether retrying may help, and a short
machine-readable ``code``; the message is written for the person who reads it.

    RagError
    ├── ConfigError            bad or missing settings (start-up)
    ├── InputError             a request or command argument that cannot be served (400)
    ├── NotFound               an id that does not exist (404)
    ├── DocumentError          one file could not be read; ingestion records it and goes on
    │   ├── UnsupportedDocument   skipped: not a format we read, empty, too large
    │   └── UnreadableDocument    failed: corrupt, encrypted, no text layer, timed out
    ├── ModelError             an embedder, reranker or chat model failed (502)
    │   └── ModelUnavailable      model files missing or corrupt (503)
    └── IndexMismatch          stored vectors do not fit the configured model (409)
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


class UnreadableDocument(DocumentError):
    status = "failed"
    code = "unreadable_document"


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
