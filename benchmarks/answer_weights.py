"""Measure the extractive answerer's feature weights on labelled sets with facts.

Ingests each dataset's corpus into the evaluation database (as ``rag eval`` does),
retrieves every answerable question once through the real service, then replays the
extractive answerer over those hits for each setting in a small grid, scoring fact recall
(the share of questions whose answer holds every fact) and token F1 against the reference
answer, on every set. No figure depends on timing, so the grid is repeatable on any
machine. A dataset whose corpus is elsewhere is given as ``DATASET=CORPUS``.

    .venv/bin/python benchmarks/answer_weights.py corpus/qa.jsonl \
        eval/git-doc.jsonl=/usr/share/doc/git-doc
    .venv/bin/python benchmarks/answer_weights.py corpus/qa.jsonl --show   # answers, defaults
    .venv/bin/python benchmarks/answer_weights.py eval/git-doc.jsonl=/usr/share/doc/git-doc \
        --ceiling

``--ceiling`` asks how much of what the answerer misses is retrieval's: for each question
it moves the best-ranked candidate whose text holds every fact (of the first
``retrieval.candidates``) to the first source, keeps the other top sources in order, and
answers again, gate or no gate. A miss that stays a miss there is the answerer's; one
with no such candidate at all is the embedder's and the keyword search's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import tempfile
from pathlib import Path
from typing import Any

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
    "fits": (0.2, 0.3, 0.5),
    "source_rank": (0.0, 0.03, 0.06),
    "min_relative": (0.5, 0.6, 0.7),
}


Replay = tuple[str, ExtractiveAnswerer, list[Question], list[list[Hit] | None], RagService]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", nargs="+", help="DATASET or DATASET=CORPUS")
    parser.add_argument("--show", action="store_true", help="print each answer (defaults)")
    parser.add_argument(
        "--ceiling", action="store_true", help="fact recall with a fact-holding source first"
    )
    args = parser.parse_args()
    async with contextlib.AsyncExitStack() as stack:
        sets = [await _prepare(stack, spec) for spec in args.datasets]
        if args.show:
            for _, answerer, questions, retrieved, _ in sets:
                await _show(answerer, questions, retrieved)
            return
        if args.ceiling:
            for name, answerer, questions, retrieved, service in sets:
                await _ceiling(name, service, answerer, questions, retrieved)
            return
        rows = []
        names = list(GRID)
        for values in itertools.product(*(GRID[n] for n in names)):
            chosen: dict[str, Any] = dict(zip(names, values, strict=True))
            weights = dataclasses.replace(Weights(), **chosen)
            scores = [await _score(answerer, q, r, weights) for _, answerer, q, r, _ in sets]
            rows.append((scores, values))
        # Best first: the most facts over all sets, then the most F1.
        rows.sort(key=lambda row: (-sum(r for r, _ in row[0]), -sum(f for _, f in row[0])))
        head = "  ".join(f"{Path(name).stem} recall / F1" for name, *_ in sets)
        print(f"{head}   " + "  ".join(names))
        for scores, values in rows[:15]:
            figures = "  ".join(f"{recall:.4f} / {f1:.4f}" for recall, f1 in scores)
            print(f"{figures}   " + "  ".join(f"{v:g}" for v in values))
        for name, answerer, questions, retrieved, _ in sets:
            recall, f1 = await _score(answerer, questions, retrieved, Weights())
            print(
                f"defaults on {name}: fact recall {recall:.4f}, F1 {f1:.4f} "
                f"over {len(questions)} questions"
            )


async def _prepare(stack: contextlib.AsyncExitStack, spec: str) -> Replay:
    """One dataset's answerable questions, retrieved once, and its service's answerer."""
    path, _, corpus = spec.partition("=")
    base = load_settings()
    with tempfile.TemporaryDirectory() as scratch:
        dataset = load_dataset(
            Path(path), corpus=Path(corpus) if corpus else None, workdir=Path(scratch)
        )
    workdir = Path(base.eval.data_dir) / "corpora" / corpus_key(dataset.corpus, base, None)
    settings = eval_settings(base, workdir, None)
    questions = [q for q in dataset.questions if q.answerable and q.facts]
    service = await stack.enter_async_context(open_service(settings))
    await service.ingest([dataset.corpus])
    retrieved = [await _hits(service, q) for q in questions]
    answerer = service.chat.providers[-1]
    assert isinstance(answerer, ExtractiveAnswerer)
    return path, answerer, questions, retrieved, service


async def _hits(service: RagService, question: Question) -> list[Hit] | None:
    """The sources an answer reads, as the service asks for them (the opening too)."""
    k = service.settings.retrieval.top_k
    retrieval = await service.retriever.retrieve(question.text, k, opening=True)
    return retrieval.hits if retrieval.grounded else None


async def _ceiling(
    name: str,
    service: RagService,
    answerer: ExtractiveAnswerer,
    questions: list[Question],
    retrieved: list[list[Hit] | None],
) -> None:
    """Fact recall now, and with the best-ranked fact-holding candidate first (``--ceiling``)."""
    k, pool = service.settings.retrieval.top_k, service.settings.retrieval.candidates
    held = first = none = 0
    lines = []
    for question, hits in zip(questions, retrieved, strict=True):
        now = metrics.holds_facts(await _answer(answerer, question.text, hits), question.facts)
        ranked = (await service.retriever.retrieve(question.text, pool)).hits
        rank = next(
            (i for i, h in enumerate(ranked) if metrics.holds_facts(h.text, question.facts)), None
        )
        if rank is None:
            none += 1
            moved = False
        else:
            top = [ranked[rank], *[h for i, h in enumerate(ranked[:k]) if i != rank]][:k]
            said = await _answer(answerer, question.text, top)
            moved = metrics.holds_facts(said, question.facts)
        held, first = held + now, first + moved
        if not now and rank is None:
            lines.append(f"  MISS {question.id}: no candidate holds the facts")
        elif not now:
            verdict = "held when first" if moved else "missed even when first"
            lines.append(f"  MISS {question.id}: fact chunk ranked {rank + 1}; {verdict}")
    n = len(questions)
    print(
        f"{name}: {n} questions; fact recall {held / n:.4f} as answered, "
        f"{first / n:.4f} with a fact-holding candidate as the first source; "
        f"{none} with no such candidate among the first {pool}"
    )
    print("\n".join(lines))


async def _answer(answerer: ExtractiveAnswerer, question: str, hits: list[Hit] | None) -> str:
    if hits is None:
        return ""  # refused by the evidence gate: holds no fact
    return "".join([piece async for piece in answerer.stream(question, hits)])


async def _score(
    answerer: ExtractiveAnswerer,
    questions: list[Question],
    retrieved: list[list[Hit] | None],
    weights: Weights,
) -> tuple[float, float]:
    answerer.weights = weights
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
