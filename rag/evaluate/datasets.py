"""Labelled question sets: the project's JSONL format and the BEIR folder layout.

Both become a ``Dataset``: a folder of documents to ingest and questions whose relevant
sources are paths relative to that folder (what ``Hit.source`` holds), with graded gains.
Malformed input fails with the file and line, so a typo in a hand-written set is a
one-line fix rather than a hunt.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from rag.errors import InputError


class DatasetError(InputError):
    code = "dataset"


@dataclass(frozen=True)
class Question:
    id: str
    text: str
    answerable: bool
    relevant: dict[str, float] = field(default_factory=dict)
    """Source path -> graded gain (> 0). Empty: no relevance labels for this question."""
    references: tuple[str, ...] = ()
    """Reference answers; token F1 and ROUGE-L take the best over them."""
    facts: tuple[tuple[str, ...], ...] = ()
    """What a correct answer must contain: every fact, each as one of its alternatives."""


@dataclass(frozen=True)
class Dataset:
    name: str
    kind: str
    """"jsonl" or "beir"."""
    corpus: Path
    """The folder that is ingested; relevant sources are relative to it."""
    questions: list[Question]
    sha256: str
    """Of the label files (questions, qrels, answers; BEIR passages too)."""


def load_dataset(path: Path, *, corpus: Path | None = None, workdir: Path) -> Dataset:
    """A JSONL file, a folder holding ``qa.jsonl``, or a BEIR folder.

    ``workdir`` is where BEIR passages are written as files (``<id>.txt``) for ingestion.
    """
    if path.is_dir():
        if (path / "corpus.jsonl").is_file() and (path / "queries.jsonl").is_file():
            if corpus is not None:
                raise DatasetError("--corpus is for JSONL datasets; a BEIR folder has its own")
            return load_beir(path, workdir)
        if (path / "qa.jsonl").is_file():
            return load_jsonl(path / "qa.jsonl", corpus)
        raise DatasetError(
            f"{path}: not a dataset folder (expected corpus.jsonl + queries.jsonl, or qa.jsonl)"
        )
    if not path.is_file():
        raise DatasetError(f"{path}: no such dataset file or folder")
    return load_jsonl(path, corpus)


def load_jsonl(path: Path, corpus: Path | None = None) -> Dataset:
    """``{"id", "question", "expected_sources", "answerable", "answer"?, "facts"?}`` per line.

    ``facts`` lists what a correct answer must contain: each a string, or a list of
    acceptable alternatives (``["32", "thirty-two"]``).
    """
    root = corpus if corpus is not None else path.parent
    if not root.is_dir():
        raise DatasetError(f"{root}: the corpus folder does not exist")
    questions: list[Question] = []
    seen: set[str] = set()
    for where, row in _rows(path):
        qid = _field(row, "id", str, where)
        text = _field(row, "question", str, where)
        sources = _field(row, "expected_sources", list, where)
        answerable = _field(row, "answerable", bool, where)
        answer = row.get("answer")
        if answer is not None and not isinstance(answer, str):
            raise DatasetError(f"{where}: 'answer' must be a string")
        if qid in seen:
            raise DatasetError(f"{where}: duplicate id {qid!r}")
        seen.add(qid)
        relevant = {}
        for source in sources:
            if not isinstance(source, str) or not _relative(source):
                raise DatasetError(f"{where}: expected source {source!r} is not a relative path")
            if not (root / source).is_file():
                raise DatasetError(f"{where}: expected source {source!r} is not a file in {root}")
            relevant[PurePosixPath(source).as_posix()] = 1.0
        references = (answer,) if answer and answer.strip() else ()
        facts = _facts(row.get("facts"), where)
        questions.append(Question(qid, text.strip(), answerable, relevant, references, facts))
    if not questions:
        raise DatasetError(f"{path}: no questions")
    return Dataset(str(path), "jsonl", root, questions, _sha256([path]))


def load_beir(folder: Path, workdir: Path) -> Dataset:
    """``corpus.jsonl``, ``queries.jsonl``, ``qrels/*.tsv``, optional ``answers.jsonl``."""
    passages = workdir / "passages"
    names = _write_passages(folder / "corpus.jsonl", passages)
    qrels = _qrels(folder, names)
    answers: dict[str, tuple[str, ...]] = {}
    if (folder / "answers.jsonl").is_file():
        for where, row in _rows(folder / "answers.jsonl"):
            refs = _field(row, "answers", list, where)
            answers[str(_field(row, "_id", (str, int), where))] = tuple(
                r for r in refs if isinstance(r, str) and r.strip()
            )
    questions: list[Question] = []
    for where, row in _rows(folder / "queries.jsonl"):
        qid = str(_field(row, "_id", (str, int), where))
        text = _field(row, "text", str, where)
        metadata = row.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise DatasetError(f"{where}: 'metadata' must be an object")
        flag = metadata.get("answerable")
        if flag is not None and not isinstance(flag, bool):
            raise DatasetError(f"{where}: 'metadata.answerable' must be true or false")
        answerable = flag if flag is not None else qid in qrels
        relevant = qrels.get(qid, {})
        questions.append(Question(qid, text.strip(), answerable, relevant, answers.get(qid, ())))
    if not questions:
        raise DatasetError(f"{folder / 'queries.jsonl'}: no questions")
    files = [folder / "corpus.jsonl", folder / "queries.jsonl", *_qrel_files(folder)]
    if (folder / "answers.jsonl").is_file():
        files.append(folder / "answers.jsonl")
    return Dataset(str(folder), "beir", passages, questions, _sha256(files))


def beir_workdir(path: Path, data_dir: Path) -> Path:
    """Where a BEIR folder's passages are written: one folder per dataset location."""
    resolved = path.resolve()
    digest = hashlib.sha256(str(resolved).encode()).hexdigest()[:10]
    return data_dir / "beir" / f"{resolved.name}-{digest}"


def passage_file(passage_id: str) -> str:
    """The file a BEIR passage is written to; ids with odd characters are percent-encoded."""
    return quote(passage_id, safe="-_.") + ".txt"


def _write_passages(corpus: Path, passages: Path) -> set[str]:
    """Title and text of each passage as a file; unchanged files are left alone so the
    ingestor sees them unchanged, and files no longer in the corpus are removed."""
    passages.mkdir(parents=True, exist_ok=True)
    names: set[str] = set()
    for where, row in _rows(corpus):
        pid = str(_field(row, "_id", (str, int), where))
        body = _field(row, "text", str, where)
        title = row.get("title") or ""
        name = passage_file(pid)
        if name in names:
            raise DatasetError(f"{where}: duplicate passage id {pid!r}")
        names.add(name)
        text = f"{title}\n\n{body}\n" if title else f"{body}\n"
        target = passages / name
        if not target.is_file() or target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8")
    for stale in passages.glob("*.txt"):
        if stale.name not in names:
            stale.unlink()
    return names


def _qrel_files(folder: Path) -> list[Path]:
    return sorted((folder / "qrels").glob("*.tsv"))


def _qrels(folder: Path, names: set[str]) -> dict[str, dict[str, float]]:
    qrels: dict[str, dict[str, float]] = {}
    files = _qrel_files(folder)
    if not files:
        raise DatasetError(f"{folder / 'qrels'}: no .tsv files")
    for file in files:
        lines = file.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, start=1):
            cells = line.split("\t")
            if not line.strip() or (number == 1 and cells[0] == "query-id"):
                continue
            where = f"{file}:{number}"
            if len(cells) != 3:
                raise DatasetError(f"{where}: expected query-id, corpus-id and score (tabs)")
            qid, pid, score_text = cells
            try:
                score = float(score_text)
            except ValueError:
                raise DatasetError(f"{where}: score {score_text!r} is not a number") from None
            if passage_file(pid) not in names:
                raise DatasetError(f"{where}: corpus-id {pid!r} is not in corpus.jsonl")
            if score > 0:
                qrels.setdefault(qid, {})[passage_file(pid)] = score
    return qrels


def _rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{where}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise DatasetError(f"{where}: expected a JSON object")
            yield where, row


def _facts(value: object, where: str) -> tuple[tuple[str, ...], ...]:
    """``facts`` as alternatives per fact; a blank fact would match every answer."""
    if value is None:
        return ()
    wrong = f"{where}: 'facts' must be a list of strings or of lists of strings"
    if not isinstance(value, list):
        raise DatasetError(wrong)
    facts = []
    for fact in value:
        alternatives = fact if isinstance(fact, list) else [fact]
        if not alternatives or not all(isinstance(a, str) for a in alternatives):
            raise DatasetError(wrong)
        if not all(a.strip() for a in alternatives):
            raise DatasetError(f"{where}: a fact must not be blank")
        facts.append(tuple(alternatives))
    return tuple(facts)


def _field(row: dict[str, Any], name: str, kind: Any, where: str) -> Any:
    if name not in row:
        raise DatasetError(f"{where}: missing field {name!r}")
    value = row[name]
    # bool is an int in Python; an id of `true` is a mistake, not an id.
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise DatasetError(f"{where}: field {name!r} has the wrong type")
    return value


_PARENT = re.compile(r"(^|/)\.\.(/|$)")


def _relative(source: str) -> bool:
    return bool(source) and not source.startswith("/") and not _PARENT.search(source)


def _sha256(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode() + b"\0")
        digest.update(hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()
