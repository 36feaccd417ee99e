"""The API's OpenAPI document as the fuzzer reads it: the app's own (app.openapi), with its
`$ref`s resolved (tests/api/openapi_check.py), so the fuzzer and the app never disagree on
an operation, a parameter's pattern or the statuses an operation may answer."""

from __future__ import annotations

from tests.api.openapi_check import document

SCHEMA = document()
ORDER = SCHEMA["components"]["schemas"]["OrderRequest"]


def statuses(path: str, method: str) -> set[int]:
    """The statuses `method` on `path` (a template) may answer: a method the document does
    not list for the path is a 405 (HEAD goes with GET)."""
    operations = SCHEMA["paths"][path]
    method = "get" if method == "HEAD" else method.lower()
    if method not in operations:
        return {405}
    return {int(status) for status in operations[method]["responses"]}
