"""Evaluation runs end to end on the fake embedder: the CLI's JSON, storage, replay,
reproducibility, gates, comparison, calibration and the report."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from conftest import make_settings
from fakes import FakeEmbedder

from rag.cli.eval import eval_group
from rag.cli.eval_dataset import EvalEnv
from rag.config import Settings
from rag.evaluate import runner

DOCS = {
    "zebras.md": "# Zebras\n\nZebras have black and white stripes. Each zebra's stripe pattern "
    "is unique, like a fingerprint.\n\nZebras live in herds on the African savanna.\n",
    "volcanoes.md": "# Volcanoes\n\nA volcano erupts when magma rises through the crust. "
    "Lava is magma that reaches the surface.\n\nMount Etna is an active volcano in Sicily.\n",
    "bread.md": "# Bread\n\nBread dough rises because yeast ferments sugar into carbon dioxide. "
    "Kneading develops the gluten network.\n\nSourdough uses a wild yeast starter.\n",
}
QUESTIONS = [
    (
        "q1",
        "What pattern do zebra stripes have?",
        ["zebras.md"],
        True,
        "Each zebra's stripe pattern is unique, like a fingerprint.",
    ),
    (
        "q2",
        "Why does bread dough rise with yeast?",
        ["bread.md"],
        True,
        "Yeast ferments sugar into carbon dioxide.",
    ),
    (
        "q3",
        "What is lava and magma in a volcano?",
        ["volcanoes.md"],
        True,
        "Lava is magma that reaches the surface.",
    ),
    ("q4", "Where is the active volcano Mount Etna?", ["volcanoes.md"], True, None),
    ("q5", "Who won the 1998 football world cup final?", [], False, None),
    ("q6", "How do I configure kubernetes helm charts?", [], False, None),
]
JSON_KEYS = {"run_id", "dataset", "config", "questions", "metrics"}
METRIC_KEYS = {
    "retrieval": {"recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10"},
    "reranked": {"recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10"},
    "abstention": {"correct_refusal", "false_refusal"},
    "answers": {"citation_validity", "f1", "rouge_l", "fact_recall"},
    "cost": {"neurons_per_question", "usd_per_question"},
    "latency_ms": {"retrieve_p50", "retrieve_p95", "total_p50", "total_p95"},
}


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    folder = tmp_path / "set"
    folder.mkdir()
    for name, text in DOCS.items():
        (folder / name).write_text(text)
    rows = [
        {"id": i, "question": q, "expected_sources": s, "answerable": a}
        | ({"answer": ans} if ans else {})
        for i, q, s, a, ans in QUESTIONS
    ]
    (folder / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder / "qa.jsonl"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, eval={"data_dir": str(tmp_path / "eval")})


def cli(settings: Settings, *args: str, embedder: FakeEmbedder | None = None) -> Result:
    env = EvalEnv(settings, embedder or FakeEmbedder())
    return CliRunner().invoke(eval_group, list(args), obj=env, catch_exceptions=False)


def run_json(settings: Settings, *args: str, embedder: FakeEmbedder | None = None) -> Any:
    result = cli(settings, *args, "--json", embedder=embedder)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_json_has_exactly_the_documented_shape(settings: Settings, dataset: Path) -> None:
    data = run_json(settings, str(dataset))
    assert set(data) == JSON_KEYS
    assert {group: set(values) for group, values in data["metrics"].items()} == METRIC_KEYS
    assert data["questions"] == 6 and data["dataset"] == str(dataset)
    assert re.fullmatch(r"\d{8}-\d{4}-[0-9a-f]{6}", data["run_id"])
    assert data["metrics"]["retrieval"]["recall@10"] == 1.0  # three documents, all retrieved
    assert data["metrics"]["cost"] == {"neurons_per_question": 0.0, "usd_per_question": 0.0}
    assert data["metrics"]["answers"]["f1"] is not None
    config = data["config"]
    assert config["embedder"] == "fake-bow-256" and config["prompt_version"].startswith(
        "extractive-9-"
    )
    assert config["gate"] == {"retrieval.min_relevance": settings.retrieval.min_relevance}
    assert len(config["dataset_sha256"]) == 64 and "git_commit" in config


def test_metrics_that_do_not_apply_are_null(settings: Settings, dataset: Path) -> None:
    lines = dataset.read_text().splitlines()
    bare = dataset.parent / "answerable-only.jsonl"
    bare.write_text("\n".join(json.dumps(json.loads(x) | {"answer": None}) for x in lines[:4]))
    data = run_json(settings, str(bare))
    assert data["metrics"]["answers"]["f1"] is None
    assert data["metrics"]["answers"]["rouge_l"] is None
    assert data["metrics"]["abstention"]["correct_refusal"] is None
    gate = cli(settings, "--replay", data["run_id"], "--fail-under", "answers.f1=0.1")
    assert gate.exit_code == 1 and "answers.f1 is null" in gate.output


async def test_two_runs_give_identical_retrieval_and_reuse_the_index(
    settings: Settings, dataset: Path
) -> None:
    embedder = FakeEmbedder()
    first = await runner.run(settings, dataset, embedder=embedder)
    second = await runner.run(settings, dataset, embedder=embedder)
    for group in ("retrieval", "reranked", "abstention"):
        assert first.record.metrics[group] == second.record.metrics[group]
    assert [r.reranked for r in first.record.results] == [r.reranked for r in second.record.results]
    assert second.record.config["query_vectors"] == {"cached": 6, "embedded": 0}
    corpora = list((Path(settings.eval.data_dir) / "corpora").iterdir())
    assert len(corpora) == 1 and (corpora[0] / "rag.db").is_file()
    assert not (Path(settings.data_dir) / "rag.db").exists()  # never the serving database


def test_replay_rescoring_makes_no_model_call(settings: Settings, dataset: Path) -> None:
    stored = run_json(settings, str(dataset))
    watcher = FakeEmbedder()
    replayed = run_json(settings, "--replay", stored["run_id"], embedder=watcher)
    assert watcher.calls == []
    assert replayed["metrics"] == stored["metrics"]
    # New labels re-score the old retrieval: q1 now expects bread.md too.
    rows = [json.loads(x) for x in dataset.read_text().splitlines()]
    rows[0]["expected_sources"] = ["zebras.md", "bread.md"]
    dataset.write_text("".join(json.dumps(r) + "\n" for r in rows))
    relabelled = run_json(
        settings, str(dataset), "--replay", stored["run_id"][:15], embedder=watcher
    )
    assert watcher.calls == []
    assert relabelled["metrics"]["reranked"]["recall@1"] < stored["metrics"]["reranked"]["recall@1"]


def test_gate_exit_codes(settings: Settings, dataset: Path) -> None:
    passed = cli(settings, str(dataset), "--fail-under", "reranked.recall@10=0.9")
    assert passed.exit_code == 0, passed.output
    run_id = re.search(r"run (\S+)", passed.stdout)
    assert run_id is not None
    failed = cli(settings, "--replay", run_id.group(1), "--fail-under", "reranked.recall@10=1.01")
    assert failed.exit_code == 1
    assert "reranked.recall@10 = 1; wanted reranked.recall@10 >= 1.01" in failed.output
    unknown = cli(settings, str(dataset), "--fail-under", "reranked.recall@7=0.5")
    assert unknown.exit_code == 2 and "unknown metric 'reranked.recall@7'" in unknown.output
    malformed = cli(settings, str(dataset), "--fail-under", "reranked.recall@5")
    assert malformed.exit_code == 2 and "METRIC=VALUE" in malformed.output


def test_baseline_round_trip(settings: Settings, dataset: Path, tmp_path: Path) -> None:
    stored = run_json(settings, str(dataset))
    target = tmp_path / "baseline.json"
    assert cli(settings, "baseline", stored["run_id"], "--output", str(target)).exit_code == 0
    baseline = json.loads(target.read_text())
    assert baseline["tolerance"] == 0.02 and baseline["metrics"] == stored["metrics"]
    assert cli(settings, "--replay", stored["run_id"], "--baseline", str(target)).exit_code == 0
    baseline["metrics"]["reranked"]["mrr@10"] = 1.5
    target.write_text(json.dumps(baseline))
    regressed = cli(settings, "--replay", stored["run_id"], "--baseline", str(target))
    assert regressed.exit_code == 1 and "reranked.mrr@10" in regressed.output


def test_list_show_and_compare(settings: Settings, dataset: Path, tmp_path: Path) -> None:
    a = run_json(settings, str(dataset))
    strict = make_settings(
        tmp_path, eval={"data_dir": settings.eval.data_dir}, retrieval={"min_relevance": 0.99}
    )
    b = run_json(strict, str(dataset))
    listed = cli(settings, "list")
    assert a["run_id"] in listed.stdout and b["run_id"] in listed.stdout
    shown = cli(settings, "show", a["run_id"], "--json")
    assert json.loads(shown.stdout)["metrics"] == a["metrics"]
    assert cli(settings, "show", "nope").exit_code == 2
    compared = cli(settings, "compare", a["run_id"], b["run_id"])
    assert compared.exit_code == 0, compared.output
    assert "min_relevance" in compared.stdout
    assert "abstention.false_refusal" in compared.stdout
    assert "now refused (answerable)" in compared.stdout  # the question text follows
    assert "What pattern do zebra stripes have?" in compared.stdout


def test_report_is_one_self_contained_page(
    settings: Settings, dataset: Path, tmp_path: Path
) -> None:
    page = tmp_path / "out" / "report.html"
    result = cli(settings, str(dataset), "--report", str(page))
    assert result.exit_code == 0, result.output
    html = page.read_text()
    svgs = re.findall(r"<svg.*?</svg>", html, re.S)
    assert len(svgs) == 3
    for svg in svgs:
        ET.fromstring(svg)  # well-formed
    assert "recall@k" in html and "Worst retrievals" in html
    assert "<script" not in html and "http://" not in html.replace("http://www.w3.org", "")


def test_calibrate_prints_the_threshold_and_the_key(settings: Settings, dataset: Path) -> None:
    result = cli(settings, "calibrate", str(dataset))
    assert result.exit_code == 0, result.output
    assert "balanced accuracy" in result.stdout
    assert "set retrieval.min_relevance = " in result.stdout
    data = json.loads(cli(settings, "calibrate", str(dataset), "--json").stdout)
    assert data["setting"] == "retrieval.min_relevance" and data["best"] is not None
    assert all(row["unanswerable"] == 2 for row in data["sweep"])


def test_beir_folder_runs_and_counts_unlabelled(settings: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    passages = [{"_id": f"p{i}", "title": n, "text": t} for i, (n, t) in enumerate(DOCS.items())]
    queries = [
        {"_id": "a", "text": "zebra stripe pattern", "metadata": {"answerable": True}},
        {"_id": "b", "text": "magma and lava", "metadata": {"answerable": True}},
        {"_id": "c", "text": "world cup final", "metadata": {"answerable": False}},
    ]
    (folder / "corpus.jsonl").write_text("".join(json.dumps(p) + "\n" for p in passages))
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\na\tp0\t2\n")
    data = run_json(settings, str(folder))
    assert data["questions"] == 3 and data["config"]["dataset_kind"] == "beir"
    assert data["metrics"]["reranked"]["recall@1"] == 1.0  # only "a" has qrels
    shown = cli(settings, "show", data["run_id"])
    assert "1 answerable without" in shown.stdout


def test_usage_errors(settings: Settings, tmp_path: Path) -> None:
    assert cli(settings).exit_code != 0  # no arguments: help
    missing = cli(settings, str(tmp_path / "nothing.jsonl"))
    assert missing.exit_code == 2 and "no such dataset" in missing.output
    assert cli(settings, "--json").exit_code == 2  # options but no dataset
    assert "rag eval corpus/qa.jsonl" in cli(settings, "--help").stdout
