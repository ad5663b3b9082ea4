"""A server whose upload jobs never finish, to be killed mid-job (run by test_upload_crash.py).

Usage: upload_victim.py TMP PORT_FILE. Serves the real app (fake embedder) on an
ephemeral loopback port, written to PORT_FILE once listening.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
from pathlib import Path

import uvicorn
from conftest import QUICK_JOBS, make_settings
from fakes import FakeEmbedder

from rag.config import IngestSettings
from rag.domain import LoadedDocument
from rag.ingest.loaders import load
from rag.registry import Overrides
from rag.service import open_service
from rag.web import create_app

NEVER = threading.Event()


def stuck(path: Path, settings: IngestSettings) -> LoadedDocument:
    NEVER.wait(timeout=120)  # until the test kills the process
    return load(path, settings)


async def main(tmp: Path, port_file: Path) -> None:
    settings = make_settings(tmp, uploads={"folder": str(tmp / "uploads")}, jobs=QUICK_JOBS)
    overrides = Overrides(embedder=FakeEmbedder(), loader=stuck)
    async with open_service(settings, overrides) as service:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)  # connections wait in the backlog until uvicorn accepts them
        config = uvicorn.Config(
            create_app(settings, service=service), log_config=None, log_level="warning"
        )
        await asyncio.to_thread(port_file.write_text, str(sock.getsockname()[1]))
        await uvicorn.Server(config).serve(sockets=[sock])


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2])))
