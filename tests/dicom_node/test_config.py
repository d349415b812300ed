from pathlib import Path

import pytest
from pydantic import ValidationError

from dicom_node.config import Settings, load_settings, setting_sources
from dicom_node.destinations import Destination


def test_defaults_are_embedded_and_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(__import__("os").environ):
        if key.startswith("MEDDET_"):
            monkeypatch.delenv(key)
    settings = Settings()
    assert settings.embedded and settings.host == "127.0.0.1" and settings.port == 11112
    assert settings.effective_database_url.startswith("sqlite:///")


def test_env_lists_and_destinations(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDDET_ALLOWED_AES", "PACS1, MODALITY")
    monkeypatch.setenv("MEDDET_DESTINATIONS", "PACS@127.0.0.1:4242,ARCH@[::1]:104")
    settings = Settings()
    assert settings.allowed_aes == ["PACS1", "MODALITY"]
    assert settings.destinations == [
        Destination.parse("PACS@127.0.0.1:4242"),
        Destination(ae_title="ARCH", host="::1", port=104),
    ]
    assert str(settings.destinations[1]) == "ARCH@[::1]:104"


def test_binding_beyond_loopback_needs_an_allow_list_or_explicit_opt_in() -> None:
    with pytest.raises(ValidationError, match="allow-list"):
        Settings(host="0.0.0.0")
    assert Settings(host="0.0.0.0", allowed_aes=["PACS"]).host == "0.0.0.0"
    assert Settings(host="0.0.0.0", accept_any_ae=True).accept_any_ae


def test_toml_file_and_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEDDET_PORT", raising=False)
    monkeypatch.setenv("MEDDET_AE_TITLE", "FROMENV")
    path = tmp_path / "meddet.toml"
    path.write_text('port = 10400\nae_title = "FROMTOML"\nquiet_period = 5\n')
    monkeypatch.delenv("MEDDET_CONFIG", raising=False)
    settings = load_settings(path)
    assert settings.port == 10400 and settings.ae_title == "FROMENV"  # env beats TOML
    sources = setting_sources(settings, path)
    assert sources["ae_title"] == "env" and sources["port"].startswith("toml")
    assert sources["host"] == "default"


def test_bad_destination_is_a_clear_error() -> None:
    with pytest.raises(ValidationError, match="AE@host:port"):
        Settings(destinations="nonsense")


def test_destination_with_its_own_result_objects() -> None:
    dest = Destination.parse("OLDPACS@127.0.0.1:104?objects=sr+gsps")
    assert dest.objects == ("sr", "gsps") and dest.kinds(["sr", "seg", "gsps"]) == ("sr", "gsps")
    assert str(dest) == "OLDPACS@127.0.0.1:104?objects=sr+gsps"
    assert Destination.parse("PACS@127.0.0.1:104").kinds(["sr", "seg"]) == ("sr", "seg")
    with pytest.raises(ValueError, match="unknown result kinds"):
        Destination.parse("PACS@127.0.0.1:104?objects=sr+pdf")
    with pytest.raises(ValueError, match="unknown option"):
        Destination.parse("PACS@127.0.0.1:104?format=x")
