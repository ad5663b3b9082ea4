"""How every process's in-memory index follows the change log (``index_log``).

    python benchmarks/index_follow_bench.py             # 100k x 384, 1,000 new vectors
    python benchmarks/index_follow_bench.py --n 200000  # a bigger index

Prints three figures:

1. Convergence: two serving processes and a third ingesting process (what `rag ingest`
   does) write into one SQLite database at once (ingest, delete, edit; the fake
   embedder); then each serving process catches up and reports its chunk ids against
   the database: missing and extra, both 0 when it works.
2. Applying a delta: another process commits 1,000 new vectors (rows in ``vectors`` and
   ``index_log``, as ``rag.ingest.store`` writes them) to a database of n x 384; the time
   ``catch_up`` takes to read and apply them, over several rounds, against a full reload.
3. A burst: 100 requests' ``catch_up`` at once after such a write: how many passes
   applied it and how many reloaded, and the process's RSS before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
from search_bench import build_db

from rag.backends.local.vector_index import NumpyIndex
from rag.db.engine import create_engine, upgrade_sync

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
D = 384
DELTA = 1000


def convergence(tmp: Path) -> None:
    sys.path.insert(0, str(TESTS))
    from conftest import make_settings
    from test_resume import make_folder

    settings = make_settings(tmp)
    upgrade_sync(settings.database_url)
    script = str(TESTS / "index_replica.py")
    procs = []
    for name, mode in (("a", "serve"), ("b", "serve"), ("c", "ingest")):
        make_folder(tmp / name, 40)
        cmd = [sys.executable, script, str(tmp), str(tmp / name), mode]
        procs.append(
            subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=TESTS
            )
        )
    began = time.perf_counter()
    for proc in procs[:2]:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    procs[2].communicate(timeout=300)
    written = time.perf_counter() - began
    with sqlite3.connect(Path(settings.data_dir) / "rag.db") as db:
        stored = {r[0] for r in db.execute("SELECT chunk_id FROM vectors")}
    db.close()
    print(f"convergence: 3 processes wrote {len(stored):,} vectors in {written:.1f} s")
    for name, proc in zip("ab", procs[:2], strict=False):
        out, _ = proc.communicate("go\n", timeout=120)
        held = set(json.loads(out))
        print(
            f"  serving process {name}: holds {len(held):,}, missing {len(stored - held)}, "
            f"extra {len(held - stored)}"
        )


def outside_write(path: Path, generation: int, first: int, rng: np.random.Generator) -> None:
    """What another process's ingest commits: vectors and their log rows, one generation."""
    m = rng.standard_normal((DELTA, D), dtype=np.float32)
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    ids = [f"new-{i:08d}" for i in range(first, first + DELTA)]
    with sqlite3.connect(path) as con:
        con.executemany(
            "INSERT INTO chunks (id, document_id, ordinal, text, char_start, char_end,"
            " heading_path, token_count, sha256) VALUES (?, 'd', 0, 'text', 0, 4, '[]', 1, 'h')",
            [(i,) for i in ids],
        )
        con.executemany(
            "INSERT INTO vectors VALUES (?, 'bench', ?, ?)",
            [(i, D, v.tobytes()) for i, v in zip(ids, m, strict=True)],
        )
        con.execute(
            "INSERT INTO meta (key, value) VALUES ('index_generation', ?) ON CONFLICT (key)"
            " DO UPDATE SET value = excluded.value",
            (str(generation),),
        )
        con.executemany(
            "INSERT INTO index_log (generation, chunk_id, op) VALUES (?, ?, 'add')",
            [(generation, i) for i in ids],
        )
    con.close()


async def deltas(path: Path, n: int, rounds: int) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    rng = np.random.default_rng(1)
    try:
        index = await NumpyIndex.load(engine, "bench", D)
        assert index.follower is not None
        times, growing = [], []
        for r in range(1, rounds + 1):
            outside_write(path, r, r * DELTA, rng)
            capacity = len(index._matrix)
            began = time.perf_counter()
            await index.catch_up()
            took = time.perf_counter() - began
            # The round that outgrows the matrix copies it (amortised: O(log n) times).
            (growing if len(index._matrix) != capacity else times).append(took)
        assert len(index) == n + rounds * DELTA and index.follower.reloads == 0
        began = time.perf_counter()
        await index.reload()
        reload_s = time.perf_counter() - began
        print(
            f"apply {DELTA:,} new vectors to {n:,} x {D}: median "
            f"{statistics.median(times) * 1000:.1f} ms, max {max(times) * 1000:.1f} ms "
            f"over {len(times)} rounds; {len(growing)} round(s) that grew the matrix: "
            f"{', '.join(f'{t * 1000:.0f} ms' for t in growing) or '-'} "
            f"(a full reload instead: {reload_s * 1000:.0f} ms)"
        )

        rss = psutil.Process().memory_info().rss
        outside_write(path, rounds + 1, (rounds + 1) * DELTA, rng)
        before = (index.follower.deltas, index.follower.reloads)
        began = time.perf_counter()
        await asyncio.gather(*(index.catch_up() for _ in range(100)))
        took = time.perf_counter() - began
        applied = index.follower.deltas - before[0]
        reloaded = index.follower.reloads - before[1]
        print(
            f"100 requests at once after an outside write: {applied} pass applied it, "
            f"{reloaded} reloads, {took * 1000:.1f} ms; RSS {rss / 2**20:.0f} -> "
            f"{psutil.Process().memory_info().rss / 2**20:.0f} MiB"
        )
    finally:
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="vectors in the index")
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "convergence").mkdir()
        convergence(Path(tmp) / "convergence")
        path = Path(tmp) / "big.db"
        build_db(path, args.n, D)
        asyncio.run(deltas(path, args.n, args.rounds))


if __name__ == "__main__":
    main()
