"""Logs can be neither flooded nor forged by what a client sends."""

from __future__ import annotations

import io
import json
import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager

from fakes import Clock, ScriptedService, serve

from rag.config import Settings
from rag.db.failures import storage_error
from rag.logs import RepeatFilter, guard_logging, printable
from rag.web import create_app
from rag.web.access_log import _TerminalFormatter

FORGED = b'{"ts":"2026-01-01T00:00:00Z","msg":"request","level":"ERROR","forged":true}'


@contextmanager
def captured(name: str, formatter: logging.Formatter | None = None) -> Iterator[io.StringIO]:
    """What ``name``'s records print through a handler of their own, at INFO and above."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter or logging.Formatter("%(message)s"))
    logger = logging.getLogger(name)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield out
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def flood(logger: logging.Logger, times: int, text: str = "accept failed: %s") -> None:
    for _ in range(times):
        try:
            raise OSError(24, "Too many open files")
        except OSError:
            logger.exception(text, "EMFILE")


def test_the_same_error_is_printed_once_per_interval_and_then_counted() -> None:
    clock = Clock()
    with captured("test.flood") as out:
        guard_logging(RepeatFilter(interval_s=60, clock=clock), ["test.flood"])
        logger = logging.getLogger("test.flood")
        flood(logger, 1000)
        assert out.getvalue().count("accept failed: EMFILE") == 1
        assert out.getvalue().count("Traceback") == 1
        clock.now += 61
        flood(logger, 1)
    lines = [line for line in out.getvalue().splitlines() if line.startswith("accept failed")]
    assert lines == [
        "accept failed: EMFILE",
        "accept failed: EMFILE [repeated 999 times in the last interval]",
    ]


def test_different_messages_are_not_merged() -> None:
    clock = Clock()
    with captured("test.distinct") as out:
        guard_logging(RepeatFilter(clock=clock), ["test.distinct"])
        logger = logging.getLogger("test.distinct")
        for n in range(3):
            logger.error("failure %d", n)
            logger.error("failure %d", n)
        logger.warning("failure 0")  # another level: another message
    assert out.getvalue().splitlines() == ["failure 0", "failure 1", "failure 2", "failure 0"]


def test_the_tracked_messages_stay_bounded() -> None:
    clock = Clock()
    repeat = RepeatFilter(interval_s=60, max_keys=10, clock=clock)
    logger = logging.getLogger("test.bounded")
    for n in range(1000):
        record = logger.makeRecord(logger.name, logging.ERROR, __file__, 1, f"m{n}", (), None)
        assert repeat.filter(record)
    assert len(repeat._seen) <= 10


def test_uvicorns_error_logger_is_guarded() -> None:
    clock = Clock()
    with captured("uvicorn.error") as out:
        # Only this one: the default list includes the root, whose handlers are pytest's.
        guard_logging(RepeatFilter(clock=clock), ["uvicorn.error"])
        flood(logging.getLogger("uvicorn.error"), 50, "Exception in ASGI application %s")
    assert out.getvalue().count("Exception in ASGI application") == 1


def test_printable_escapes_line_breaks_and_other_controls() -> None:
    assert printable('/static/\x00\n{"x":1}\r\x1b[31m\u2028') == (
        '/static/\\x00\\n{"x":1}\\r\\x1b[31m\\u2028'
    )
    assert printable("/v1/documents/é") == "/v1/documents/é"


def test_a_path_with_nul_and_line_feed_cannot_forge_a_log_line() -> None:
    # The exact request seen in the wild, over a real socket: one line logged, no other.
    app = create_app(Settings(), ScriptedService())
    with (
        captured("rag") as json_out,
        captured("rag.access", _TerminalFormatter()) as terminal_out,
        serve(app) as live,
        socket.create_connection(("127.0.0.1", live.port), timeout=5) as sock,
    ):
        sock.sendall(b"GET /static/%00%0A" + FORGED + b" HTTP/1.1\r\nHost: localhost\r\n\r\n")
        reply = sock.recv(65536)
    assert reply.startswith(b"HTTP/1.1 400"), reply
    lines = json_out.getvalue().splitlines()
    assert len(lines) == 1, lines
    line = json.loads(lines[0])
    assert line["status"] == 400
    assert line["path"] == "/static/\x00\n" + FORGED.decode()
    assert "forged" not in json.dumps({k: v for k, v in line.items() if k != "path"})
    terminal = terminal_out.getvalue().splitlines()
    assert len(terminal) == 1 and terminal[0].startswith("GET /static/\\x00\\n{"), terminal


def test_a_database_password_never_reaches_a_log_line() -> None:
    url = "postgresql+asyncpg://rag:pw-in-url@db:5432/rag"
    with captured("test.passwords") as out:
        guard_logging(RepeatFilter(), ["test.passwords"])
        logger = logging.getLogger("test.passwords")
        logger.warning("cannot open %s", url)
        try:
            raise ConnectionError(f"refused: {url}")
        except ConnectionError:
            logger.exception("start-up failed")
    assert "pw-in-url" not in out.getvalue()
    assert out.getvalue().count("postgresql+asyncpg://rag:***@db:5432/rag") == 2  # and the trace


def test_a_storage_error_quotes_no_password() -> None:
    error = storage_error(OSError("invalid DSN postgresql://rag:pw-in-url@db/rag"), None, "open")
    assert "pw-in-url" not in error.message and "rag:***@db" in error.message
