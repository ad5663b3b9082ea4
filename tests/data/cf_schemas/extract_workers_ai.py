"""Regenerate the Workers AI schema fragments in this folder from the shared reference.

    python tests/data/cf_schemas/extract_workers_ai.py [path/to/shared/reference]

Reads ``cloudflare-openapi-subset.json`` (to learn which component each model path
uses) and ``cloudflare-openapi-subset.deref.json`` (the same with every ``$ref``
inlined), and writes one draft-07 JSON Schema per component plus
``workers-ai_models.json``, the model -> (input, output) map the fake routes by.
OpenAPI 3.0's ``nullable`` becomes a JSON-Schema type union; ``example`` and
``readOnly`` are dropped (annotations only).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_REFERENCE = HERE.parents[3] / "shared" / "reference"
PREFIX = "/accounts/{account_id}/ai/run/"
EXTRA = ("workers-ai_error-response", "workers-ai_usage")


def to_json_schema(node: Any) -> Any:
    if isinstance(node, list):
        return [to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {
        key: to_json_schema(value)
        for key, value in node.items()
        if key not in ("example", "readOnly", "nullable")
    }
    if node.get("nullable"):
        if "type" in out:
            out["type"] = [out["type"], "null"]
            if "enum" in out:
                out["enum"] = [*out["enum"], None]
        else:
            out = {"anyOf": [out, {"type": "null"}]} if out else {}
    return out


def ref_name(schema: dict[str, Any]) -> str:
    return str(schema["$ref"]).rsplit("/", 1)[-1]


def write(name: str, schema: Any, origin: str) -> None:
    document = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$comment": f"From shared/reference/cloudflare-openapi-subset.deref.json {origin}; "
        "OpenAPI 3.0 'nullable' rewritten as a JSON-Schema type union, "
        "'example'/'readOnly' dropped.",
        **to_json_schema(schema),
    }
    (HERE / f"{name}.json").write_text(json.dumps(document, indent=1) + "\n")


def main(reference: Path) -> None:
    plain = json.loads((reference / "cloudflare-openapi-subset.json").read_text())
    deref = json.loads((reference / "cloudflare-openapi-subset.deref.json").read_text())
    components = deref["components"]["schemas"]
    models: dict[str, dict[str, str]] = {}
    for path, item in plain["paths"].items():
        if not path.startswith(PREFIX):
            continue
        post = item["post"]
        request = post["requestBody"]["content"]["application/json"]["schema"]
        response = post["responses"]["200"]["content"]["application/json"]["schema"]
        result = response["properties"]["result"]
        model = path.removeprefix(PREFIX)
        if "$ref" not in request:  # the generic {model_name} path: inline anyOf of tasks
            generic = deref["paths"][path]["post"]
            schema = generic["requestBody"]["content"]["application/json"]["schema"]
            write("workers-ai_run-any-model-input", schema, f"paths['{path}'] requestBody")
            models["*"] = {"input": "workers-ai_run-any-model-input"}
            continue
        models[model] = {"input": ref_name(request), "output": ref_name(result)}
    for name in {n for m in models.values() for n in m.values()} | set(EXTRA):
        if name in components:
            write(name, components[name], f"components.schemas['{name}']")
    index = {"$comment": "Model id -> schema fragment names, from the subset's paths.", **models}
    (HERE / "workers-ai_models.json").write_text(json.dumps(index, indent=1) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_REFERENCE)
