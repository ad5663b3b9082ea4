"""Two replicas and a worker over PostgreSQL behave as one service (the deployment proof).

Runs benchmarks/deployment_proof.py as an operator would, on the suite's PostgreSQL
server and the fake embedder (its real processes: `rag db upgrade`, two `rag serve`, one
`rag worker`), smaller than by hand, and checks the figures it reports.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from pg import Cluster

ROOT = Path(__file__).resolve().parents[1]
WITHIN_S = 5.0
LIMIT = 10
DOCS = 4


def test_replicas_and_a_worker_converge_share_jobs_and_the_rate_limit(pg_cluster: Cluster) -> None:
    url = pg_cluster.new_database(migrated=False)  # the proof runs the release step
    try:
        run = subprocess.run(
            [
                sys.executable, str(ROOT / "benchmarks" / "deployment_proof.py"),
                "--fake-embedder", "--database-url", url, "--json",
                "--docs", str(DOCS), "--rate-limit", str(LIMIT), "--within", str(WITHIN_S),
                # The worker's batches take a while, so the folder's job is still held
                # when the second replica is asked for it.
                "--worker-pause", "0.1", "--folder-files", "24",
            ],
            capture_output=True, text=True, timeout=600, cwd=ROOT, check=False,
        )  # fmt: skip
    finally:
        pg_cluster.drop(url)
    assert run.stdout, run.stderr
    report = json.loads(run.stdout.splitlines()[-1])
    assert run.returncode == 0 and report["failures"] == [], run.stdout + run.stderr[-3000:]

    # Every upload is cited by both replicas, and every deleted one by neither, in seconds.
    assert len(report["seen_after_s"]) == 2 * DOCS
    assert len(report["forgotten_after_s"]) == 2 * (DOCS // 2)
    for delay in report["seen_after_s"] + report["forgotten_after_s"]:
        assert math.isfinite(delay) and delay <= WITHIN_S, report
    background = report["background"]
    assert background["asked"] > 0 and background["done"] == background["asked"], report
    assert report["background_errors"] == []

    conflict = report["conflict"]
    assert (conflict["first"], conflict["second"]) == (202, 409) and conflict["names_first"]

    rate = report["rate"]  # one client, 2 x LIMIT requests alternating between replicas
    assert sum(rate["allowed"]) == LIMIT and sum(rate["refused"]) == LIMIT, rate
    assert all(rate["refused"]), "each replica refused some: the count is shared"

    together = report["simultaneous"]
    assert together["asked"] == 12 and together["done"] == 12 and together["errors"] == []
    assert together["answers"] == 1
