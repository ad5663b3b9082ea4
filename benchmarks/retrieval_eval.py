"""Dense alone against hybrid fusion at several keyword weights, and the evidence gate.

Prints recall@1/5/10 and MRR@10 at document level for each keyword weight (0 is plain
dense retrieval), and how well the best cosine separates answerable from unanswerable
questions at several thresholds. The README's retrieval figures come from here.

    python benchmarks/retrieval_eval.py corpus            # corpus/qa.jsonl over corpus/
    python benchmarks/retrieval_eval.py ../shared/evaldata/clapnq
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import msgspec

from rag.config import Settings
from rag.retrieval.fusion import HybridReranker
from rag.service import open_service

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.5, 1.0)
THRESHOLDS = (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5)


@dataclass
class Question:
    text: str
    relevant: set[str]
    answerable: bool


def own_dataset(corpus: Path) -> tuple[Path, list[Question]]:
    questions = []
    for line in (corpus / "qa.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            questions.append(
                Question(row["question"], set(row["expected_sources"]), row["answerable"])
            )
    return corpus, questions


def beir_dataset(folder: Path, workdir: Path) -> tuple[Path, list[Question]]:
    """Each BEIR passage becomes a text file named by its id, so sources are '<id>.txt'."""
    docs = workdir / "passages"
    docs.mkdir(parents=True, exist_ok=True)
    for line in (folder / "corpus.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        path = docs / f"{row['_id']}.txt"
        text = f"{row.get('title', '')}\n\n{row['text']}\n"
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
    qrels: dict[str, set[str]] = {}
    for qrel_file in sorted((folder / "qrels").glob("*.tsv")):
        for line in qrel_file.read_text(encoding="utf-8").splitlines()[1:]:
            qid, cid, score = line.split("\t")
            if int(score) > 0:
                qrels.setdefault(qid, set()).add(f"{cid}.txt")
    questions = []
    for line in (folder / "queries.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        answerable = bool(row.get("metadata", {}).get("answerable", row["_id"] in qrels))
        questions.append(Question(row["text"], qrels.get(row["_id"], set()), answerable))
    return docs, questions


def doc_ranking(sources: list[str]) -> list[str]:
    return list(dict.fromkeys(sources))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", help="'corpus' or a BEIR folder")
    parser.add_argument("--workdir", type=Path, default=ROOT / "data" / "bench")
    args = parser.parse_args()
    name = "corpus" if args.dataset == "corpus" else Path(args.dataset).name
    workdir = args.workdir / name
    workdir.mkdir(parents=True, exist_ok=True)
    if args.dataset == "corpus":
        docs, questions = own_dataset(ROOT / "corpus")
    else:
        docs, questions = beir_dataset(Path(args.dataset), workdir)
    settings = msgspec.convert({"data_dir": str(workdir)}, Settings)
    async with open_service(settings) as service:
        began = time.perf_counter()
        report = await service.ingest([docs])
        print(f"ingest: {report.summary()} ({time.perf_counter() - began:.1f} s)")
        pools = [await service.retriever.candidates_for(q.text) for q in questions]
    answerable = [(q, pool) for q, pool in zip(questions, pools, strict=True) if q.answerable]
    print(f"\n{name}: {len(questions)} questions, {len(answerable)} answerable")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}"
    )
    header = ("keyword_weight", "recall@1", "recall@5", "recall@10", "MRR@10")
    print(f"\n{header[0]:>15} {header[1]:>9} {header[2]:>9} {header[3]:>10} {header[4]:>8}")
    for weight in WEIGHTS:
        reranker = HybridReranker(keyword_weight=weight)
        r1 = r5 = r10 = mrr = 0.0
        for question, pool in answerable:
            hits = await reranker.rerank(question.text, pool, len(pool))
            ranking = doc_ranking([h.source for h in hits])
            relevant = question.relevant
            r1 += len(relevant & set(ranking[:1])) / len(relevant)
            r5 += len(relevant & set(ranking[:5])) / len(relevant)
            r10 += len(relevant & set(ranking[:10])) / len(relevant)
            first = next((i for i, s in enumerate(ranking[:10], 1) if s in relevant), None)
            mrr += 1 / first if first else 0.0
        n = len(answerable)
        label = f"{weight:.1f}" + (" (dense)" if weight == 0 else "")
        print(f"{label:>15} {r1 / n:9.3f} {r5 / n:9.3f} {r10 / n:10.3f} {mrr / n:8.3f}")

    print("\nevidence gate on the best cosine (answerable kept / unanswerable refused):")
    best = [
        (q.answerable, max((h.dense_score or 0.0 for h in pool), default=0.0))
        for q, pool in zip(questions, pools, strict=True)
    ]
    n_ans = sum(1 for a, _ in best if a)
    n_un = len(best) - n_ans
    for threshold in THRESHOLDS:
        kept = sum(1 for a, s in best if a and s >= threshold)
        refused = sum(1 for a, s in best if not a and s < threshold)
        print(
            f"  min_relevance {threshold:.2f}: answerable kept {kept}/{n_ans}"
            f"  unanswerable refused {refused}/{n_un}"
        )


if __name__ == "__main__":
    asyncio.run(main())
