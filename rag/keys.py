"""API keys: created once, stored only as a hash, verified on every ``/v1`` request.

A key is ``rag_`` plus 32 random bytes (URL-safe base64), shown once at creation.
The database keeps its sha256 and a short prefix to tell keys apart in listings.

Why a plain sha256 and not a slow password hash (bcrypt, scrypt, argon2): those exist
to make guessing *low-entropy* secrets expensive after a database leak. A 256-bit
random key cannot be guessed however fast the hash is, and a fast hash keeps the
check on every request to microseconds.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update

from rag.db.tables import ApiKey
from rag.errors import InputError, NotFound

PREFIX = "rag_"
_SHOWN = 8
"""Characters of the key kept in clear (``rag_`` and 4 random ones): enough to tell
keys apart, 24 bits of 256, so no help to a guesser."""
TOUCH_EVERY_S = 60.0
"""``last_used_at`` is written at most this often per key: not a write per request."""


@dataclass(frozen=True, slots=True)
class KeyInfo:
    id: int
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    @classmethod
    def of(cls, row: ApiKey) -> KeyInfo:
        return cls(row.id, row.name, row.prefix, row.created_at, row.last_used_at, row.revoked_at)


def new_key() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class KeyStore:
    """Create, list, revoke and verify keys in the ``api_keys`` table."""

    def __init__(self, sessions: Any) -> None:
        self.sessions = sessions
        self._touched: dict[int, float] = {}

    async def create(self, name: str) -> tuple[KeyInfo, str]:
        """A new key and its record; the key itself is never stored or shown again."""
        name = name.strip()
        if not name or len(name) > 100:
            raise InputError("a key name must be 1 to 100 characters")
        key = new_key()
        row = ApiKey(name=name, prefix=key[:_SHOWN], key_hash=digest(key))
        async with self.sessions() as session, session.begin():
            session.add(row)
            await session.flush()
            await session.refresh(row)
        return KeyInfo.of(row), key

    async def list(self) -> list[KeyInfo]:
        async with self.sessions() as session:
            rows = await session.scalars(select(ApiKey).order_by(ApiKey.id))
            return [KeyInfo.of(row) for row in rows]

    async def revoke(self, key_id: int) -> KeyInfo:
        """Refuse the key from now on; revoking twice keeps the first time."""
        async with self.sessions() as session, session.begin():
            row = await session.get(ApiKey, key_id)
            if row is None:
                raise NotFound(f"no API key with id {key_id}")
            if row.revoked_at is None:
                row.revoked_at = _now()
            return KeyInfo.of(row)

    async def active_count(self) -> int:
        return sum(1 for key in await self.list() if not key.revoked)

    async def verify(self, key: str) -> int | None:
        """The id of the active key ``key`` is, or None: unknown and revoked look alike."""
        wanted = digest(key)
        async with self.sessions() as session:
            row = await session.scalar(select(ApiKey).where(ApiKey.key_hash == wanted))
        # The lookup compares hashes of the caller's input, whose bytes a caller cannot
        # steer, so its timing leaks nothing; the explicit constant-time compare guards
        # against a database whose index lookup is not exact (collation, truncation).
        if row is None or not hmac.compare_digest(row.key_hash, wanted):
            return None
        if row.revoked_at is not None:
            return None
        key_id: int = row.id
        await self._touch(key_id)
        return key_id

    async def _touch(self, key_id: int) -> None:
        now = time.monotonic()
        if now - self._touched.get(key_id, float("-inf")) < TOUCH_EVERY_S:
            return
        self._touched[key_id] = now
        async with self.sessions() as session, session.begin():
            await session.execute(
                update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=_now())
            )
