"""``rag chat``: a conversation on stdin, where follow-up questions build on earlier turns."""

from __future__ import annotations

import asyncio
import sys
from collections import deque
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING

import click

from rag.cli import common
from rag.cli.streaming import print_answer
from rag.domain import Turn
from rag.errors import RagError

if TYPE_CHECKING:
    from rag.service import RagService

HISTORY_TURNS = 3
"""Earlier turns sent with a question: as many as ``POST /v1/ask`` accepts
(``rag.web.schemas.HISTORY_TURNS_MAX``); the condensing rule reads no further back."""


@dataclass(frozen=True)
class ChatTurn:
    question: str
    answer: str


@click.command()
@click.option("--top-k", type=int, default=None, help="How many sources to use.")
@click.pass_context
def chat(ctx: click.Context, top_k: int | None) -> None:
    """Ask questions one per line; each answer streams, then its sources are listed.

    A follow-up ("and how long are they kept?") is understood in the context of the
    last few turns. An empty line, the end of the input (Ctrl-D) or Ctrl-C ends the
    chat. Questions may be piped in, one per line. A question that fails is reported
    and the chat goes on; the exit code is then the worst failure's.

    \b
    Example:
      rag chat
      > How do I restore a snapshot?
      > and how long are they kept?
    """
    from rag.service import open_service

    settings = common.settings(ctx)
    with common.running() as runner:
        # One service for the whole chat, across the steps the runner takes.
        resources = AsyncExitStack()
        service = runner.run(resources.enter_async_context(open_service(settings)))
        try:
            if runner.run(common.index_is_empty(service)):
                common.note("the index is empty:", "run `rag ingest corpus/` first")
            status = _converse(runner, service, top_k)
        finally:
            runner.run(resources.aclose())
    sys.exit(status)


def _converse(runner: asyncio.Runner, service: RagService, top_k: int | None) -> int:
    """Answer question after question; returns the exit code."""
    # The prompt is for people; piped questions get the answers alone on stdout.
    prompt = "> " if sys.stdin.isatty() else ""
    turns: deque[Turn] = deque(maxlen=HISTORY_TURNS)
    status = 0
    while question := _read(prompt):
        try:
            done = runner.run(
                print_answer(service.ask(question, top_k, list(turns)), as_json=False)
            )
        except RagError as exc:
            status = max(status, common.report(exc))
            continue
        except KeyboardInterrupt:
            common.out.print()  # ends the line the answer was cut on
            break
        if done is None:
            status = max(status, common.FAILURE)
        else:
            turns.append(ChatTurn(question, done.answer))
        common.out.print()
    return status


def _read(prompt: str) -> str:
    """The next question; empty at the end of the chat."""
    try:
        return input(prompt).strip()
    except (EOFError, KeyboardInterrupt):
        if prompt:
            common.out.print()  # the shell's prompt starts on a line of its own
        return ""
