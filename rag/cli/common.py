"""What every ``rag`` command shares: settings, the two consoles, messages and exit codes.

Exit codes, one policy for every command:

* **0**: success.
* **1**: runtime failure: the command was understood but did not succeed: a model,
  Cloudflare or index failure, a database that cannot be opened or written (a full
  disk, a read-only folder: ``StorageError``; the settings are right, the storage under
  them is not, and the same command works once it is), an answer stream that ended in
  an error, an unexpected exception (``RAG_DEBUG=1`` shows its traceback), a
  ``--fail-under``/``--fail-over``/``--baseline`` shortfall, a ``--wait`` that timed
  out, drift ``rag audit`` left.
* **2**: usage, input or configuration error: click's own usage errors, bad or missing
  settings and credentials (``ConfigError``), an argument that cannot be served
  (``InputError``: an empty question, a missing path or dataset), a named thing that
  does not exist (``NotFound``: a key id, a stored run, the Vectorize index).
* **130**: interrupted with Ctrl-C.

Every command runs its work through ``run`` (or ``running``, for several steps on one
event loop), so an exception becomes a message on stderr and the code above in one place.

Messages print literally: rich reads ``[...]`` as markup and ``:name:`` as an emoji, so
text that comes from data or exceptions is always wrapped in a ``Text`` (``literal``);
only the fixed prefix is styled.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click
from rich.console import Console
from rich.text import Text

from rag.config import Settings, load_settings
from rag.errors import ConfigError, InputError, NotFound, RagError
from rag.redact import mask_passwords

if TYPE_CHECKING:
    from rag.service import RagService

T = TypeVar("T")

FAILURE = 1
USAGE = 2
INTERRUPTED = 130

out = Console()
err = Console(stderr=True)


def exit_code(exc: RagError) -> int:
    """The policy above, for an error the service raised on purpose."""
    return USAGE if isinstance(exc, ConfigError | InputError | NotFound) else FAILURE


def literal(text: str, style: str = "") -> Text:
    """``text`` exactly as it is: never read as markup or emoji codes."""
    return Text(text, style=style)


def say(message: str, *, console: Console = out) -> None:
    console.print(literal(message), soft_wrap=True)


def note(prefix: str, message: str, style: str = "yellow") -> None:
    """``prefix`` styled, then ``message`` as it is (a URL's password masked), on stderr."""
    err.print(Text.assemble((prefix, style), " ", mask_passwords(message)), soft_wrap=True)


def error(message: str, prefix: str = "error:") -> None:
    note(prefix, message, "bold red")


def fail(message: str) -> NoReturn:
    """A runtime failure the command itself noticed."""
    error(message)
    sys.exit(FAILURE)


def report(exc: RagError) -> int:
    """Print ``exc``'s message; returns its exit code."""
    error(exc.message, "configuration error:" if isinstance(exc, ConfigError) else "error:")
    return exit_code(exc)


def _debugging() -> bool:
    return os.environ.get("RAG_DEBUG", "") not in ("", "0")


@contextmanager
def failures() -> Iterator[None]:
    """Turns what escapes a command into a message on stderr and the policy's exit code."""
    try:
        yield
    except RagError as exc:
        sys.exit(report(exc))
    except KeyboardInterrupt:
        sys.exit(INTERRUPTED)
    except Exception as exc:
        # A bug or a broken environment: one readable line; RAG_DEBUG=1 shows the traceback.
        if _debugging():
            raise
        first = str(exc).splitlines()[0] if str(exc) else ""
        error(f"{type(exc).__name__}: {first}", "unexpected error:")
        say("run again with RAG_DEBUG=1 to see where it happened", console=err)
        sys.exit(FAILURE)


@contextmanager
def running() -> Iterator[asyncio.Runner]:
    """One event loop for a command that runs several steps (``rag chat``)."""
    with failures(), asyncio.Runner() as runner:
        yield runner


def run(work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a command's async work to its end."""
    with running() as runner:
        result = runner.run(work())
    return result


def load(config_path: str | None) -> Settings:
    """The one place the command line reads its settings."""
    with failures():
        loaded = load_settings(config_path)
    return loaded


def settings(ctx: click.Context) -> Settings:
    """The settings ``rag`` loaded for this invocation."""
    loaded = ctx.find_root().obj
    assert isinstance(loaded, Settings)
    return loaded


async def index_is_empty(service: RagService) -> bool:
    return not (await service.health())["chunks"]
