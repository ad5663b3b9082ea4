"""The ``rag`` command line: the group, its settings, and every command registered on it.

One module per command group; what they share (settings, consoles, messages, the exit
codes) is in ``rag.cli.common``.
"""

from __future__ import annotations

import click

from rag.cli import common
from rag.cli.ask import ask
from rag.cli.chat import chat
from rag.cli.cloudflare import audit, vectorize
from rag.cli.config import db, show_config
from rag.cli.doctor import doctor
from rag.cli.eval import eval_group
from rag.cli.forget import forget
from rag.cli.ingest import ingest
from rag.cli.keys import keys
from rag.cli.search import search
from rag.cli.serve import serve
from rag.cli.usage import usage
from rag.cli.worker import worker

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Config file.")
@click.version_option(package_name="rag")
@click.pass_context
def main(ctx: click.Context, config_path: str | None) -> None:
    """Cited, streamed answers over your own documents.

    Exit codes: 0 success, 1 failure, 2 usage, input or configuration error.

    \b
    Examples:
      rag serve ~/handbook          # serve your own documents (and only those)
      rag ingest corpus/            # index a folder (again and again: idempotent)
      rag forget corpus/            # remove a folder's documents from the index
      rag ask "How do I change the port?"
      rag chat                      # questions and follow-ups, one per line
      rag search "evidence gate" --k 5 --json
      rag serve --port 8000         # the Q&A endpoint and chat page
      rag worker                    # run queued ingestion jobs (any number, any machine)
    """
    ctx.obj = common.load(config_path)


for _command in (
    ingest,
    forget,
    ask,
    chat,
    search,
    serve,
    worker,
    show_config,
    db,
    keys,
    usage,
    vectorize,
    audit,
    doctor,
    eval_group,
):
    main.add_command(_command)
