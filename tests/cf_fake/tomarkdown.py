"""The fake's Markdown conversion: ``POST /accounts/{id}/ai/tomarkdown``.

Cloudflare publishes no schema for this route in the OpenAPI subset the other routes
are checked against, so the request is checked here by what its documentation says: a
``multipart/form-data`` body of one or more ``files`` parts, each a named file, and at
most one ``conversionOptions`` part holding a JSON object; nothing else. The answer is
the documented list, one entry per file: ``name``, ``mimeType``, ``format`` and then
``tokens`` and ``data``, or ``error``.

What a file converts to is scripted by name (``markdown``, ``errors``); any other file
converts to a short Markdown text naming it.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
from dataclasses import dataclass, field
from email.message import Message
from typing import Any

import httpx


@dataclass
class Converter:
    markdown: dict[str, str] = field(default_factory=dict)
    """File name -> the Markdown Cloudflare answers for it."""
    errors: dict[str, str] = field(default_factory=dict)
    """File name -> the per-file error Cloudflare answers for it (``format: error``)."""
    received: list[tuple[str, str, bytes]] = field(default_factory=list)
    """(file name, media type, bytes) of every file converted."""

    def answer(self, request: httpx.Request, schema_errors: list[str]) -> list[dict[str, Any]]:
        """The result list, or ``ValueError`` (a 400) for a request the docs do not allow."""
        problems, files = _parts(request)
        if problems:
            schema_errors.extend(f"POST /ai/tomarkdown: {problem}" for problem in problems)
            raise ValueError(problems[0])
        result = []
        for name, media_type, data in files:
            self.received.append((name, media_type, data))
            entry: dict[str, Any] = {"id": f"file-{len(self.received)}", "name": name}
            entry["mimeType"] = media_type
            if name in self.errors:
                result.append({**entry, "format": "error", "error": self.errors[name]})
                continue
            text = self.markdown.get(name, f"# {name}\n\nA file of {len(data)} bytes.\n")
            result.append(
                {**entry, "format": "markdown", "tokens": len(text.split()), "data": text}
            )
        return result


def _parts(request: httpx.Request) -> tuple[list[str], list[tuple[str, str, bytes]]]:
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data") or "boundary=" not in content_type:
        return [f"the body must be multipart/form-data, not {content_type!r}"], []
    head = f"Content-Type: {content_type}\r\n\r\n".encode()
    parser = email.parser.BytesParser(policy=email.policy.HTTP)
    message = parser.parsebytes(head + request.content)
    problems: list[str] = []
    files: list[tuple[str, str, bytes]] = []
    options = 0
    for part in message.iter_parts() if message.is_multipart() else []:
        assert isinstance(part, Message)
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        body = payload if isinstance(payload, bytes) else b""
        if name == "files":
            filename = part.get_filename()
            if not filename:
                problems.append("a files part without a file name")
            files.append((filename or "", part.get_content_type(), body))
        elif name == "conversionOptions":
            options += 1
            try:
                if not isinstance(json.loads(body), dict):
                    problems.append("conversionOptions must be a JSON object")
            except ValueError:
                problems.append("conversionOptions is not JSON")
        else:
            problems.append(f"unknown form field {name!r}")
    if not files:
        problems.append("no files part")
    if options > 1:
        problems.append("conversionOptions given more than once")
    return problems, files
