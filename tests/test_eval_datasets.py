"""Dataset loaders: both formats, and malformed input failing with the file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rag.config import Settings
from rag.evaluate.datasets import DatasetError, load_dataset, passage_file
from rag.evaluate.metrics import normalised, states_fact
from rag.ingest.loaders import load


def _jsonl(folder: Path, rows: list[object], *, raw: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "a.md").write_text("# A\n\nAlpha text.\n")
    path = folder / "qa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + raw)
    return path


def _row(**overrides: object) -> dict[str, object]:
    row: dict[str, object] = {
        "id": "q1",
        "question": "What is alpha?",
        "expected_sources": ["a.md"],
        "answerable": True,
        "answer": "Alpha text.",
    }
    row.update(overrides)
    return row


def test_jsonl_defaults_the_corpus_to_the_files_folder(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "set", [_row(), _row(id="q2", expected_sources=[], answerable=False)])
    dataset = load_dataset(path, workdir=tmp_path / "w")
    assert dataset.corpus == tmp_path / "set"
    assert dataset.kind == "jsonl" and len(dataset.questions) == 2
    assert dataset.questions[0].relevant == {"a.md": 1.0}
    assert dataset.questions[0].references == ("Alpha text.",)
    assert dataset.questions[1].relevant == {} and not dataset.questions[1].answerable
    assert load_dataset(tmp_path / "set", workdir=tmp_path / "w").sha256 == dataset.sha256


def test_bad_json_line_names_file_and_line(tmp_path: Path) -> None:
    path = _jsonl(tmp_path, [_row()], raw='{"id": "q2", "question": \n')
    with pytest.raises(DatasetError, match=r"qa\.jsonl:2: not valid JSON"):
        load_dataset(path, workdir=tmp_path / "w")


def test_unknown_source_path_is_named(tmp_path: Path) -> None:
    path = _jsonl(tmp_path, [_row(), _row(id="q2", expected_sources=["nope.md"])])
    with pytest.raises(DatasetError, match=r"qa\.jsonl:2: expected source 'nope.md'"):
        load_dataset(path, workdir=tmp_path / "w")


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"id": "q1", "expected_sources": [], "answerable": True}, "missing field 'question'"),
        (_row(answerable="yes"), "field 'answerable' has the wrong type"),
        (_row(expected_sources=["../a.md"]), "is not a relative path"),
        (_row(answer=3), "'answer' must be a string"),
        (_row(facts="32"), "'facts' must be a list"),
        (_row(facts=[["32", 32]]), "'facts' must be a list"),
        (_row(facts=[[]]), "'facts' must be a list"),
        (_row(facts=["  "]), "a fact must not be blank"),
        ([1, 2], "expected a JSON object"),
    ],
)
def test_malformed_rows(tmp_path: Path, row: object, message: str) -> None:
    path = _jsonl(tmp_path, [row])
    with pytest.raises(DatasetError, match=rf"qa\.jsonl:1: .*{message}"):
        load_dataset(path, workdir=tmp_path / "w")


def test_facts_are_read_as_alternatives(tmp_path: Path) -> None:
    path = _jsonl(tmp_path, [_row(facts=["32", ["200", "two hundred"]])])
    question = load_dataset(path, workdir=tmp_path / "w").questions[0]
    assert question.facts == (("32",), ("200", "two hundred"))


def test_every_fact_of_the_handbook_set_is_in_the_handbook() -> None:
    # A fact no document holds could never be found: a typo, or a label gone stale.
    corpus = Path(__file__).resolve().parents[1] / "corpus"
    dataset = load_dataset(corpus / "qa.jsonl", workdir=corpus)
    settings = Settings()
    texts = [
        normalised(section.text)
        for path in sorted(corpus.iterdir())
        if path.suffix != ".jsonl"
        for section in load(path, settings.ingest).sections
    ]
    for question in dataset.questions:
        assert not question.answerable or question.facts, f"{question.id} has no facts"
        for fact in question.facts:
            assert any(states_fact(text, normalised(alt)) for alt in fact for text in texts), (
                f"{question.id}: no document holds {fact}"
            )


def test_duplicate_ids_and_empty_files_fail(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="duplicate id 'q1'"):
        load_dataset(_jsonl(tmp_path / "d", [_row(), _row()]), workdir=tmp_path / "w")
    with pytest.raises(DatasetError, match="no questions"):
        load_dataset(_jsonl(tmp_path / "e", []), workdir=tmp_path / "w")


def _beir(folder: Path, qrels: str = "query-id\tcorpus-id\tscore\nq1\tp1\t2\nq1\tp/2\t1\n") -> Path:
    (folder / "qrels").mkdir(parents=True)
    passages = [
        {"_id": "p1", "title": "One", "text": "First passage."},
        {"_id": "p/2", "title": "", "text": "Second passage."},
    ]
    queries = [
        {"_id": "q1", "text": "first?", "metadata": {"answerable": True}},
        {"_id": "q2", "text": "unlabelled but answerable", "metadata": {"answerable": True}},
        {"_id": "q3", "text": "not covered", "metadata": {"answerable": False}},
        {"_id": "q4", "text": "no metadata, no qrels"},
    ]
    (folder / "corpus.jsonl").write_text("".join(json.dumps(p) + "\n" for p in passages))
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (folder / "qrels" / "dev.tsv").write_text(qrels)
    answers = [{"_id": "q1", "answerable": True, "answers": ["First passage.", ""]}]
    (folder / "answers.jsonl").write_text("".join(json.dumps(a) + "\n" for a in answers))
    return folder


def test_beir_writes_passages_and_keeps_graded_qrels(tmp_path: Path) -> None:
    dataset = load_dataset(_beir(tmp_path / "b"), workdir=tmp_path / "w")
    assert dataset.kind == "beir"
    assert sorted(p.name for p in dataset.corpus.iterdir()) == ["p%2F2.txt", "p1.txt"]
    assert (dataset.corpus / "p1.txt").read_text() == "One\n\nFirst passage.\n"
    q1, q2, q3, q4 = dataset.questions
    assert q1.relevant == {"p1.txt": 2.0, passage_file("p/2"): 1.0}
    assert q1.references == ("First passage.",)
    assert q2.answerable and q2.relevant == {}  # counted as unlabelled, not a crash
    assert not q3.answerable and not q4.answerable  # no metadata: answerable iff it has qrels


def test_beir_removes_passages_gone_from_the_corpus(tmp_path: Path) -> None:
    folder = _beir(tmp_path / "b")
    load_dataset(folder, workdir=tmp_path / "w")
    (tmp_path / "w" / "passages" / "old.txt").write_text("stale")
    load_dataset(folder, workdir=tmp_path / "w")
    assert not (tmp_path / "w" / "passages" / "old.txt").exists()


def test_beir_qrel_naming_an_unknown_passage_fails_with_the_line(tmp_path: Path) -> None:
    folder = _beir(tmp_path / "b", qrels="q1\tp1\t1\nq1\tp9\t1\n")
    with pytest.raises(DatasetError, match=r"dev\.tsv:2: corpus-id 'p9' is not in corpus"):
        load_dataset(folder, workdir=tmp_path / "w")
    bad = _beir(tmp_path / "c", qrels="q1\tp1\n")
    with pytest.raises(DatasetError, match=r"dev\.tsv:1: expected query-id"):
        load_dataset(bad, workdir=tmp_path / "w2")


def test_not_a_dataset(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not a dataset folder"):
        load_dataset(tmp_path, workdir=tmp_path / "w")
    with pytest.raises(DatasetError, match="no such dataset"):
        load_dataset(tmp_path / "missing.jsonl", workdir=tmp_path / "w")


GIT_DOC = Path("/usr/share/doc/git-doc")
"""Debian's git-doc package (git's HTML manuals and their AsciiDoc sources), which
eval/git-doc.jsonl is labelled against; .ci/run installs it."""


@pytest.mark.skipif(not GIT_DOC.is_dir(), reason="Debian's git-doc is not installed")
def test_every_fact_of_the_git_doc_set_is_in_its_expected_sources() -> None:
    # Labelled by hand against git 2.39's manuals: a fact that none of its question's
    # expected sources holds (as our loaders read them) is a wrong label or a loader
    # that loses text, and the set's fact recall would blame the answerer for it.
    sets = Path(__file__).resolve().parents[1] / "eval"
    dataset = load_dataset(sets / "git-doc.jsonl", corpus=GIT_DOC, workdir=sets)
    settings = Settings()
    answerable = [q for q in dataset.questions if q.answerable]
    assert len(answerable) >= 40 and len(dataset.questions) - len(answerable) >= 8
    for question in answerable:
        assert question.facts and question.relevant, question.id
        texts = [
            normalised(section.text)
            for source in question.relevant
            for section in load(GIT_DOC / source, settings.ingest).sections
        ]
        for fact in question.facts:
            assert any(states_fact(text, normalised(alt)) for alt in fact for text in texts), (
                f"{question.id}: none of {sorted(question.relevant)} holds {fact}"
            )
