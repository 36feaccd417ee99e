"""Redis fixtures for the outbox tests (PostgreSQL + pgBouncer come from tests/conftest.py)."""

from __future__ import annotations

import pytest

from testkit.redis import RedisServer


@pytest.fixture(scope="session")
def redis_server():
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_client(redis_server):
    """A client on an emptied Redis."""
    client = redis_server.client()
    client.flushall()
    yield client
    client.close()
