"""``rag eval``: the command group; its commands live in ``eval_dataset`` and ``eval_stored``."""

from __future__ import annotations

import click

from rag.cli.eval_dataset import calibrate_command, run_command
from rag.cli.eval_stored import baseline_command, compare_command, list_command, show_command


class _DatasetOrCommand(click.Group):
    """``rag eval DATASET`` and ``rag eval list``: a first word that is no subcommand is
    a dataset (or an option of ``run``), and goes to ``run``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["run", *args]
        return super().parse_args(ctx, args)


@click.group("eval", cls=_DatasetOrCommand)
def eval_group() -> None:
    """Evaluate retrieval, abstention, answers, cost and latency on a labelled dataset.

    A dataset is the project's JSONL (corpus/qa.jsonl; documents in its folder unless
    --corpus says otherwise) or a BEIR folder (corpus.jsonl, queries.jsonl, qrels/*.tsv,
    optional answers.jsonl). Its documents are ingested into a database of their own
    under eval.data_dir, reused while they and the ingestion settings are unchanged.
    Every run is stored in eval.data_dir/runs.db with a fingerprint of what produced it.

    \b
    Examples:
      rag eval corpus/qa.jsonl                      # same as: rag eval run corpus/qa.jsonl
      rag eval ../shared/evaldata/clapnq --limit 50 --report clapnq.html
      rag eval corpus/qa.jsonl --fail-under reranked.recall@5=0.9
      rag eval corpus/qa.jsonl --baseline eval/baseline.json    # the CI gate
      rag eval --replay 20261127-0112-ab12cd        # re-score a stored run, no model calls
      rag eval list
      rag eval compare 20261127-0112 20261127-0140  # id prefixes work
      rag eval calibrate corpus/qa.jsonl            # pick the evidence-gate threshold
    """


for _command in (
    run_command,
    list_command,
    show_command,
    compare_command,
    calibrate_command,
    baseline_command,
):
    eval_group.add_command(_command)
