"""The sample deployment (compose.yaml) asks only what the program accepts.

There is no Docker here, so what can be checked offline is checked: every service's
command through the real click group, every ``RAG_*`` variable through the real settings
loader, and the shape the README promises (replicas that only answer, a worker, one
database and one bucket for all, readiness probes, a load balancer over both replicas,
secrets left to the environment).
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from rag.cli import main
from rag.config import SECRET_ENV, Settings, load_settings
from rag.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}
VARIABLE = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")
PLACEHOLDER = "from-the-environment"


@cache
def services() -> dict[str, dict[str, Any]]:
    # safe_load resolves the `<<: *anchor` merges compose itself resolves.
    loaded = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))
    found: dict[str, dict[str, Any]] = loaded["services"]
    return found


def ours() -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services().items() if s.get("command", [None])[0] == "rag"}


def interpolated(value: str) -> str:
    """``value`` as compose hands it over with nothing set: defaults taken, required
    variables (``:?``) standing for whatever the operator's environment holds."""

    def one(match: re.Match[str]) -> str:
        operator, word = match.group(2) or "", match.group(3) or ""
        return word if operator.endswith("-") else PLACEHOLDER

    return VARIABLE.sub(one, value).replace("$$", "$")


def environment(service: dict[str, Any]) -> dict[str, str]:
    return {name: interpolated(str(value)) for name, value in service["environment"].items()}


def settings_of(name: str) -> Settings:
    # The image's working folder holds the checkout's config.toml, as here.
    return load_settings(ROOT / "config.toml", environ=environment(ours()[name]))


def parsed(args: list[str]) -> tuple[str, dict[str, Any]]:
    """The command's path and its parameters as click parses them; a UsageError for an
    unknown command or an option click refuses."""
    command: click.Command = main
    path, rest = ["rag"], list(args[1:])
    while isinstance(command, click.Group):
        found = command.get_command(click.Context(command), rest[0]) if rest else None
        if found is None:
            raise click.UsageError(f"{' '.join(path)} has no command {rest[:1]}")
        command, path, rest = found, [*path, rest[0]], rest[1:]
    context = command.make_context(" ".join(path), rest)
    return " ".join(path), dict(context.params)


def with_command(path: str) -> list[str]:
    return [name for name, s in ours().items() if parsed(s["command"])[0] == path]


def test_every_command_is_a_rag_command_with_options_click_accepts() -> None:
    commands = {name: parsed(s["command"])[0] for name, s in ours().items()}
    assert sorted(commands.values()) == [
        "rag db upgrade", "rag serve", "rag serve", "rag worker",
    ], commands  # fmt: skip
    with pytest.raises(click.UsageError):
        parsed(["rag", "serve", "--prot", "8000"])  # the check catches a misspelt option
    with pytest.raises(click.UsageError):
        parsed(["rag", "db", "upgrad"])


def test_every_rag_variable_is_a_setting_the_loader_accepts() -> None:
    for name, service in ours().items():
        variables = [v for v in service["environment"] if v.startswith("RAG_")]
        assert variables, name
        settings_of(name)  # ConfigError names any variable that is not ours
    misspelt = {**environment(ours()["worker"]), "RAG_JOBS__RUN_IN_SEVER": "false"}
    with pytest.raises(ConfigError, match="RAG_JOBS__RUN_IN_SEVER"):
        load_settings(ROOT / "config.toml", environ=misspelt)


def test_two_replicas_only_answer_and_a_worker_ingests() -> None:
    replicas = with_command("rag serve")
    assert len(replicas) == 2 and with_command("rag worker") == ["worker"]
    for name in replicas:
        _, params = parsed(ours()[name]["command"])
        assert params["host"] == "0.0.0.0" and params["no_ingest"], params
        assert settings_of(name).jobs.run_in_server is False, name
        assert settings_of(name).auth.rate_limit_store == "database", name


def test_every_process_shares_one_database_and_one_bucket() -> None:
    every = [settings_of(name) for name in ours()]
    assert len({s.database_url for s in every}) == 1
    assert every[0].database_url.startswith("postgresql+asyncpg://rag:")
    assert len({(s.storage.url, s.storage.endpoint_url) for s in every}) == 1
    assert every[0].storage.url.startswith("s3://"), "a folder is one machine's"
    # The migration runs before anything else touches the database.
    (migrate,) = with_command("rag db upgrade")
    for name in ours():
        if name != migrate:
            condition = ours()[name]["depends_on"][migrate]["condition"]
            assert condition == "service_completed_successfully", name


def test_replicas_are_probed_on_readyz_and_balanced_by_the_load_balancer() -> None:
    nginx = (ROOT / "deploy" / "nginx.conf").read_text(encoding="utf-8")
    upstream = re.findall(r"^\s*server ([\w-]+):(\d+)", nginx, re.M)
    replicas = with_command("rag serve")
    for name in replicas:
        _, params = parsed(ours()[name]["command"])
        probe = " ".join(ours()[name]["healthcheck"]["test"])
        assert f"http://localhost:{params['port']}/readyz" in probe, probe
        assert (name, str(params["port"])) in upstream, upstream
        # The probe's Host must be one the replica serves.
        assert "localhost" in settings_of(name).server.allowed_hosts
    assert len(upstream) == len(replicas)
    balancer = services()["nginx"]["depends_on"]
    assert {name: balancer[name]["condition"] for name in replicas} == dict.fromkeys(
        replicas, "service_healthy"
    )


def test_secrets_are_left_to_the_environment() -> None:
    for name, service in services().items():
        for variable, value in service.get("environment", {}).items():
            if variable in SECRET_ENV or "PASSWORD" in variable or "ROOT_USER" in variable:
                assert VARIABLE.fullmatch(str(value)), (name, variable)
    url = ours()["worker"]["environment"]["RAG_DATABASE__URL"]
    assert re.search(r"//rag:\$\{POSTGRES_PASSWORD:\?[^}]*\}@", url), url


def test_the_image_brings_what_the_settings_need() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    extras = re.search(r"pip install .*-e '\.\[([\w,]+)\]'", dockerfile)
    assert extras is not None
    # asyncpg for the postgresql+asyncpg URL, obstore for the s3:// bucket.
    assert {"postgres", "s3"} <= set(extras.group(1).split(","))
    assert ".env" in (ROOT / ".dockerignore").read_text().split()
