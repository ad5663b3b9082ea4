"""``rag worker``: run the queued ingestion jobs of the shared database until stopped."""

from __future__ import annotations

import asyncio
import logging
import signal

import click

from rag.cli import common


@click.command()
@click.option(
    "--concurrency",
    type=click.IntRange(1, 64),
    default=None,
    help="Jobs run at once [default: uploads.max_concurrent_jobs].",
)
@click.option(
    "--until-idle",
    is_flag=True,
    help="Exit once no job is queued or running anywhere (one running elsewhere is waited "
    "for: if its worker died, it is taken up here once its heartbeat is stale).",
)
@click.pass_context
def worker(ctx: click.Context, concurrency: int | None, until_idle: bool) -> None:
    """Run queued ingestion jobs: uploads, POST /v1/ingest, and rag ingest runs whose
    process died.

    Start as many as you like, on any machine that reaches the database (and the files):
    each claims one job at a time per slot, and a job is never run twice at once. A job
    whose worker died is taken up again once its heartbeat is older than
    jobs.stale_after_s. SIGTERM or Ctrl-C hands the running jobs back to the queue.

    \b
    Example:
      rag worker                     # with [jobs] run_in_server = false on the replicas
      rag worker --until-idle        # drain the queue, then exit
    """
    from rag.jobs.queue import JobQueue
    from rag.jobs.worker import Worker
    from rag.registry import blob_store
    from rag.service import open_service

    settings = common.settings(ctx)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("rag.jobs").setLevel(logging.INFO)

    async def go() -> None:
        async with open_service(settings) as service:
            runner = Worker(
                JobQueue(service.sessions, settings.jobs),
                service,
                slots=concurrency or settings.uploads.max_concurrent_jobs,
                blobs=blob_store(settings),
            )
            stopping = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stopping.set)
            common.say(f"{runner.name}: waiting for ingestion jobs", console=common.err)
            try:
                running = runner.start(until_idle=until_idle)
                stop = asyncio.ensure_future(stopping.wait())
                await asyncio.wait({running, stop}, return_when=asyncio.FIRST_COMPLETED)
                stop.cancel()
            finally:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
                # Running jobs go back to the queue, for this worker's next start or another.
                await runner.close()
            common.say(f"{runner.name}: stopped", console=common.err)

    common.run(go)
