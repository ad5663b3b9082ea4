"""How close NumpyIndex gets to the memory-bandwidth floor, and how fast it loads.

    python benchmarks/search_bench.py                # 10k and 100k at 768-d
    python benchmarks/search_bench.py --dims 384,768 --big   # add 1M (3 GB at 768-d)

Prints, per index size: query latency p50/p95 of NumpyIndex.query_sync, of a bare
``m @ q`` + argpartition on the same matrix, and the floor (matrix bytes / measured read
bandwidth); then the time to load 100k x 768 vectors from a migrated SQLite database
and the peak RSS of a process that does only that.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

from rag.backends.local.vector_index import NumpyIndex
from rag.db.engine import create_engine, upgrade_sync

K = 10


def bandwidth() -> float:
    """Bytes per second moved by ``np.copyto`` over 1 GiB (read + write), best of five.

    A plain ``sum`` is single-threaded and compute-bound here (about 14 GB/s against 32
    for the copy), so it would set the floor too low.
    """
    source = np.ones(1 << 28, dtype=np.float32)
    target = np.empty_like(source)
    best = min(_timed(lambda: np.copyto(target, source)) for _ in range(5))
    return 2 * source.nbytes / best


def _timed(fn: object) -> float:
    assert callable(fn)
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


def percentiles(samples: list[float]) -> str:
    p50, p95 = np.percentile(np.asarray(samples) * 1000, [50, 95])
    return f"p50 {p50:7.2f} ms  p95 {p95:7.2f} ms"


def bench_size(n: int, d: int, bandwidth: float, queries: int) -> None:
    rng = np.random.default_rng(n + d)
    index = NumpyIndex(d, "bench", capacity=n)
    block = 100_000
    for start in range(0, n, block):
        m = rng.standard_normal((min(block, n - start), d), dtype=np.float32)
        m /= np.linalg.norm(m, axis=1, keepdims=True)
        index.upsert_sync([f"c{i}" for i in range(start, start + len(m))], m)
    matrix = index._matrix[:n]  # the same memory the index scans
    qs = rng.standard_normal((queries, d), dtype=np.float32)
    qs /= np.linalg.norm(qs, axis=1, keepdims=True)
    for q in qs[:3]:  # warm up: page faults, BLAS threads
        index.query_sync(q, K)
    ours, bare = [], []
    for q in qs:
        ours.append(_timed(lambda q=q: index.query_sync(q, K)))
        bare.append(_timed(lambda q=q: np.argpartition(matrix @ q, n - K)[n - K :]))
    floor_ms = matrix.nbytes / bandwidth * 1000
    print(
        f"{n:>9,} x {d}: NumpyIndex {percentiles(ours)} | bare m@q+argpartition "
        f"{percentiles(bare)} | floor {floor_ms:6.2f} ms "
        f"(p50 {np.median(ours) * 1000 / floor_ms:.2f}x floor)"
    )


def build_db(path: Path, n: int, d: int) -> None:
    upgrade_sync(f"sqlite+aiosqlite:///{path}")
    rng = np.random.default_rng(0)
    with sqlite3.connect(path) as con:
        con.execute(
            "INSERT INTO documents (id, source, root, path, title, media_type, sha256, size,"
            " mtime_ns, status, chunker) VALUES ('d', 's', 'r', 'p', '', '', 'x', 1, 0, 'ok', '')"
        )
        for start in range(0, n, 10_000):
            m = rng.standard_normal((min(10_000, n - start), d), dtype=np.float32)
            m /= np.linalg.norm(m, axis=1, keepdims=True)
            ids = [f"chunk-{i:08d}" for i in range(start, start + len(m))]
            con.executemany(
                "INSERT INTO chunks (id, document_id, ordinal, text, char_start, char_end,"
                " heading_path, token_count, sha256) VALUES (?, 'd', 0, 'text', 0, 4, '[]', 1,"
                " 'h')",
                [(i,) for i in ids],
            )
            con.executemany(
                "INSERT INTO vectors VALUES (?, 'bench', ?, ?)",
                [(i, d, v.tobytes()) for i, v in zip(ids, m, strict=True)],
            )


def peak_rss() -> int:
    """VmHWM: unlike ru_maxrss it is not inherited from the parent across fork and exec."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


async def load_only(path: Path, d: int, repeats: int) -> None:
    """Runs in a fresh process so its peak RSS is the load's own."""
    rss_before = psutil.Process().memory_info().rss
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        index = await NumpyIndex.load(engine, "bench", d)
        times.append(time.perf_counter() - began)
        rss_loaded = psutil.Process().memory_info().rss
        del index
    await engine.dispose()
    peak = peak_rss()
    print(
        f"load {len(times)}x: first {times[0]:.3f} s, best {min(times):.3f} s | RSS before "
        f"{rss_before / 2**20:.0f} MiB, with index {rss_loaded / 2**20:.0f} MiB, "
        f"peak {peak / 2**20:.0f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dims", default="768", help="comma-separated, e.g. 384,768")
    parser.add_argument("--big", action="store_true", help="also 1M vectors (3 GB at 768-d)")
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--load-n", type=int, default=100_000)
    parser.add_argument("--load-only", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load_only:
        asyncio.run(load_only(args.load_only, int(args.dims), repeats=3))
        return
    measured = bandwidth()
    print(f"memory bandwidth (np.copyto over 1 GiB, best of 5): {measured / 1e9:.1f} GB/s")
    sizes = [10_000, 100_000] + ([1_000_000] if args.big else [])
    for d in (int(x) for x in args.dims.split(",")):
        for n in sizes:
            bench_size(n, d, measured, args.queries if n < 1_000_000 else 20)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        began = time.perf_counter()
        build_db(path, args.load_n, 768)
        print(f"built {args.load_n:,} x 768 database in {time.perf_counter() - began:.1f} s")
        script = [sys.executable, __file__, "--load-only", str(path), "--dims", "768"]
        subprocess.run(script, check=True)


if __name__ == "__main__":
    main()
