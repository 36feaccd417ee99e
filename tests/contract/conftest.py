"""Consumer pacts for the exchange APIs (pact-python v3 API, V4 specification).

Each test declares the interactions it needs on a fresh Pact, drives the real client
against Pact's mock server, and merges the result into <repo>/pacts/ (git-ignored; CI keeps
the folder as an artefact). The session starts by removing this suite's old pact files so
an interaction renamed or dropped here does not survive in the artefact.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pact import Pact

REPO_ROOT = Path(__file__).resolve().parents[2]
PACT_DIR = REPO_ROOT / "pacts"
CONSUMER = "spark-app"
PROVIDERS = ("binance-api", "btcturk-api")


@pytest.fixture(scope="session", autouse=True)
def fresh_pact_files() -> Path:
    PACT_DIR.mkdir(exist_ok=True)
    for provider in PROVIDERS:
        (PACT_DIR / f"{CONSUMER}-{provider}.json").unlink(missing_ok=True)
    return PACT_DIR


def new_pact(provider: str) -> Pact:
    assert provider in PROVIDERS, provider
    return Pact(CONSUMER, provider).with_specification("V4")


@pytest.fixture
def binance_pact() -> Iterator[Pact]:
    pact = new_pact("binance-api")
    yield pact
    pact.write_file(PACT_DIR)


@pytest.fixture
def btcturk_pact() -> Iterator[Pact]:
    pact = new_pact("btcturk-api")
    yield pact
    pact.write_file(PACT_DIR)
