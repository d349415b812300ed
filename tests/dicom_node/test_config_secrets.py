"""`meddet config show` and configuration errors never print passwords (issue 12, item 8)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dicom_node.cli import (
    app,
    node,  # noqa: F401  (registers `config show`)
)

DB_URL = "postgresql://u:s3cret@h/db"
BROKER_URL = "redis://:s3cret@h:6379/0"


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in ("MEDDET_CONFIG", "MEDDET_HOST", "MEDDET_PORT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MEDDET_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MEDDET_DATABASE_URL", DB_URL)
    monkeypatch.setenv("MEDDET_BROKER_URL", BROKER_URL)
    monkeypatch.setenv("COLUMNS", "400")  # the rich table must not wrap a URL across lines


def _invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


@pytest.mark.usefixtures("secret_env")
def test_config_show_table_masks_passwords() -> None:
    code, out = _invoke("config", "show")
    assert code == 0, out
    assert "s3cret" not in out
    assert "postgresql://u:***@h/db" in out and "redis://:***@h:6379/0" in out


@pytest.mark.usefixtures("secret_env")
def test_config_show_json_masks_passwords() -> None:
    code, out = _invoke("config", "show", "--json")
    assert code == 0, out
    assert "s3cret" not in out
    values = json.loads(out)
    assert values["database_url"]["value"] == "postgresql://u:***@h/db"
    assert values["broker_url"]["value"] == "redis://:***@h:6379/0"


@pytest.mark.usefixtures("secret_env")
def test_configuration_error_masks_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDDET_HOST", "0.0.0.0")  # refused: no allow-list
    code, out = _invoke("config", "show")
    assert code == 2
    assert "Configuration error" in out and "allow-list" in out
    assert "s3cret" not in out


@pytest.mark.usefixtures("secret_env")
def test_configuration_error_from_toml_masks_passwords(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pydantic shortens long inputs in the middle, cutting the scheme off: the error must not
    echo inputs at all."""
    monkeypatch.delenv("MEDDET_DATABASE_URL")
    path = tmp_path / "meddet.toml"
    path.write_text('host = "0.0.0.0"\ndatabase_url = "postgresql://admin:t0ml-pw@db:5432/meddet"\n')
    code, out = _invoke("--config", str(path), "config", "show")
    assert code == 2 and "allow-list" in out
    assert "t0ml-pw" not in out and "s3cret" not in out


@pytest.mark.usefixtures("secret_env")
def test_configuration_error_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDDET_PORT", "abc")
    code, out = _invoke("config", "show")
    assert code == 2 and "port" in out and "integer" in out


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("postgresql+psycopg2://u:p%40ss@h:5432/db", "postgresql+psycopg2://u:***@h:5432/db"),
        ("rediss://default:pw@cache:6380/1", "rediss://default:***@cache:6380/1"),
        ("redis://h:6379/0", "redis://h:6379/0"),
        ("sqlite:////data/meddet.db", "sqlite:////data/meddet.db"),
        ("{'x': 'postgresql://u:a@b@h/db'}", "{'x': 'postgresql://u:***@h/db'}"),
        ("postgresql://h/db?user=u&password=pw", "postgresql://h/db?user=u&password=***"),
    ],
)
def test_mask_secrets(text: str, masked: str) -> None:
    from dicom_node.config import mask_secrets

    assert mask_secrets(text) == masked
