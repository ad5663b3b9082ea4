"""Cloudflare's own request and response schemas, as kept in ``tests/data/cf_schemas``.

The fragments come from the shared OpenAPI subset (see the README there); the fake
checks every request it is sent against them, and its own answers too, so neither the
client nor the fake can drift from Cloudflare's published shapes unnoticed.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft7Validator

SCHEMAS = Path(__file__).resolve().parents[1] / "data" / "cf_schemas"


@cache
def validator(name: str) -> Draft7Validator:
    schema = json.loads((SCHEMAS / f"{name}.json").read_text(encoding="utf-8"))
    Draft7Validator.check_schema(schema)
    return Draft7Validator(schema)


@cache
def _models() -> dict[str, dict[str, str]]:
    index = json.loads((SCHEMAS / "workers-ai_models.json").read_text(encoding="utf-8"))
    return {model: names for model, names in index.items() if not model.startswith("$")}


def model_schemas(model: str) -> dict[str, str] | None:
    """Input (and output) schema names of a model with its own path in the spec."""
    return _models().get(model)


def any_model_input() -> str:
    """The generic ``/ai/run/{model_name}`` request schema (any task)."""
    return _models()["*"]["input"]


def problems(name: str, value: Any) -> list[str]:
    """Every way ``value`` breaks schema ``name``, readable; empty when it conforms."""
    errors = sorted(validator(name).iter_errors(value), key=lambda e: list(e.absolute_path))
    return [f"{name}: {e.message} at {list(e.absolute_path)}" for e in errors]


def envelope_problems(body: Any, result_schema: str | None) -> list[str]:
    """Problems of a success envelope (``result`` checked against ``result_schema``)."""
    if not isinstance(body, dict):
        return [f"envelope is not an object: {body!r:.80}"]
    found = []
    if body.get("success") is not True or body.get("errors") != []:
        found.append(f"success envelope needs success=true, errors=[]: {body!r:.120}")
    if not isinstance(body.get("messages"), list):
        found.append("success envelope needs a messages list")
    if result_schema is not None:
        found += problems(result_schema, body.get("result"))
    return found
