"""deploy/orthanc: the config is valid JSON wired to the Lua rule, the rule compiles (luac) and
routes exactly the cervical spine MR series (run in a real Lua 5.3 with Orthanc's API stubbed)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.conftest import DEPLOY

ORTHANC = DEPLOY / "orthanc"
RULE = ORTHANC / "meddet-autoroute.lua"
LUAC = shutil.which("luac5.3") or shutil.which("luac")
LUA = shutil.which("lua5.3") or shutil.which("lua")
NEEDS_LUA = pytest.mark.skipif(LUA is None or LUAC is None, reason="Lua 5.3 (Debian lua5.3) not installed")


@pytest.fixture(scope="module")
def config() -> dict:
    return json.loads((ORTHANC / "orthanc.json").read_text())


def test_config_declares_the_node_and_the_lua_rule(config: dict) -> None:
    aet, host, port = config["DicomModalities"]["MEDDET"]
    assert "MEDDET" in aet and host and port
    assert [(ORTHANC / script).is_file() for script in config["LuaScripts"]] == [True]
    assert config["DicomWeb"]["Enable"] is True
    assert config["StableAge"] > 0


def test_config_is_not_open_to_the_network_without_a_password(config: dict) -> None:
    assert not config["RemoteAccessAllowed"] or config["AuthenticationEnabled"]


@NEEDS_LUA
def test_rule_compiles() -> None:
    result = subprocess.run([LUAC, "-p", str(RULE)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


DRIVER = """
local studies = {}
function RestApiGet(uri) return studies[uri] end
function ParseJson(value) return value end
function DumpJson(value) return value end
function RestApiPost(uri, body) print('SENT ' .. body.Resources[1] .. ' ' .. uri .. ' ' .. tostring(body.Synchronous)) end
dofile(RULE)
local function case(id, tags, studyDescription)
  studies['/series/' .. id .. '/study'] = { MainDicomTags = { StudyDescription = studyDescription } }
  OnStableSeries(id, tags, {})
end
case('cspine', { Modality = 'MR', BodyPartExamined = 'CSPINE' }, 'MRI')
case('c-spine-desc', { Modality = 'MR', SeriesDescription = 'Sag T2 C-Spine' }, nil)
case('hws-study', { Modality = 'MR', BodyPartExamined = '' }, 'MRT der HWS')
case('cervical-protocol', { Modality = 'MR', ProtocolName = 't2_tse_sag_cervical' }, nil)
case('lumbar', { Modality = 'MR', BodyPartExamined = 'LSPINE', SeriesDescription = 'sag T2' }, 'MRT LWS')
case('knee', { Modality = 'MR', BodyPartExamined = 'KNEE' }, 'Knee')
case('ct-cspine', { Modality = 'CT', BodyPartExamined = 'CSPINE' }, 'CT C-Spine')
case('our-sr', { Modality = 'SR', BodyPartExamined = 'CSPINE' }, 'MRI C-Spine')
case('our-seg', { Modality = 'SEG', SeriesDescription = 'MedDet cervical herniations' }, nil)
"""


@NEEDS_LUA
def test_rule_routes_only_cervical_spine_mr(tmp_path: Path) -> None:
    driver = tmp_path / "driver.lua"
    driver.write_text(DRIVER.replace("dofile(RULE)", f"dofile({json.dumps(str(RULE))})"))
    result = subprocess.run([LUA, str(driver)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    sent = [line.split()[1:] for line in result.stdout.splitlines() if line.startswith("SENT ")]
    store = ["/modalities/MEDDET/store", "false"]
    assert sent == [[series, *store] for series in ("cspine", "c-spine-desc", "hws-study", "cervical-protocol")]
