"""Uploads kept in an S3-compatible bucket (Amazon S3, Cloudflare R2, MinIO), through obstore.

Why obstore (``pyproject.toml`` has the sizes): its calls are native async, so no
request holds the event loop or a thread while bytes travel; it speaks every
S3-compatible store, conditional puts included; and it is one self-contained wheel.

A key is a file name under the URL's prefix; its location is ``s3://bucket/prefix/key``.
Credentials come from the environment only, and are passed to the client explicitly:
without them the client would look for an instance role on the network, and nothing
but the configured endpoint may be reached.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import obstore
from obstore.exceptions import AlreadyExistsError, BaseError
from obstore.store import S3Store

from rag.config import StorageSettings
from rag.errors import BlobStoreError, ConfigError, InputError, NotFound
from rag.ports import BlobStore

RETRIES = 2
"""Retries of a failed request (5xx, a dropped connection), within ``timeout_s`` overall."""


class BucketStore(BlobStore):
    def __init__(self, settings: StorageSettings, environ: Mapping[str, str]) -> None:
        parts = urlsplit(settings.url)
        bucket, prefix = parts.netloc, parts.path.strip("/")
        self.root = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        key_id = environ.get("AWS_ACCESS_KEY_ID", "")
        secret = environ.get("AWS_SECRET_ACCESS_KEY", "")
        if not key_id or not secret:
            raise ConfigError(
                f"[storage] url names a bucket ({self.root}): set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY in the environment (for R2, an R2 API token's S3 "
                "access key id and secret)"
            )
        endpoint = settings.endpoint_url.rstrip("/")
        config: dict[str, Any] = {
            "access_key_id": key_id,
            "secret_access_key": secret,
            # R2 wants "auto"; Amazon S3 without an endpoint needs a real region.
            "region": settings.region or ("auto" if endpoint else "us-east-1"),
        }
        if token := environ.get("AWS_SESSION_TOKEN"):
            config["token"] = token
        if endpoint:
            config["endpoint"] = endpoint
        timeout = timedelta(seconds=settings.timeout_s)
        self._store = S3Store(
            bucket,
            prefix=prefix or None,
            config=config,  # type: ignore[arg-type]  # a plain dict of S3Config's keys
            client_options={
                "timeout": timeout,
                "connect_timeout": min(timeout, timedelta(seconds=10)),
                "allow_http": endpoint.startswith("http://"),
            },
            retry_config={"max_retries": RETRIES, "retry_timeout": timeout},
        )

    def location(self, key: str) -> str:
        return f"{self.root}/{_checked(key)}"

    def key_of(self, location: str) -> str | None:
        head, sep, key = location.rpartition("/")
        return key if sep and head == self.root and key else None

    async def exists(self, key: str) -> bool:
        try:
            await obstore.head_async(self._store, _checked(key))
        except FileNotFoundError:
            return False
        except (BaseError, OSError) as exc:  # OSError: a refused or dropped connection
            raise _failed("look up", key, exc) from exc
        return True

    async def put(self, key: str, file: Path) -> bool:
        try:
            # "create" sends If-None-Match: *, so an object nobody recorded is never
            # replaced; it is one request (no multipart), within [uploads] max_mb.
            await obstore.put_async(self._store, _checked(key), file, mode="create")
        except AlreadyExistsError:
            return False
        except (BaseError, OSError) as exc:
            raise _failed("store", key, exc) from exc
        return True

    @asynccontextmanager
    async def fetched(self, key: str) -> AsyncIterator[Path]:
        folder = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="rag-upload-"))
        try:
            copy = folder / key
            await self._download(key, copy)
            yield copy
        finally:
            await asyncio.to_thread(shutil.rmtree, folder, True)

    async def _download(self, key: str, target: Path) -> None:
        try:
            result = await obstore.get_async(self._store, _checked(key))
            with await asyncio.to_thread(target.open, "xb") as out:
                async for block in result.stream():
                    await asyncio.to_thread(out.write, block)
        except FileNotFoundError as exc:
            raise NotFound(f"the uploaded file {key} is gone from {self.root}") from exc
        except (BaseError, OSError) as exc:
            raise _failed("read", key, exc) from exc

    async def delete(self, key: str) -> None:
        try:
            await obstore.delete_async(self._store, _checked(key))
        except FileNotFoundError:
            return
        except (BaseError, OSError) as exc:
            raise _failed("delete", key, exc) from exc

    async def keys(self) -> list[str]:
        names: list[str] = []
        try:
            async for batch in obstore.list(self._store):
                # Objects in "sub-folders" were not put here by the service.
                names.extend(meta["path"] for meta in batch if "/" not in meta["path"])
        except (BaseError, OSError) as exc:
            raise _failed("list", "", exc) from exc
        return sorted(names)


def _checked(key: str) -> str:
    # Belt and braces, as in a folder: a key is one name directly under the prefix.
    if "/" in key or "\\" in key or key in ("", ".", ".."):
        raise InputError("refusing a file name that leaves the bucket's prefix")
    return key


def _failed(what: str, key: str, exc: Exception) -> BlobStoreError:
    # obstore's message runs to a debug dump of the request: its first line says enough.
    first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
    target = f"{key} in the bucket" if key else "the bucket"
    return BlobStoreError(f"could not {what} {target} ([storage] url): {first}")
