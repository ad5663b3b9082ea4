"""rag as it is deployed, on this machine: PostgreSQL, `rag serve` replicas, `rag worker`s.

Every part is the real program in its own process on 127.0.0.1: the PostgreSQL server is
tests/pg.py's throwaway cluster, and each replica or worker is the `rag` command itself,
with its settings in ``RAG_*`` variables as an operator would set them (README.md,
"Deployment"). With ``fake_embedder`` the processes run through tests/rag_on_fake.py,
which swaps the local model for the test suite's bag-of-words embedder: the model's
start and inference take most of two shared cores, which a test cannot wait for. Used
by deployment_proof.py (and tests/test_deployment.py) and answer_load.py.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
sys.path.insert(0, str(TESTS))  # the throwaway cluster lives with the tests

from pg import Cluster  # noqa: E402

START_S = 120.0
"""How long a replica may take to answer /readyz: the real model's start on two busy
cores takes tens of seconds."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_postgres() -> tuple[Cluster, str]:
    """A throwaway PostgreSQL server and the URL of an empty database ``rag`` on it."""
    if why := Cluster.missing():
        raise SystemExit(why)
    cluster = Cluster()
    cluster.start()
    cluster.sql("CREATE DATABASE rag")
    return cluster, cluster.url("rag")


class Process:
    """One `rag ARGS` process; its output goes to files (a full pipe would stall it)."""

    def __init__(self, name: str, command: list[str], env: Mapping[str, str], work: Path) -> None:
        self.name = name
        self.out, self.err = work / f"{name}.out", work / f"{name}.err"
        with self.out.open("w") as out, self.err.open("w") as err:
            self.process = subprocess.Popen(
                command, env=dict(env), cwd=work, stdout=out, stderr=err
            )

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM (a worker hands its jobs back, a server drains), then SIGKILL."""
        if self.running():
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout)

    def said(self) -> str:
        return self.err.read_text(errors="replace")[-3000:]


class Replica(Process):
    def __init__(self, name: str, command: list[str], env: Mapping[str, str], work: Path) -> None:
        self.port = free_port()
        super().__init__(name, [*command, "--port", str(self.port)], env, work)
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = START_S) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if not self.running():
                raise RuntimeError(f"{self.name} exited at start: {self.said()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} was not ready in {timeout:.0f} s: {self.said()}")
            try:
                ready = httpx.get(f"{self.url}/readyz", timeout=2)
                if ready.status_code == 200 and ready.json()["status"] == "ok":
                    return
            except httpx.HTTPError:
                pass  # not listening yet
            time.sleep(0.1)


class Deployment:
    """Processes sharing one database and one blob store, each with its own data folder
    (what a replica keeps on its own disk: an upload waiting for its checks)."""

    def __init__(
        self,
        work: Path,
        database_url: str,
        *,
        fake_embedder: bool,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self.work = work
        self.fake_embedder = fake_embedder
        outside = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
        self.env = {
            **outside,
            "PYTHONPATH": str(TESTS),
            "RAG_DATABASE__URL": database_url,
            "RAG_STORAGE__URL": str(work / "blobs"),  # the shared folder every process reaches
            "RAG_JOBS__RUN_IN_SERVER": "false",
            **(settings or {}),
        }
        self.processes: list[Process] = []

    def command(self, *args: str, pause: float = 0.0) -> list[str]:
        """`rag ARGS`, or the same on the fake embedder taking ``pause`` s a batch."""
        if self.fake_embedder:
            return [sys.executable, str(TESTS / "rag_on_fake.py"), str(pause), *args]
        return [str(Path(sys.executable).with_name("rag")), *args]

    def _env(self, name: str, extra: Mapping[str, str]) -> dict[str, str]:
        return {**self.env, "RAG_DATA_DIR": str(self.work / name), **extra}

    def run(self, *args: str, timeout: float = 1800) -> str:
        """A command run to its end (the release step `rag db upgrade`, an ingest)."""
        done = subprocess.run(
            self.command(*args), env=self._env("release", {}), cwd=self.work,
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"rag {' '.join(args)} failed: {done.stderr[-3000:]}")
        return done.stdout + done.stderr

    def replica(self, name: str, **extra: str) -> Replica:
        command = self.command("serve", "--no-ingest")
        started = Replica(name, command, self._env(name, extra), self.work)
        self.processes.append(started)
        return started

    def worker(self, name: str, *args: str, pause: float = 0.0, **extra: str) -> Process:
        command = self.command("worker", *args, pause=pause)
        started = Process(name, command, self._env(name, extra), self.work)
        self.processes.append(started)
        return started

    def close(self) -> None:
        for process in reversed(self.processes):
            process.stop()
