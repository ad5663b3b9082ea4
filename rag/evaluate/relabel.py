"""Replay against current labels: a stored run re-scored with a dataset's relevance labels,
answerability and reference answers, so fixing a label needs no new model calls."""

from __future__ import annotations

from pathlib import Path

import msgspec

from rag.config import Settings
from rag.errors import InputError
from rag.evaluate.datasets import beir_workdir, load_dataset
from rag.evaluate.results import RunRecord, score_answer
from rag.evaluate.store import open_store
from rag.evaluate.summary import summarise


async def replay_run(
    settings: Settings, run_id: str, dataset: Path | None, corpus: Path | None
) -> RunRecord:
    """A stored run's figures recomputed from its per-question results (no model is
    loaded); with ``dataset``, against that dataset's current labels."""
    async with open_store(settings.eval.data_dir) as store:
        run = await store.load(run_id)
    if dataset is not None:
        run = relabel(run, dataset, corpus, Path(settings.eval.data_dir))
    run.metrics = summarise(run.results)
    return run


def relabel(run: RunRecord, dataset_path: Path, corpus: Path | None, data_dir: Path) -> RunRecord:
    workdir = beir_workdir(dataset_path, data_dir)
    dataset = load_dataset(dataset_path, corpus=corpus, workdir=workdir)
    labels = {q.id: q for q in dataset.questions}
    missing = [r.id for r in run.results if r.id not in labels]
    if missing:
        raise InputError(
            f"{dataset_path} has no question {missing[0]!r} of run {run.run_id}"
            f" ({len(missing)} missing): is it the dataset the run was made from?"
        )
    results = []
    for old in run.results:
        question = labels[old.id]
        new = msgspec.structs.replace(
            old,
            answerable=question.answerable,
            relevant=dict(question.relevant),
            references=list(question.references),
            facts=[list(f) for f in question.facts],
        )
        score_answer(new)
        results.append(new)
    return msgspec.structs.replace(
        run, dataset=dataset.name, dataset_sha256=dataset.sha256, results=results
    )
