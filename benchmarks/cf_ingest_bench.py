"""Bulk ingestion on the Cloudflare backend against the in-process fake, with latency.

The fake (tests/cf_fake/) answers like Workers AI and Vectorize, validating every request
against Cloudflare's schemas; here each embedding call takes ``--embed-ms`` and each
Vectorize call ``--vectorize-ms``, so the figure is what one ingestion worker sustains
when the network, not the local pipeline, is the cost. It prints chunks per minute, the
requests made, and whether the run stayed inside the API's 1,200 requests per 5 minutes.

    python benchmarks/cf_ingest_bench.py [--docs 400] [--embed-ms 150] [--vectorize-ms 300]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import msgspec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the fake and the test doubles live with the tests

from cf_fake import FakeCloudflare  # noqa: E402
from fakes import FakeEmbedder  # noqa: E402

from rag.registry import Overrides  # noqa: E402
from rag.service import open_service  # noqa: E402

WORDS = [
    "invoice",
    "ledger",
    "refund",
    "policy",
    "retention",
    "backup",
    "replica",
    "latency",
    "index",
    "vector",
    "chunk",
    "document",
    "upload",
    "quota",
    "budget",
    "neuron",
    "gateway",
    "token",
    "cache",
    "answer",
    "citation",
    "source",
]


def write_corpus(folder: Path, docs: int) -> None:
    """``docs`` Markdown files of six ~150-word sections: about 6 chunks each."""
    folder.mkdir(parents=True)
    for d in range(docs):
        sections = []
        for s in range(6):
            words = " ".join(WORDS[(d * 7 + s * 3 + i) % len(WORDS)] for i in range(150))
            sections.append(f"## Section {s} of document {d}\n\n{words} (document {d}).")
        (folder / f"doc{d:04d}.md").write_text("\n\n".join(sections) + "\n", encoding="utf-8")


async def run(args: argparse.Namespace, workdir: Path) -> None:
    corpus = workdir / "corpus"
    write_corpus(corpus, args.docs)
    fake = FakeCloudflare(
        path_latency_s={"/ai/run/": args.embed_ms / 1000, "/vectorize/": args.vectorize_ms / 1000}
    )
    raw = msgspec.to_builtins(fake.settings())
    raw["data_dir"] = str(workdir / "data")
    settings = msgspec.convert(raw, type(fake.settings()))
    overrides = Overrides(
        environ={"CLOUDFLARE_API_TOKEN": fake.token},
        cloudflare_transport=fake.transport,
        answer_embedder=FakeEmbedder(),  # the extractive fallback; not what is measured
    )
    async with open_service(settings, overrides) as service:
        began = time.perf_counter()
        report = await service.ingest([corpus])
        seconds = time.perf_counter() - began
    kinds = Counter(
        "embed" if r.path.startswith("/ai/run/") else "vectorize " + r.path.rsplit("/", 1)[-1]
        for r in fake.requests
        if r.path.startswith(("/ai/run/", "/vectorize/"))
    )
    per_minute = report.chunks / seconds * 60
    requests = sum(kinds.values())
    per_5min = requests / seconds * 300
    print(
        f"{platform.machine()}, Python {platform.python_version()}; "
        f"embed {args.embed_ms} ms, Vectorize {args.vectorize_ms} ms per call"
    )
    print(
        f"{report.files} files, {report.chunks} chunks in {seconds:.1f} s: "
        f"{per_minute:,.0f} chunks/min per worker"
    )
    print(f"requests: {dict(kinds)} = {requests}; at this pace {per_5min:,.0f} per 5 min")
    print(
        f"within the 1,200 per 5 minutes: {per_5min <= 1200}; fake violations: "
        f"{len(fake.violations())}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=400)
    parser.add_argument("--embed-ms", type=float, default=150.0)
    parser.add_argument("--vectorize-ms", type=float, default=300.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(args, Path(tmp)))


if __name__ == "__main__":
    main()
