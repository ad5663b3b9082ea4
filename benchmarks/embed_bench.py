"""Raw throughput of the local ONNX embedder, in passages per second.

    python benchmarks/embed_bench.py                  # chunks of corpus/, else generated text
    python benchmarks/embed_bench.py docs/ --words 150 --batch-sizes 1,8,32 --threads 1

Passages are ~``--words``-word windows of the files under the given folders (default
``corpus/``). Also prints the latency of a one-sentence query.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import numpy as np

from rag.backends.local.embedder import OnnxEmbedder
from rag.config import LocalSettings

VOCABULARY = (
    "index vector query answer source document chunk model embedding search token "
    "the a of to and in is for with on that by this be are from or as at"
)
TEXT_SUFFIXES = {".md", ".txt", ".rst", ".html", ".htm", ".markdown"}


def passages_from(folders: list[Path], words: int, limit: int) -> list[str]:
    out: list[str] = []
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if path.suffix.lower() not in TEXT_SUFFIXES or not path.is_file():
                continue
            tokens = path.read_text(encoding="utf-8", errors="replace").split()
            out.extend(" ".join(tokens[i : i + words]) for i in range(0, len(tokens), words))
    return out[:limit]


def generated(words: int, count: int) -> list[str]:
    rng = random.Random(0)
    vocab = VOCABULARY.split()
    return [" ".join(rng.choice(vocab) for _ in range(words)) for _ in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folders", nargs="*", type=Path, default=[Path("corpus")])
    parser.add_argument("--words", type=int, default=150)
    parser.add_argument("--limit", type=int, default=256, help="passages to embed")
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--threads", type=int, default=0, help="0: every core")
    args = parser.parse_args()
    texts = passages_from([f for f in args.folders if f.is_dir()], args.words, args.limit)
    origin = "files"
    if not texts:
        texts, origin = generated(args.words, args.limit), "generated text"
    began = time.perf_counter()
    embedder = OnnxEmbedder.from_settings(LocalSettings(threads=args.threads))
    print(
        f"{embedder.model_id} ({embedder.dimension}-d) loaded in "
        f"{time.perf_counter() - began:.2f} s; {len(texts)} passages from {origin}, "
        f"{np.mean([embedder.tokenizer.count(t) for t in texts]):.0f} tokens on average"
    )
    embedder.embed_sync(texts[:8])  # warm up
    for size in (int(s) for s in args.batch_sizes.split(",")):
        embedder.batch_size = size
        began = time.perf_counter()
        embedder.embed_sync(texts)
        seconds = time.perf_counter() - began
        print(f"batch {size:>3}: {len(texts) / seconds:6.1f} passages/s ({seconds:.2f} s)")
    query = ["How many sources does an answer cite by default?"]
    samples = []
    for _ in range(30):
        began = time.perf_counter()
        embedder.embed_sync(query, "query")
        samples.append(time.perf_counter() - began)
    print(f"one short query: p50 {np.median(samples) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
