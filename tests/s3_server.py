"""A real S3-compatible server on loopback for the tests: moto's server mode.

One server per test run (``s3_server`` in conftest.py), one new bucket per test (``s3``).
It speaks the S3 REST API over HTTP on 127.0.0.1 and keeps objects in memory: the
bucket store talks to it exactly as to R2 or MinIO, signatures and conditional puts
included. moto's state lives in the process, so a second server started on the same
port (``restart``) serves the same buckets: a test can take the store away and back.
"""

from __future__ import annotations

import logging
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
from moto.server import ThreadedMotoServer

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test-key-id", "AWS_SECRET_ACCESS_KEY": "test-secret"}
"""What the tests' bucket store signs with (moto accepts any)."""


@dataclass
class S3Server:
    port: int
    server: ThreadedMotoServer

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def new_bucket(self) -> str:
        name = f"rag-{uuid.uuid4().hex[:12]}"
        response = httpx.put(f"{self.endpoint}/{name}")
        response.raise_for_status()
        return name

    def storage(self, bucket: str, prefix: str = "uploads", **more: object) -> dict[str, object]:
        """The ``[storage]`` section for ``bucket``."""
        return {"url": f"s3://{bucket}/{prefix}", "endpoint_url": self.endpoint, **more}

    def stop(self) -> None:
        self.server.stop()

    def restart(self) -> None:
        self.server = _serve(self.port)


@contextmanager
def running() -> Iterator[S3Server]:
    # Werkzeug logs every request at INFO; the tests' own logs are what matters.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    port = _free_port()
    server = S3Server(port, _serve(port))
    try:
        yield server
    finally:
        server.stop()


def _serve(port: int) -> ThreadedMotoServer:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return server


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
