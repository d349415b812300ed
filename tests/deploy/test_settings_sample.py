"""deploy/meddet.toml: loads into Settings and documents every setting."""

from __future__ import annotations

import os
import re

import pytest

from dicom_node.config import Settings, load_settings
from tests.deploy.conftest import DEPLOY

SAMPLE = DEPLOY / "meddet.toml"
KEY = re.compile(r"#? ?(\w+) = ")


def test_sample_loads_into_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("MEDDET_"):
            monkeypatch.delenv(name)
    settings = load_settings(SAMPLE)
    assert settings.embedded and str(settings.data_dir) == "/var/lib/meddet"


def test_every_setting_is_in_the_sample_with_a_comment() -> None:
    lines = SAMPLE.read_text().splitlines()
    keys = {m.group(1): i for i, line in enumerate(lines) if (m := KEY.match(line))}
    assert set(Settings.model_fields) <= set(keys), "settings missing from the sample"
    for name in Settings.model_fields:
        above = keys[name] - 1
        while above >= 0 and KEY.match(lines[above]):  # skip keys documented together
            above -= 1
        assert lines[above].startswith("# "), f"setting {name} has no comment above it"
