"""Which files an ingest run looks at, and under which root each one is recorded."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from rag.domain import Staged
from rag.errors import InputError


@dataclass(frozen=True, slots=True)
class Found:
    path: Path
    """Absolute, resolved: the file read."""
    root: Path
    """The folder named on the command line (or the file's folder for a single file)."""
    staged: Staged | None = None
    """Set when ``path`` is a copy of a file kept elsewhere: its identity is the original's."""

    @property
    def relpath(self) -> str:
        if self.staged is not None:
            return self.staged.name
        return self.path.relative_to(self.root).as_posix()

    @property
    def source(self) -> str:
        """What the document is recorded under (``documents.source``)."""
        return self.staged.source if self.staged is not None else str(self.path)

    @property
    def recorded_root(self) -> str:
        return self.staged.root if self.staged is not None else str(self.root)


@dataclass(frozen=True, slots=True)
class Discovery:
    files: list[Found]
    roots: list[Path]
    """Folders walked in full: documents under them that were not found are deleted."""
    ignored: int
    """Files with an extension no loader reads."""


def discover(paths: Sequence[Path | Staged], extensions: Iterable[str]) -> Discovery:
    """Walk folders (sorted, hidden entries skipped) and accept named files as they are."""
    wanted = {e.lower() for e in extensions}
    files: dict[Path, Found] = {}
    roots: list[Path] = []
    ignored = 0
    for given in paths:
        if isinstance(given, Staged):
            # Like a file named explicitly: read whatever its extension, no root walked.
            files.setdefault(given.copy, Found(given.copy, given.copy.parent, given))
            continue
        path = given.expanduser().resolve()
        if path.is_dir():
            roots.append(path)
            for file in _walk(path):
                if file.suffix.lower() in wanted:
                    files.setdefault(file, Found(file, path))
                else:
                    ignored += 1
        elif path.is_file():
            # A file named explicitly is read whatever its extension: the loader decides.
            files.setdefault(path, Found(path, path.parent))
        else:
            raise InputError(f"no such file or folder: {given}")
    return Discovery(sorted(files.values(), key=lambda f: str(f.path)), roots, ignored)


def _walk(folder: Path) -> Iterator[Path]:
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_symlink() and entry.is_dir():
            continue  # a link back up the tree would loop forever
        if entry.is_dir():
            yield from _walk(entry)
        elif entry.is_file():
            yield entry.resolve()
