"""Degraded mode's memory in the database (``refusal_memory``), for every replica.

One row per service that refuses (``workers-ai``), overwritten by whichever process met
the latest refusal, as a process's own memory is: a single upsert to write, a primary
key read to look. The error is kept by its code, Cloudflare's code, HTTP status and
message, which is all that the refusal's readers (retrieval, the chat chain, an
ingestion's refusal to start) tell from it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from rag.db.tables import RefusalMemory
from rag.db.upsert import insert
from rag.errors import CloudflareError, UpstreamUnavailable
from rag.retrieval.refusals import REFUSING, Refusal, RefusalStore

NAME = "workers-ai"
ERRORS: dict[str, type[CloudflareError]] = {cls.code: cls for cls in REFUSING}
"""The errors that refuse every call, by their code."""


class SharedRefusals(RefusalStore):
    def __init__(self, sessions: Callable[[], Any], name: str = NAME) -> None:
        self._sessions = sessions
        self.name = name

    async def save(self, refusal: Refusal) -> None:
        error = refusal.error
        row = {
            "name": self.name,
            "code": error.code,
            "reason": refusal.reason,
            "message": error.message,
            "cf_code": error.cf_code,
            "http_status": error.http_status,
            "until": refusal.until.timestamp(),
        }
        async with self._sessions() as session, session.begin():
            statement = insert(session, RefusalMemory).values(**row)
            await session.execute(
                statement.on_conflict_do_update(index_elements=[RefusalMemory.name], set_=row)
            )

    async def load(self) -> Refusal | None:
        async with self._sessions() as session:
            row: RefusalMemory | None = await session.scalar(
                select(RefusalMemory).where(RefusalMemory.name == self.name)
            )
        if row is None:
            return None
        error = ERRORS.get(row.code, UpstreamUnavailable)(
            row.message, cf_code=row.cf_code, http_status=row.http_status
        )
        return Refusal(row.reason, datetime.fromtimestamp(row.until, UTC), error)
