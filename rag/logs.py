"""Log output that an attacker can neither flood nor forge.

``RepeatFilter``: the same message over and over (1,000 sockets failing with "Too many
open files", a client retrying a bad request in a loop) is printed once per interval
and then counted; the next time it gets through it carries "repeated N times". A flood
costs a line per interval instead of a traceback per event, and nothing is hidden.

``PasswordFilter``: a database URL's password, wherever a record carries one, is
masked (``rag.redact``).

``printable``: text from a request (a path, a file name) with its control characters
escaped, so a ``%0A`` in a URL cannot end a log line and start a forged one.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from rag.redact import mask_passwords

GUARDED_LOGGERS = ("", "rag", "uvicorn", "uvicorn.error", "asyncio")
"""Where floods come from: the app, the server and the event loop's accept errors."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def printable(text: str) -> str:
    """``text`` with control characters (line breaks included) as ``\\xNN`` / ``\\uNNNN``."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


@dataclass
class _Seen:
    window_start: float
    suppressed: int = 0


class RepeatFilter(logging.Filter):
    """Lets a message through once per ``interval_s``; counts the repeats in between.

    Two records are the same message when they come from the same logger at the same
    level with the same text and the same kind of exception. At most ``max_keys``
    distinct messages are tracked; past that, expired ones are forgotten first.
    """

    def __init__(
        self,
        interval_s: float = 60.0,
        max_keys: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.interval_s = interval_s
        self.max_keys = max_keys
        self.clock = clock
        self._seen: dict[tuple[str, int, str, str], _Seen] = {}
        # Handlers run in whatever thread logs (uvicorn's, to_thread workers).
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        exc_type = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else ""
        key = (record.name, record.levelno, _text(record), exc_type)
        now = self.clock()
        with self._lock:
            seen = self._seen.get(key)
            if seen is None:
                self._remember(key, now)
                return True
            if now - seen.window_start < self.interval_s:
                seen.suppressed += 1
                return False
            repeated, seen.window_start, seen.suppressed = seen.suppressed, now, 0
        if repeated:
            record.msg = f"{_text(record)} [repeated {repeated} times in the last interval]"
            record.args = None
        return True

    def _remember(self, key: tuple[str, int, str, str], now: float) -> None:
        if len(self._seen) >= self.max_keys:
            expired = [k for k, s in self._seen.items() if now - s.window_start >= self.interval_s]
            for old in expired or list(self._seen)[: self.max_keys // 2]:
                del self._seen[old]
        self._seen[key] = _Seen(now)


def _text(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except (TypeError, ValueError):  # a bad format string still deserves its line
        return str(record.msg)


class PasswordFilter(logging.Filter):
    """Masks a URL's password in a record's message and traceback (``rag.redact``).

    Whoever logs a driver's error or an exception does not check it for a database URL;
    this does, once, for every record the guarded handlers write.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        text = _text(record)
        if (masked := mask_passwords(text)) != text:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            trace = logging.Formatter().formatException(record.exc_info)
            if (masked := mask_passwords(trace)) != trace:
                record.exc_text = masked  # the formatter prints this instead of formatting
        return True


PASSWORDS = PasswordFilter()


def guard_logging(repeat_filter: RepeatFilter, loggers: Iterable[str] = GUARDED_LOGGERS) -> None:
    """Put ``repeat_filter`` (and ``PASSWORDS``) on every handler of ``loggers``, where all
    their records pass.

    On handlers rather than loggers: a logger's own filters never see the records its
    children (``rag.web.app``...) propagate to it.
    """
    root = logging.getLogger()
    if not root.handlers:
        # Otherwise the app's and asyncio's errors reach logging's last-resort handler,
        # which takes no filter.
        fallback = logging.StreamHandler()
        fallback.setLevel(logging.WARNING)
        fallback.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(fallback)
    for name in loggers:
        for handler in logging.getLogger(name).handlers:
            for guard in (PASSWORDS, repeat_filter):
                if guard not in handler.filters:
                    handler.addFilter(guard)
