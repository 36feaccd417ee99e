"""Does an HTTP answer keep to the app's OpenAPI document (app.openapi)? Used by the test of
real answers (test_openapi.py) and by the fuzz runs.

The document's `$ref`s are resolved inline, then bodies are validated with
openapi-schema-validator's OAS 3.1 validator (JSON Schema 2020-12 plus OpenAPI's formats).
"""

from __future__ import annotations

from functools import cache

import httpx
from jsonschema import FormatChecker
from openapi_schema_validator import OAS31Validator

from app import openapi


def resolve(node, doc: dict):
    """`node` with every local `$ref` replaced by what it points at (the document has no
    cycles)."""
    if isinstance(node, dict):
        if "$ref" in node:
            target = doc
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            return resolve(target, doc)
        return {k: resolve(v, doc) for k, v in node.items()}
    if isinstance(node, list):
        return [resolve(v, doc) for v in node]
    return node


@cache
def document() -> dict:
    doc = openapi.document()
    return resolve(doc, doc)


def operation(template: str, method: str) -> dict | None:
    method = "get" if method.upper() == "HEAD" else method.lower()
    return document()["paths"].get(template, {}).get(method)


def problems(template: str, method: str, r: httpx.Response) -> list[str]:
    """What in the answer breaks the document (empty: it conforms). A method the document
    does not list for the path must be a 405 with Allow; a path it does not list a 404."""
    op = operation(template, method)
    if template not in document()["paths"]:
        return [] if r.status_code == 404 else [f"{r.status_code} for an unlisted path"]
    if op is None:
        return [] if r.status_code == 405 and r.headers.get("allow") else [
            f"{r.status_code} for an unlisted method (expected 405 with Allow)"]  # fmt: skip
    spec = op["responses"].get(str(r.status_code))
    if spec is None:
        return [f"status {r.status_code} is not listed for {method} {template}"]
    found = []
    for name, header in spec.get("headers", {}).items():
        value = r.headers.get(name)
        if value is None:
            if header.get("required"):
                found.append(f"header {name} missing")
            continue
        for error in OAS31Validator(header["schema"]).iter_errors(value):
            found.append(f"header {name}: {error.message}")
    content = spec.get("content")
    if not content:
        if r.content and method.upper() != "HEAD":
            found.append(f"a body where the document lists none: {r.content[:100]!r}")
        return found
    ctype = r.headers.get("content-type", "").split(";")[0].strip()
    if ctype not in content:
        return [*found, f"content-type {ctype!r} is not one of {sorted(content)}"]
    if method.upper() == "HEAD" or ctype != "application/json":
        return found
    try:
        body = r.json()
    except ValueError:
        return [*found, f"not JSON: {r.content[:100]!r}"]
    validator = OAS31Validator(content[ctype]["schema"], format_checker=FormatChecker())
    found += [f"body at {list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(body)]
    return found
