"""Dense alone against hybrid fusion at several keyword weights, from one retrieval pass.

``rag eval`` measures the configured pipeline; this sweeps ``retrieval.keyword_weight``
(``identifier_keyword_weight`` held at its setting) by re-fusing the stored dense and
keyword ranks of every candidate (the local reranker needs nothing else), so each weight
costs no model call. Document-level recall@1/5/10, MRR@10 and nDCG@10 per weight, and
the dense ranking alone.

    python benchmarks/retrieval_eval.py corpus/qa.jsonl
    python benchmarks/retrieval_eval.py ../shared/evaldata/clapnq

For the evidence-gate threshold use ``rag eval calibrate DATASET``.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import msgspec

from rag.config import load_settings
from rag.domain import Hit
from rag.evaluate import runner
from rag.evaluate.results import QuestionResult, Ranked
from rag.evaluate.summary import RANKING_KEYS, counts, ranking_metrics
from rag.retrieval.fusion import HybridReranker

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


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("dataset", type=Path, help="a JSONL file or a BEIR folder")
    parser.add_argument("--corpus", type=Path, help="documents folder for a JSONL dataset")
    parser.add_argument("--limit", type=int)
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
    dense = ranking_metrics(results, QuestionResult.dense_ranking)
    print(f"{'dense alone':>16}" + "".join(f"{dense[key] or 0:>11.4f}" for key in RANKING_KEYS))
    for weight in WEIGHTS:
        figures = ranking_metrics(
            await refuse(results, weight, identifier), QuestionResult.reranked_ranking
        )
        print(f"{weight:>16g}" + "".join(f"{figures[key] or 0:>11.4f}" for key in RANKING_KEYS))


if __name__ == "__main__":
    asyncio.run(main())
