"""Runs and their per-question results in one database, ``eval.data_dir/runs.db``.

One store for every dataset, so ``rag eval list``, ``show`` and ``compare`` see all runs;
it is migrated with the project's migrations like any other database of ours.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
from sqlalchemy import select

from rag.db.engine import create_engine, session_factory, upgrade
from rag.db.tables import EvalResult, EvalRun
from rag.errors import InputError, NotFound
from rag.evaluate.results import QuestionResult, RunRecord


def new_run_id(now: datetime | None = None) -> str:
    """UTC minute plus 6 random hex digits: short, and sorts in time order."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{moment:%Y%m%d-%H%M}-{secrets.token_hex(3)}"


def runs_url(data_dir: str | Path) -> str:
    return f"sqlite+aiosqlite:///{Path(data_dir) / 'runs.db'}"


class RunStore:
    def __init__(self, sessions: Any) -> None:
        self.sessions = sessions

    async def save(self, run: RunRecord) -> None:
        async with self.sessions() as session, session.begin():
            session.add(
                EvalRun(
                    id=run.run_id,
                    dataset=run.dataset,
                    dataset_sha256=run.dataset_sha256,
                    created_at=datetime.fromisoformat(run.created_at).replace(tzinfo=None),
                    questions=len(run.results),
                    fingerprint=run.config,
                    metrics=run.metrics,
                )
            )
            await session.flush()  # no relationship() to order the inserts: the run first
            session.add_all(
                EvalResult(
                    run_id=run.run_id,
                    question_id=r.id,
                    ordinal=ordinal,
                    question=r.question,
                    answerable=r.answerable,
                    result=msgspec.to_builtins(r),
                )
                for ordinal, r in enumerate(run.results)
            )

    async def runs(self, limit: int = 50) -> list[EvalRun]:
        """Newest first."""
        async with self.sessions() as session:
            rows = await session.scalars(
                select(EvalRun).order_by(EvalRun.created_at.desc(), EvalRun.id.desc()).limit(limit)
            )
            return list(rows)

    async def load(self, run_id: str) -> RunRecord:
        """A run by id or by an unambiguous prefix of it."""
        async with self.sessions() as session:
            matches = list(
                await session.scalars(
                    select(EvalRun).where(EvalRun.id.startswith(run_id, autoescape=True))
                )
            )
            if not matches:
                raise NotFound(f"no evaluation run {run_id!r}: see `rag eval list`")
            if len(matches) > 1 and not any(r.id == run_id for r in matches):
                ids = ", ".join(sorted(r.id for r in matches)[:5])
                raise InputError(f"{run_id!r} matches several runs ({ids}); give more of the id")
            run = next((r for r in matches if r.id == run_id), matches[0])
            rows = await session.scalars(
                select(EvalResult).where(EvalResult.run_id == run.id).order_by(EvalResult.ordinal)
            )
            results = [msgspec.convert(row.result, QuestionResult) for row in rows]
        return RunRecord(
            run_id=run.id,
            dataset=run.dataset,
            dataset_sha256=run.dataset_sha256,
            created_at=run.created_at.replace(tzinfo=UTC).isoformat(timespec="seconds"),
            config=run.fingerprint,
            metrics=run.metrics,
            results=results,
        )


@asynccontextmanager
async def open_store(data_dir: str | Path) -> AsyncIterator[RunStore]:
    url = runs_url(data_dir)
    await upgrade(url)
    engine = create_engine(url)
    try:
        yield RunStore(session_factory(engine))
    finally:
        await engine.dispose()
