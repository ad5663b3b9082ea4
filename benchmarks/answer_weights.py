"""Measure the extractive answerer's feature weights on a labelled set with facts.

Ingests the dataset's corpus into the evaluation database (as ``rag eval`` does), retrieves
every answerable question once through the real service, then replays the extractive
answerer over those hits for each setting in a small grid, scoring fact recall (the share
of questions whose answer holds every fact) and token F1 against the reference answer.
No figure depends on timing, so the grid is repeatable on any machine.

    .venv/bin/python benchmarks/answer_weights.py corpus/qa.jsonl
    .venv/bin/python benchmarks/answer_weights.py corpus/qa.jsonl --show   # answers, defaults
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import tempfile
from pathlib import Path

from rag.backends.local.extractive import ExtractiveAnswerer, Weights
from rag.config import load_settings
from rag.domain import Hit
from rag.evaluate import metrics
from rag.evaluate.datasets import Question, load_dataset
from rag.evaluate.runner import corpus_key, eval_settings
from rag.service import RagService, open_service

GRID = {
    "overlap": (0.15, 0.3, 0.5),
    "identifier": (0.0, 0.25, 0.5),
    "fits": (0.1, 0.2, 0.3),
    "follows": (0.0, 0.3, 0.5),
    "min_relative": (0.6, 0.7, 0.8),
}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--show", action="store_true", help="print each answer (defaults)")
    args = parser.parse_args()
    base = load_settings()
    with tempfile.TemporaryDirectory() as scratch:
        dataset = load_dataset(args.dataset, workdir=Path(scratch))
    workdir = Path(base.eval.data_dir) / "corpora" / corpus_key(dataset.corpus, base, None)
    settings = eval_settings(base, workdir, None)
    questions = [q for q in dataset.questions if q.answerable and q.facts]
    async with open_service(settings) as service:
        await service.ingest([dataset.corpus])
        retrieved = [await _hits(service, q) for q in questions]
        answerer = service.chat.providers[-1]
        assert isinstance(answerer, ExtractiveAnswerer)
        if args.show:
            await _show(answerer, questions, retrieved)
            return
        rows = []
        names = list(GRID)
        for values in itertools.product(*(GRID[n] for n in names)):
            weights = dataclasses.replace(Weights(), **dict(zip(names, values, strict=True)))
            answerer.weights = weights
            recall, f1 = await _score(answerer, questions, retrieved)
            rows.append((recall, f1, values))
        rows.sort(key=lambda row: (-row[0], -row[1]))
        print("fact_recall  f1      " + "  ".join(names))
        for recall, f1, values in rows[:15]:
            print(f"{recall:.4f}       {f1:.4f}  " + "  ".join(f"{v:g}" for v in values))
        answerer.weights = Weights()
        recall, f1 = await _score(answerer, questions, retrieved)
        print(f"defaults: fact recall {recall:.4f}, F1 {f1:.4f} over {len(questions)} questions")


async def _hits(service: RagService, question: Question) -> list[Hit] | None:
    retrieval = await service.retriever.retrieve(question.text, service.settings.retrieval.top_k)
    return retrieval.hits if retrieval.grounded else None


async def _answer(answerer: ExtractiveAnswerer, question: str, hits: list[Hit] | None) -> str:
    if hits is None:
        return ""  # refused by the evidence gate: holds no fact
    return "".join([piece async for piece in answerer.stream(question, hits)])


async def _score(
    answerer: ExtractiveAnswerer, questions: list[Question], retrieved: list[list[Hit] | None]
) -> tuple[float, float]:
    held, f1 = 0, 0.0
    for question, hits in zip(questions, retrieved, strict=True):
        said = await _answer(answerer, question.text, hits)
        held += metrics.holds_facts(said, question.facts)
        f1 += metrics.best_over(metrics.token_f1, said, question.references) or 0.0
    return held / len(questions), f1 / len(questions)


async def _show(
    answerer: ExtractiveAnswerer, questions: list[Question], retrieved: list[list[Hit] | None]
) -> None:
    for question, hits in zip(questions, retrieved, strict=True):
        said = await _answer(answerer, question.text, hits)
        mark = "ok  " if metrics.holds_facts(said, question.facts) else "MISS"
        print(f"{mark} {question.id} {question.text}\n     {said!r}"[:900])


if __name__ == "__main__":
    asyncio.run(main())
