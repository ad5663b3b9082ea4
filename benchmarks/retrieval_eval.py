"""Dense alone against hybrid fusion at several keyword weights, from one retrieval pass.

``rag eval`` measures the configured pipeline; this sweeps ``retrieval.keyword_weight``
(``identifier_keyword_weight`` held at its setting) by re-fusing the stored dense and
keyword ranks of every candidate (the local reranker needs nothing else), so each weight
costs no model call. Document-level recall@1/5/10, MRR@10 and nDCG@10 per weight, and
the dense ranking alone.

    python benchmarks/retrieval_eval.py corpus/qa.jsonl
    python benchmarks/retrieval_eval.py eval/git-doc.jsonl --corpus /usr/share/doc/git-doc
    python benchmarks/retrieval_eval.py ../shared/evaldata/clapnq

It also ranks the documents the plainest way, as a baseline the pipeline must never fall
below: each file as our loaders read it, cut into ``--windows``-word pieces (200 unless
told; 0 skips it), embedded with the same model, each file scored by its best piece. That
costs one embedding per piece (about four minutes for git's manual on 2 cores).

For the evidence-gate threshold use ``rag eval calibrate DATASET``.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import msgspec
import numpy as np

from rag.config import Settings, load_settings
from rag.domain import Hit
from rag.errors import RagError
from rag.evaluate import runner
from rag.evaluate.datasets import Dataset
from rag.evaluate.results import QuestionResult, Ranked
from rag.evaluate.summary import RANKING_KEYS, counts, ranking_metrics
from rag.ingest.chunker import document_text
from rag.ingest.discover import discover
from rag.ingest.loaders import load, readable_extensions
from rag.retrieval.fusion import HybridReranker
from rag.service import open_service

WEIGHTS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)


async def refuse(
    results: list[QuestionResult], weight: float, identifier_weight: float
) -> list[QuestionResult]:
    """The results as if the hybrid reranker had run with ``weight``."""
    reranker = HybridReranker(keyword_weight=weight, identifier_weight=identifier_weight)
    out = []
    for result in results:
        hits = [
            Hit(
                chunk_id=c.chunk_id,
                document_id="",
                source=c.source,
                title="",
                text="",
                score=0.0,
                relevance=0.0,
                dense_score=c.dense_score,
                dense_rank=c.dense_rank,
                keyword_score=c.keyword_score,
                keyword_rank=c.keyword_rank,
            )
            for c in result.candidates
        ]
        ranked = await reranker.rerank(result.question, hits, len(hits))
        reranked = [Ranked(h.chunk_id, h.score, h.relevance) for h in ranked]
        out.append(msgspec.structs.replace(result, reranked=reranked))
    return out


async def windows_rankings(
    settings: Settings, dataset: Dataset, results: list[QuestionResult], words: int
) -> dict[str, list[str]]:
    """Each question's files, best first, by their best ``words``-word piece's cosine."""
    found = discover([dataset.corpus], readable_extensions(settings.ingest))
    root = dataset.corpus.expanduser().resolve()
    pieces: list[str] = []
    owners: list[str] = []
    for item in found.files:
        try:
            text = document_text(load(item.path, settings.ingest)).split()
        except RagError:
            continue  # what ingestion skips or fails is not in the pipeline's index either
        for at in range(0, len(text), words):
            pieces.append(" ".join(text[at : at + words]))
            owners.append(str(item.path.relative_to(root)))
    workdir = Path(settings.eval.data_dir) / "corpora" / "windows"
    async with open_service(runner.eval_settings(settings, workdir, None)) as service:
        embedder = service.embedder
        matrix = np.vstack(
            [
                await embedder.embed(pieces[at : at + 64], "passage")
                for at in range(0, len(pieces), 64)
            ]
        )
        rankings = {}
        for result in results:
            query = (await embedder.embed([result.question], "query"))[0]
            best: dict[str, float] = {}
            for owner, score in zip(owners, (matrix @ query).tolist(), strict=True):
                best[owner] = max(score, best.get(owner, -1.0))
            rankings[result.id] = sorted(best, key=lambda o: -best[o])
    return rankings


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("dataset", type=Path, help="a JSONL file or a BEIR folder")
    parser.add_argument("--corpus", type=Path, help="documents folder for a JSONL dataset")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--windows", type=int, default=200, help="words per baseline piece")
    args = parser.parse_args()
    settings = load_settings()
    options = runner.Options(corpus=args.corpus, limit=args.limit)
    outcome = await runner.run(settings, args.dataset, options, answer=False)
    results = outcome.record.results
    n = counts(results)
    print(f"{outcome.dataset.name}: {n['labelled']} labelled of {n['questions']} questions")
    print(f"machine: {outcome.record.config['machine']}\n")
    identifier = settings.retrieval.identifier_keyword_weight
    print(f"retrieval.identifier_keyword_weight held at {identifier:g}\n")
    print(f"{'keyword_weight':>16}" + "".join(f"{key:>11}" for key in RANKING_KEYS))
    if args.windows > 0:
        rankings = await windows_rankings(settings, outcome.dataset, results, args.windows)
        plain = ranking_metrics(results, lambda r: rankings[r.id])
        label = f"{args.windows}-word dense"
        print(f"{label:>16}" + "".join(f"{plain[key] or 0:>11.4f}" for key in RANKING_KEYS))
    dense = ranking_metrics(results, QuestionResult.dense_ranking)
    print(f"{'dense alone':>16}" + "".join(f"{dense[key] or 0:>11.4f}" for key in RANKING_KEYS))
    for weight in WEIGHTS:
        figures = ranking_metrics(
            await refuse(results, weight, identifier), QuestionResult.reranked_ranking
        )
        print(f"{weight:>16g}" + "".join(f"{figures[key] or 0:>11.4f}" for key in RANKING_KEYS))


if __name__ == "__main__":
    asyncio.run(main())
