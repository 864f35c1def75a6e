"""Fixtures of the API tests (a plugin: `pytest_plugins = ["tests.integration._api_fixtures"]`)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.integration._api import World, make_world


@pytest.fixture
def app_client(settings: Any, database_url: str, mqtt_url: str) -> Iterator[TestClient]:
    """The app on this test's database, with its lifespan running."""
    from probation.app import create_app

    app = create_app(settings, database_url=database_url, mqtt_url=mqtt_url)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def world(database_url: str, settings: Any) -> World:
    """The world on this test's database."""
    return make_world(database_url, settings)


@pytest.fixture(scope="module")
def module_db(
    pg_server: Any, mqtt_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Any]]:
    """A migrated database and settings shared by a module's tests (for read-mostly tables)."""
    from probation.settings import Settings
    from tests.conftest import _drop_database, _new_database

    name = _new_database(pg_server)
    url = pg_server.url(name)
    s = Settings(database_url=url, mqtt_url=mqtt_url, data_dir=tmp_path_factory.mktemp("data"),
                 mqtt_prefix=f"test{uuid.uuid4().hex[:10]}/v1", jwt_secret="test-secret-" + "y" * 40)
    try:
        yield url, s
    finally:
        _drop_database(pg_server, name)


@pytest.fixture(scope="module")
def module_world(module_db: tuple[str, Any]) -> World:
    return make_world(*module_db)


@pytest.fixture(scope="module")
def module_client(module_db: tuple[str, Any]) -> Iterator[TestClient]:
    from probation.app import create_app

    url, s = module_db
    with TestClient(create_app(s, database_url=url, mqtt_url=s.mqtt_url),
                    raise_server_exceptions=False) as client:
        yield client
