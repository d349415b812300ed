"""A real console (uvicorn on a thread, free port) over a real, seeded audit DB: SQLite or the
PostgreSQL on 127.0.0.1:5432."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker

from dicom_node.audit.db import make_engine, make_session_factory
from dicom_node.cli.console import job_operations
from dicom_node.config import Settings
from dicom_node.console import users
from dicom_node.console.server import ConsoleThread
from dicom_node.loopback import free_port
from migrations import upgrade
from tests.console.harness import ADMIN, RADIOLOGIST
from tests.console.seed import Seeded, seed

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class Running:
    url: str
    settings: Settings
    sessions: sessionmaker[Session]
    seeded: Seeded
    server: ConsoleThread

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)

    def login(self, who: tuple[str, str] = ADMIN, client: httpx.Client | None = None) -> httpx.Client:
        """A client logged in as ``who`` (through the login form, as a browser does)."""
        client = client or self.client()
        form = client.get("/login")
        token = CSRF.search(form.text).group(1)
        response = client.post(
            "/login", data={"csrf_token": token, "username": who[0], "password": who[1], "next": "/"}
        )
        assert response.status_code == 303 and response.headers["location"] == "/", response.text[:300]
        return client


def csrf_of(client: httpx.Client, page: str = "/") -> str:
    return CSRF.search(client.get(page).text).group(1)


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'audit.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def start_console(database_url: str, tmp_path: Path) -> Iterator[Callable[..., Running]]:
    """``start_console(**settings)``: migrate, seed, add alice (admin) and rita (radiologist),
    serve the console; stopped after the test."""
    started: list[Running] = []
    engines = []

    def start(**overrides: Any) -> Running:
        upgrade(database_url)
        engine = make_engine(database_url)
        engines.append(engine)
        sessions = make_session_factory(engine)
        settings = Settings(
            data_dir=tmp_path / "data", database_url=database_url, console_port=free_port(), **overrides
        )
        seeded = seed(settings, sessions)
        users.add_user(sessions, ADMIN[0], "admin", ADMIN[1], by="tests")
        users.add_user(sessions, RADIOLOGIST[0], "radiologist", RADIOLOGIST[1], by="tests")
        server = ConsoleThread(settings, sessions, "test-model", operations=job_operations("test-model")).start()
        running = Running(f"http://127.0.0.1:{settings.console_port}", settings, sessions, seeded, server)
        started.append(running)
        return running

    yield start
    for running in started:
        running.server.stop()
    for engine in engines:
        engine.dispose()


@pytest.fixture
def console(start_console: Callable[..., Running]) -> Running:
    return start_console()
