"""Do PDF citations name the page that holds their quote?

    python benchmarks/pdf_citation_pages.py            # corpus/qa.jsonl, the embedded default

Ingests corpus/ into a fresh database, asks every question of corpus/qa.jsonl whose
expected sources include a PDF, and checks each PDF citation against the page text pypdf
extracts: a citation is right when its quote (white space aside) is on the page it names.
Prints one line per wrong citation and the count of right ones.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path

import msgspec
from pypdf import PdfReader

from rag.config import Settings
from rag.domain import DoneEvent
from rag.service import open_service

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "corpus"


def squeezed(text: str) -> str:
    return " ".join(text.split())


def page_texts(pdf: Path) -> list[str]:
    return [squeezed(page.extract_text()) for page in PdfReader(pdf).pages]


async def main() -> int:
    questions = [
        json.loads(line)
        for line in (CORPUS / "qa.jsonl").read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    asked = [q for q in questions if any(s.endswith(".pdf") for s in q["expected_sources"])]
    pages = {pdf.name: page_texts(pdf) for pdf in CORPUS.glob("*.pdf")}
    right = wrong = 0
    with tempfile.TemporaryDirectory() as tmp:
        settings = msgspec.convert({"data_dir": tmp}, Settings)
        async with open_service(settings) as service:
            await service.ingest([CORPUS])
            for question in asked:
                done = None
                async for event in service.ask(question["question"]):
                    if isinstance(event, DoneEvent):
                        done = event
                for citation in done.citations if done else ():
                    name = Path(citation.document).name
                    if name not in pages or citation.page is None:
                        continue
                    quote = squeezed(citation.quote)
                    if quote in pages[name][citation.page - 1]:
                        right += 1
                        continue
                    wrong += 1
                    held = [n for n, text in enumerate(pages[name], 1) if quote in text]
                    print(
                        f"{question['id']}: {name} p.{citation.page} cited, quote on {held or '?'}:"
                        f" {citation.quote[:70]!r}"
                    )
    print(f"{len(asked)} PDF questions, {right + wrong} PDF citations, {right} on the right page")
    return 0 if wrong == 0 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
