"""``rag doctor`` on the in-process Cloudflare, through the CLI's transport seam."""

from __future__ import annotations

import json
from typing import Any

from test_audit import cli
from test_vectorize import migrated

__all__ = ["cli", "migrated"]  # fixtures shared with test_audit

LIMITS = {"ratelimit": '"default";r=1199;t=60', "ratelimit-policy": '"default";q=1200;w=300'}


def checks(output: str) -> dict[str, dict[str, Any]]:
    return {check["name"]: check for check in json.loads(output)["checks"]}


def test_doctor_passes_on_a_ready_account(cli: Any) -> None:
    fake, run, _ = cli
    fake.vectorize.add_index("rag", 768)
    fake.rate_limit_headers = LIMITS
    result = run("doctor", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    found = checks(result.output)
    assert all(check["ok"] for check in found.values()), found
    assert found["token"]["data"]["kind"] == "user"
    assert found["vectorize index"]["data"] == {
        "name": "rag",
        "dimensions": 768,
        "metric": "cosine",
        "embedder": 768,
    }
    assert found["embeddings"]["data"]["shape"] == [1, 768]
    reranked = found["reranker"]["data"]
    # Word overlap in the fake: 2 of the query's 6 words, and none.
    assert (reranked["relevant"], reranked["irrelevant"]) == (-1.0, -3.0)
    assert reranked["scale"] == "logits"
    assert found["chat"]["data"]["usage"]["completion_tokens"] <= 8
    assert "usage reported" in found["chat"]["detail"]
    assert report["rate_limit_headers"] == LIMITS
    assert report["neurons_today"]["spent_today"] == 0
    # Reading only: nothing written to Vectorize, no throwaway index left behind.
    assert not fake.vectorize.writes() and list(fake.vectorize.indexes) == ["rag"]

    table = run("doctor")
    assert table.exit_code == 0, table.output
    assert "relevant -1, irrelevant -3: logits" in table.output
    assert "ratelimit: " in table.output and "neurons today (ledger): 0.0" in table.output


def test_doctor_reports_every_failure_and_exits_1(cli: Any) -> None:
    fake, run, _ = cli
    fake.vectorize.add_index("rag", 384, "euclidean")
    fake.token_owner = "account"
    fake.rerank_scale = "probabilities"
    fake.script_chat(usage=False)
    result = run("doctor", "--json", env={"RAG_CLOUDFLARE__RERANK_SCORES": "logits"})
    assert result.exit_code == 1, result.output
    found = checks(result.output)
    assert found["token"]["ok"] and found["token"]["data"]["kind"] == "account"
    index = found["vectorize index"]
    assert not index["ok"] and "the embedder needs 768-d" in index["detail"]
    assert "expects cosine" in index["detail"]
    reranker = found["reranker"]
    assert not reranker["ok"] and reranker["data"]["scale"] == "probabilities"
    assert "rerank_scores is 'logits'" in reranker["detail"]
    # No usage is a finding to report, not a failure: the ledger counts tokens instead.
    assert found["chat"]["ok"] and "no usage" in found["chat"]["detail"]
    assert "FAIL" in run("doctor").output
    assert "none seen" in run("doctor").output


def test_doctor_with_a_refused_token_or_no_index(cli: Any) -> None:
    _, run, _ = cli
    result = run("doctor", "--json", env={"CLOUDFLARE_API_TOKEN": "revoked"})
    assert result.exit_code == 1
    found = checks(result.output)
    assert not any(check["ok"] for check in found.values())
    assert "access refused" in found["token"]["detail"]
    missing = checks(run("doctor", "--json").output)["vectorize index"]
    assert not missing["ok"] and "rag" in missing["detail"]


def test_doctor_without_credentials_is_a_configuration_error(cli: Any) -> None:
    _, run, _ = cli
    result = run("doctor", env={"CLOUDFLARE_API_TOKEN": ""})
    assert result.exit_code == 2
    assert "CLOUDFLARE_API_TOKEN" in result.output
