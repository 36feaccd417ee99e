"""docs/openapi.json: the API's OpenAPI document (app.openapi), committed and checked like
the dashboards and alert rules (`sparkops check-generated`)."""

from __future__ import annotations

from app import openapi
from sparkops.artefacts import Artefact

OPENAPI_PATH = "docs/openapi.json"
ARTEFACTS: list[Artefact] = [
    Artefact(path=OPENAPI_PATH, build=openapi.render, command="sparkops check-generated --write")
]
