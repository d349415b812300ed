"""ResultKind and SrKind are defined once; settings and destinations refuse unknown values at start."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from dicom_node import destinations, kinds
from dicom_node.config import Settings, describe_config_error
from dicom_node.destinations import Destination
from dicom_node.results import KINDS, SR_KINDS
from dicom_node.results.sr import SR_CLASSES


def test_one_definition_shared_by_settings_destinations_and_results() -> None:
    assert kinds.RESULT_KINDS == ("sr", "seg", "gsps", "sc", "kos")
    assert KINDS is kinds.RESULT_KINDS and destinations.RESULT_KINDS is kinds.RESULT_KINDS
    assert SR_KINDS is kinds.SR_KINDS and set(SR_CLASSES) == set(kinds.SR_KINDS)


def test_result_objects_from_the_environment_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDDET_RESULT_OBJECTS", "sr, gsps ,kos")
    assert Settings().result_objects == ["sr", "gsps", "kos"]
    monkeypatch.setenv("MEDDET_RESULT_OBJECTS", "sr,sgr")
    with pytest.raises(ValidationError) as caught:
        Settings()
    message = describe_config_error(caught.value)
    assert "result_objects (MEDDET_RESULT_OBJECTS)" in message
    assert "unknown result kinds 'sgr'; allowed: sr, seg, gsps, sc, kos" in message


def test_result_objects_as_a_list_and_empty() -> None:
    assert Settings(result_objects=["seg"]).result_objects == ["seg"]
    assert Settings(result_objects="").result_objects == []
    with pytest.raises(ValidationError, match="unknown result kinds 'pdf'"):
        Settings(result_objects=["sr", "pdf"])


def test_sr_kind_is_refused_with_the_allowed_list(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings(sr_kind="comprehensive").sr_kind == "comprehensive"
    monkeypatch.setenv("MEDDET_SR_KIND", "basic")
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert "unknown SR kind 'basic'; allowed: 3d, comprehensive, enhanced" in describe_config_error(caught.value)


def test_destination_objects_use_the_same_kinds() -> None:
    assert Destination.parse("P@127.0.0.1:104?objects=kos+sr").objects == ("kos", "sr")
    with pytest.raises(ValueError, match="unknown result kinds 'pdf'; allowed: sr, seg, gsps, sc, kos"):
        Destination.parse("P@127.0.0.1:104?objects=sr+pdf")
    with pytest.raises(ValueError, match="unknown result kinds"):
        Settings(destinations="P@127.0.0.1:104?objects=sr+pdf")
