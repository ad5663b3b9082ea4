"""One process writing through its own service, then reporting what its index holds.

Run by test_index_follow.py and benchmarks/index_follow_bench.py, not by pytest:

    python tests/index_replica.py TMP FOLDER serve    # ingest, delete, edit; then wait
    python tests/index_replica.py TMP FOLDER ingest   # what `rag ingest` does, then exit

A ``serve`` process prints "ready" once its writes are done, waits for a line on stdin
(every writer has finished), catches up once and prints the chunk ids its in-memory
index holds as one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from conftest import make_settings
from fakes import FakeEmbedder
from sqlalchemy import select

from rag.backends.local.vector_index import NumpyIndex
from rag.db.tables import Document
from rag.registry import Overrides
from rag.service import open_service


async def main(tmp: Path, folder: Path, mode: str) -> None:
    # Small batches: each process commits many small transactions, interleaved with the others'.
    settings = make_settings(tmp, ingest={"batch_size": 4})
    async with open_service(settings, Overrides(embedder=FakeEmbedder())) as service:
        await service.ingest([folder])
        if mode == "ingest":
            return
        files = sorted(await asyncio.to_thread(lambda: list(folder.iterdir())))
        async with service.sessions() as session:
            doc_id = await session.scalar(select(Document.id).where(Document.path == files[2].name))
        assert doc_id is not None
        await service.delete_document(doc_id)  # deleted through the API, file kept: ...
        for path in files[::3]:
            path.unlink()
        await service.ingest([folder])  # ... so it comes back here, as vanished files go
        edited = files[1]  # an edited file: some chunks go, new ones come
        edited.write_text(edited.read_text() + "\n\nA paragraph added later.\n")
        await service.ingest([folder])
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)  # "go": every writer is done
        index = service.index
        assert isinstance(index, NumpyIndex)
        await index.catch_up()
        print(json.dumps(sorted(index.ids())), flush=True)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]))
