"""Fixtures of the API tests: a recording broker for routing tests and a TestClient on it. Settings
on a fresh store and a session on it come from tests/conftest.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from api_support import FakeBroker, TestClient, make_client

from core.config import Settings


@pytest.fixture
def broker() -> FakeBroker:
    return FakeBroker()


@pytest.fixture
def client(settings: Settings, broker: FakeBroker) -> Iterator[TestClient]:
    with make_client(broker) as test_client:
        yield test_client
