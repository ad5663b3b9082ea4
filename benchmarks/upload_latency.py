"""How long an upload holds its request, and how long until its document is searchable.

    python benchmarks/upload_latency.py --mb 2        # the real local embedder, real server

Serves the app (uvicorn on 127.0.0.1, a fresh database under a temporary folder) and
uploads one generated text file of ``--mb`` megabytes, then a 42-byte file. Prints,
for each, the time to the HTTP answer and the time until the document left ``pending``
(for a server that ingests inside the request, the two are the same).
"""

from __future__ import annotations

import argparse
import random
import tempfile
import threading
import time
from pathlib import Path

import httpx
import msgspec
import uvicorn

from rag.config import Settings
from rag.web import create_app

WORDS = [
    "zebra",
    "parcel",
    "depot",
    "warehouse",
    "route",
    "schedule",
    "driver",
    "invoice",
    "pallet",
    "customs",
    "border",
    "quota",
    "ledger",
    "audit",
    "report",
    "manual",
    "policy",
    "handbook",
    "release",
    "snapshot",
    "restore",
    "backup",
    "the",
    "a",
    "of",
    "to",
    "and",
    "in",
    "is",
    "for",
    "with",
    "on",
    "that",
    "by",
    "this",
    "be",
    "are",
    "from",
    "or",
    "as",
    "at",
]


def text(megabytes: float, seed: int = 7) -> bytes:
    rng = random.Random(seed)
    out: list[str] = []
    size = 0
    while size < megabytes * 2**20:
        sentence = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 20))).capitalize()
        paragraph = sentence + (".\n\n" if rng.random() < 0.2 else ". ")
        out.append(paragraph)
        size += len(paragraph)
    return "".join(out).encode()


def timed_upload(client: httpx.Client, name: str, body: bytes) -> tuple[float, float, str]:
    began = time.perf_counter()
    response = client.post("/v1/documents", files={"file": (name, body)}, timeout=3600)
    answered = time.perf_counter() - began
    response.raise_for_status()
    data = response.json()
    doc = data.get("document", data)  # 201 (ingested in the request) or 202 (a job)
    while doc["status"] == "pending":
        time.sleep(0.2)
        fetched = client.get(f"/v1/documents/{doc['id']}")
        fetched.raise_for_status()
        doc = fetched.json()
    return answered, time.perf_counter() - began, doc["status"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=2.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = msgspec.convert(
            {
                "data_dir": tmp,
                "ingest": {"corpus": str(Path(tmp) / "none")},
                "auth": {"rate_limit_per_minute": 0},  # the poll below is no abuse
            },
            Settings,
        )
        server = uvicorn.Server(
            uvicorn.Config(create_app(settings), host="127.0.0.1", port=0, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            big = text(args.mb)
            for name, body in ((f"big-{args.mb:g}mb.txt", big), ("tiny.txt", b"x" * 41 + b"\n")):
                answered, settled, status = timed_upload(client, name, body)
                print(
                    f"{name}: {len(body):,} bytes, answered in {answered:.2f} s, "
                    f"{status} after {settled:.1f} s"
                )
        server.should_exit = True
        thread.join()


if __name__ == "__main__":
    main()
