"""Uploads kept in a folder of this machine: the embedded default, one machine only."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from rag.errors import InputError, NotFound
from rag.ports import BlobStore


class FolderStore(BlobStore):
    """A key is a file name directly in ``folder``; its location is the file's absolute path
    (what ``documents.source`` of an upload has always held, so older records still fit)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder.expanduser().resolve()
        self.root = str(self.folder)

    def location(self, key: str) -> str:
        return str(self._path(key))

    def key_of(self, location: str) -> str | None:
        path = Path(location)
        return path.name if path.is_absolute() and path.parent == self.folder else None

    def _path(self, key: str) -> Path:
        path = self.folder / key
        # Belt and braces: whatever the key, the file lands directly in the folder.
        if "/" in key or "\\" in key or key in ("", ".", "..") or (
            path.resolve().parent != self.folder
        ):
            raise InputError("refusing a file name that leaves the upload folder")
        return path

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(os.path.lexists, self._path(key))

    async def put(self, key: str, file: Path) -> bool:
        return await asyncio.to_thread(_link, file, self._path(key))

    @asynccontextmanager
    async def fetched(self, key: str) -> AsyncIterator[Path]:
        path = self._path(key)
        if not await asyncio.to_thread(path.is_file):
            raise NotFound(f"the uploaded file {key} is gone from {self.folder}")
        yield path  # already a local file: the loaders read it where it is

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(unlink, self._path(key))

    async def keys(self) -> list[str]:
        return await asyncio.to_thread(_names, self.folder)


def _link(file: Path, target: Path) -> bool:
    """Give ``file``'s bytes the name ``target``, never replacing a file; False when taken.

    A hard link fails when the name exists, so a file put there by anyone else survives;
    and the bytes appear under their name whole, or not at all.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(file, target)
    except FileExistsError:
        return False
    return True


def unlink(path: Path) -> None:
    """Remove a file; one already gone is no error."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _names(folder: Path) -> list[str]:
    """Stored files: hidden names are temporary files of uploads still being received."""
    names = []
    with contextlib.suppress(FileNotFoundError):
        for entry in folder.iterdir():
            if entry.is_file() and not entry.is_symlink() and not entry.name.startswith("."):
                names.append(entry.name)
    return sorted(names)
