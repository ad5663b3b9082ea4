"""Deleting an upload's bytes: recorded with the change that makes them garbage, then retried.

A document's row and its bytes live in two systems, so no transaction covers both. The
deletion is therefore written to ``blob_deletions`` in the transaction that deletes the
document (or records an upload as failed), and ``drain`` removes the bytes afterwards.
A store that refuses or cannot be reached leaves the row: the failure is logged with
its location, counted in ``attempts``, and tried again by the next delete and at the
next start, while the upload desk never takes the object for an unrecorded upload.
"""

from __future__ import annotations

import logging

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from rag.db.tables import BlobDeletion
from rag.errors import RagError
from rag.ports import BlobStore

log = logging.getLogger(__name__)

BATCH = 100
"""Deletions tried per drain: a long outage's backlog goes a batch per delete or start."""


async def schedule(session: AsyncSession, location: str) -> None:
    """Record, in the caller's transaction, that the bytes at ``location`` must go."""
    if await session.get(BlobDeletion, location) is None:
        session.add(BlobDeletion(location=location, attempts=0))


async def pending(sessions: async_sessionmaker[AsyncSession]) -> set[str]:
    """Locations whose bytes are garbage but may still be there."""
    async with sessions() as session:
        return set(await session.scalars(select(BlobDeletion.location)))


async def drain(
    sessions: async_sessionmaker[AsyncSession], blobs: BlobStore, first: str | None = None
) -> set[str]:
    """Delete the bytes recorded as garbage, ``first`` first; the locations gone now.

    Stops at the first refusal: a store out of reach would refuse the rest too, each
    after ``[storage] timeout_s``, and the request waiting on this must not pay for all.
    """
    async with sessions() as session:
        rows = list(
            await session.scalars(
                select(BlobDeletion.location).order_by(BlobDeletion.created_at).limit(BATCH)
            )
        )
    if first in rows:
        rows.remove(first)
        rows.insert(0, first)
    gone: set[str] = set()
    for location in rows:
        key = blobs.key_of(location)
        if key is None:
            # Kept by a store that is no longer configured: only its operator can reach it.
            log.warning(
                "an upload's bytes at %s are not in the configured store ([storage] url "
                "changed?): left in place, delete them by hand",
                location,
            )
        else:
            try:
                await blobs.delete(key)
            except (RagError, OSError) as exc:
                why = exc.message if isinstance(exc, RagError) else str(exc)
                log.warning(
                    "could not delete an upload's bytes at %s (will retry): %s", location, why
                )
                await _failed(sessions, location, why)
                break
            gone.add(location)
        async with sessions() as session, session.begin():
            await session.execute(delete(BlobDeletion).where(BlobDeletion.location == location))
    return gone


async def _failed(sessions: async_sessionmaker[AsyncSession], location: str, why: str) -> None:
    async with sessions() as session, session.begin():
        await session.execute(
            update(BlobDeletion)
            .where(BlobDeletion.location == location)
            .values(attempts=BlobDeletion.attempts + 1, last_error=why[:500])
        )
