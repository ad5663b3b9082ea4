"""Settings: file, environment overlay, validation that names the key, secrets masked."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from rag.config import effective, load_settings
from rag.errors import ConfigError
from rag.redact import mask_passwords, masked_url


def test_defaults_without_a_file(tmp_path: Path) -> None:
    settings = load_settings(environ={"RAG_CONFIG": str(_write(tmp_path, ""))})
    assert settings.backend == "local"
    assert settings.database_url.endswith("data/rag.db")


def test_file_then_environment_override(tmp_path: Path) -> None:
    path = _write(tmp_path, "[retrieval]\ntop_k = 7\n[server]\nport = 9000\n")
    settings = load_settings(
        environ={"RAG_CONFIG": str(path), "RAG_SERVER__PORT": "9100", "RAG_DATA_DIR": "/x"}
    )
    assert settings.retrieval.top_k == 7
    assert settings.server.port == 9100
    assert settings.data_dir == "/x"


def test_list_values_from_the_environment(tmp_path: Path) -> None:
    settings = load_settings(
        environ={"RAG_CONFIG": str(_write(tmp_path, "")), "RAG_INGEST__EXTENSIONS": '[".md"]'}
    )
    assert settings.ingest.extensions == (".md",)


def test_trusted_proxies_take_addresses_and_networks(tmp_path: Path) -> None:
    proxies = '["10.0.0.5", "10.1.0.0/16", "fd00::/8"]'
    settings = load_settings(
        environ={"RAG_CONFIG": str(_write(tmp_path, "")), "RAG_SERVER__TRUSTED_PROXIES": proxies}
    )
    assert settings.server.trusted_proxies == ("10.0.0.5", "10.1.0.0/16", "fd00::/8")


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("[retrieval]\ntopk = 3\n", {}, "unknown field `topk` - at `retrieval`"),
        ("[retrieval]\ntop_k = 'three'\n", {}, "at `retrieval.top_k`"),
        ("", {"RAG_RETRIEVAL__TOP_K": "many"}, "at `retrieval.top_k`"),
        ("", {"RAG_NOPE__X": "1"}, "RAG_NOPE__X: unknown section [nope]"),
        (
            "",
            {"RAG_RETREIVAL__TOP_K": "3"},
            "RAG_RETREIVAL__TOP_K: unknown section [retreival] (did you mean 'retrieval'?)",
        ),
        (
            "",
            {"RAG_RETRIEVAL__TOPK": "3"},
            "RAG_RETRIEVAL__TOPK: [retrieval] has no key 'topk' (did you mean 'top_k'?)",
        ),
        ("", {"RAG_BACKEDN": "local"}, "RAG_BACKEDN: unknown setting 'backedn'"),
        ("", {"RAG_SERVICE": "x"}, "RAG_SERVICE: unknown setting 'service'"),
        ("[index]\nlog_keep_rows = 0\n", {}, "index.log_keep_rows must be at least 1"),
        ("", {"RAG_BACKEND": "cloud"}, "at `backend`"),
        ("colour = 'red'\n", {}, "unknown field `colour`"),
        ("[ingest]\nchunk_tokens = 400\n", {}, "ingest.chunk_tokens must leave room"),
        ("[ingest]\nmax_chunk_chars = 50\n", {}, "ingest.max_chunk_chars must be at least 100"),
        ("[server]\nport = 0\n", {}, "server.port must be between"),
        ("[retrieval]\ndefinition_weight = -1\n", {}, "retrieval.definition_weight must be >= 0"),
        (
            "",
            {"RAG_RETRIEVAL__IDENTIFIER_KEYWORD_WEIGHT": "-0.1"},
            "retrieval.identifier_keyword_weight must be >= 0",
        ),
        ("[cloudflare]\nfirst_token_deadline_s = 0\n", {}, "first_token_deadline_s must be > 0"),
        ("[retrieval\n", {}, "not valid TOML"),
        ("[ocr]\ndpi = 1200\n", {}, "ocr.dpi must be between 50 and 600"),
        ("", {"RAG_OCR__MIN_CONFIDENCE": "1.5"}, "ocr.min_confidence must be between 0 and 1"),
        ("[ocr]\nengine = 'tesseract'\n", {}, "at `ocr.engine`"),
        (
            "[server]\ntrusted_proxies = ['10.0.0.1/8']\n",
            {},
            "server.trusted_proxies: '10.0.0.1/8' is not an IP address or network",
        ),
        ("", {"RAG_SERVER__TRUSTED_PROXIES": '["proxy.internal"]'}, "'proxy.internal' is not"),
    ],
)
def test_bad_settings_fail_naming_the_key(
    tmp_path: Path, text: str, env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(environ={"RAG_CONFIG": str(_write(tmp_path, text)), **env})


KUBERNETES = {
    # What Kubernetes injects into every pod for a Service named "rag" (and "rag-web").
    "RAG_PORT": "tcp://10.0.0.1:8000",
    "RAG_SERVICE_HOST": "10.0.0.1",
    "RAG_SERVICE_PORT": "8000",
    "RAG_SERVICE_PORT_HTTP": "8000",
    "RAG_PORT_8000_TCP": "tcp://10.0.0.1:8000",
    "RAG_PORT_8000_TCP_ADDR": "10.0.0.1",
    "RAG_PORT_8000_TCP_PORT": "8000",
    "RAG_PORT_8000_TCP_PROTO": "tcp",
    "RAG_WEB_SERVICE_HOST": "10.0.0.2",
    "RAG_WEB_PORT_443_TCP": "tcp://10.0.0.2:443",
}


def test_kubernetes_service_variables_are_not_settings(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = {"RAG_CONFIG": str(_write(tmp_path, ""))}
    with caplog.at_level(logging.DEBUG, logger="rag.config"):
        settings = load_settings(environ={**config, **KUBERNETES, "RAG_SERVER__PORT": "9000"})
    assert settings.server.port == 9000  # ours still apply beside them
    assert settings == load_settings(environ={**config, "RAG_SERVER__PORT": "9000"})
    ignored = [r.getMessage() for r in caplog.records if "Kubernetes" in r.getMessage()]
    assert len(ignored) == 1 and all(name in ignored[0] for name in KUBERNETES)
    with pytest.raises(ConfigError, match="RAG_RETRIEVAL__TOPK"):
        load_settings(environ={**config, **KUBERNETES, "RAG_RETRIEVAL__TOPK": "3"})


def test_rag_debug_is_not_a_setting(tmp_path: Path) -> None:
    environ = {"RAG_CONFIG": str(_write(tmp_path, "")), "RAG_DEBUG": "1"}
    assert load_settings(environ=environ) == load_settings(
        environ={"RAG_CONFIG": environ["RAG_CONFIG"]}
    )


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(environ={"RAG_CONFIG": str(tmp_path / "absent.toml")})


def test_effective_settings_mask_secrets(tmp_path: Path) -> None:
    path = _write(tmp_path, "[ingest]\npdf_passwords = ['hunter2']\n")
    env = {"RAG_CONFIG": str(path), "CLOUDFLARE_API_TOKEN": "tok-123456"}
    shown = effective(load_settings(environ=env), env)
    assert shown["secrets"]["CLOUDFLARE_API_TOKEN"] == "***"
    assert shown["secrets"]["OPENAI_API_KEY"] == "(not set)"
    assert shown["ingest"]["pdf_passwords"] == ["***"]
    assert "hunter2" not in repr(shown) and "tok-123456" not in repr(shown)


def test_effective_settings_mask_the_database_password(tmp_path: Path) -> None:
    url = "postgresql+asyncpg://rag:s3cret-pw@db.internal:5432/rag"
    env = {"RAG_CONFIG": str(_write(tmp_path, "")), "RAG_DATABASE__URL": url}
    shown = effective(load_settings(environ=env), env)
    masked = "postgresql+asyncpg://rag:***@db.internal:5432/rag"
    assert shown["database"]["url"] == shown["database"]["effective_url"] == masked
    assert "s3cret-pw" not in repr(shown)


def test_effective_settings_mask_the_evaluation_database_password(tmp_path: Path) -> None:
    url = "postgresql+asyncpg://rag:ev4l-pw@db.internal:5432/rag_eval"
    env = {"RAG_CONFIG": str(_write(tmp_path, "")), "RAG_EVAL__DATABASE_URL": url}
    shown = effective(load_settings(environ=env), env)
    assert shown["eval"]["database_url"] == "postgresql+asyncpg://rag:***@db.internal:5432/rag_eval"
    assert "ev4l-pw" not in repr(shown)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("postgresql://u:pw@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:p@ss@h/db", "postgresql://u:***@h/db"),  # an "@" left unescaped
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        (
            "postgresql://h/db?sslmode=require&password=pw",
            "postgresql://h/db?sslmode=require&password=***",
        ),
        ("sqlite+aiosqlite:///data/rag.db", "sqlite+aiosqlite:///data/rag.db"),
        (
            "cannot connect to postgresql+asyncpg://a:b@c/d: refused",
            "cannot connect to postgresql+asyncpg://a:***@c/d: refused",
        ),
    ],
)
def test_passwords_are_masked_in_urls_and_text(text: str, shown: str) -> None:
    assert mask_passwords(text) == masked_url(text) == shown


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_price_for_another_model_adds_to_the_published_rates(tmp_path: Path) -> None:
    path = _write(tmp_path, '[prices.models."@cf/meta/llama-4"]\ninput = 10\noutput = 20\n')
    models = load_settings(environ={"RAG_CONFIG": str(path)}).prices.models
    assert models["@cf/meta/llama-4"].output == 20
    assert models["@cf/baai/bge-base-en-v1.5"].input == 6058


def test_the_shipped_config_file_spells_out_the_defaults(tmp_path: Path) -> None:
    shipped = Path(__file__).resolve().parents[1] / "config.toml"
    settings = load_settings(environ={"RAG_CONFIG": str(shipped)})
    assert settings == load_settings(environ={"RAG_CONFIG": str(_write(tmp_path, ""))})


@pytest.mark.parametrize(
    ("uploads", "ingest"),
    [("shared", "shared"), ("shared/uploads", "shared"), ("shared", "shared/inbox")],
)
def test_the_upload_folder_and_the_ingest_folder_must_not_overlap(
    tmp_path: Path, uploads: str, ingest: str
) -> None:
    text = (
        f"[uploads]\nfolder = '{tmp_path / uploads}'\n"
        f"[web]\ningest_folder = '{tmp_path / ingest}'\n"
    )
    with pytest.raises(ConfigError, match=r"web\.ingest_folder .* and uploads\.folder .* overlap"):
        load_settings(environ={"RAG_CONFIG": str(_write(tmp_path, text))})


def test_separate_upload_and_ingest_folders_are_fine(tmp_path: Path) -> None:
    text = f"[uploads]\nfolder = '{tmp_path / 'up'}'\n[web]\ningest_folder = '{tmp_path / 'in'}'\n"
    settings = load_settings(environ={"RAG_CONFIG": str(_write(tmp_path, text))})
    assert settings.upload_folder == tmp_path / "up"
