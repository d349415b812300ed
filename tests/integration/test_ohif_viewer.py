"""Seen where radiologists look (issue 16): a synthetic study goes through ``meddet serve`` to
Orthanc, and the OHIF Viewer (npm ``@ohif/app``, pinned in tests/integration/ohif.py), served
on loopback against Orthanc's DICOMweb, shows our results in Debian's Chromium, driven by
Playwright. Checked from the page's DOM (and the viewport's pixels), not only from screenshots:

- the SR loads as tracked measurements: one per reported disc, titled like the GSPS text
  ("C5-C6 herniation 91%"), with the level as finding site; its overlay shows our numbers;
- the SEG is listed with one segment per herniated disc ("C5-C6 herniation") and drawn in our
  recommended colours;
- the GSPS is listed but refused ("SOP Class UID is not supported"), which docs/conformance.md
  states, with the burned-in secondary capture as the fallback; the SC is displayed.

Everything runs in one network namespace holding only loopback (tests/integration/orthanc_netns.py).
Screenshots are written to the test's temporary folder, and to ``MEDDET_OHIF_FIGURES`` when set
(``MEDDET_OHIF_FIGURES=docs/figures`` refreshes the ones docs/radiologist.md shows).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import pytest

from dicom_node.loopback import wait_for
from tests.integration import ohif
from tests.integration.orthanc_netns import namespace_or_skip, route_synthetic_study

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SEED = 1  # the phantom with two herniated levels (as tests/integration/test_orthanc_loop.py)
KINDS = ("sr", "seg", "gsps", "sc")
DESCRIPTIONS = {  # what the study browser lists (dicom_node/results)
    "sr": "MedDet findings (AI, preliminary)",
    "seg": "MedDet herniations (AI, SEG)",
    "gsps": "MedDet findings (AI, GSPS)",
    "sc": "MedDet findings (AI, burned in)",
}


def _label(finding: dict) -> str:
    """The measurement title we expect: the GSPS text (certainty of the stated finding)."""
    herniation = finding["label"] == "herniation"
    p = finding.get("probability")
    certainty = finding["score"] if p is None else (p if herniation else 1 - p)
    level = finding["level"] if finding["level"] != "unknown" else "disc (level unknown)"
    return f"{level} {'herniation' if herniation else 'normal'} {round(certainty * 100)}%"


@pytest.fixture(scope="module")
def viewed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Run the loop (Orthanc -> node -> Orthanc), then OHIF on the study; the browser's report."""
    reason = ohif.unavailable_reason()
    if reason:
        pytest.skip(reason)
    with namespace_or_skip() as ns:
        tmp = tmp_path_factory.mktemp("ohif")
        started = time.monotonic()
        # this destination also gets the burned-in secondary capture, the GSPS fallback
        routed = route_synthetic_study(ns, tmp, SEED, stable_age=1, quiet_period=2, objects=KINDS)
        orthanc, study, written = routed.orthanc, routed.study, routed.results

        def stored() -> list[dict] | None:
            series = orthanc.series_of_study(study["study_instance_uid"])
            results = sum(len(s["Instances"]) for s in series if s["MainDicomTags"].get("Modality") != "MR")
            return series if results >= len(written.objects) else None

        series = wait_for(stored, 60, lambda: f"the results in Orthanc\n{orthanc.log_text()[-3000:]}")
        loop_s = time.monotonic() - started

        herniations = [f for f in written.findings["findings"] if f["label"] == "herniation"]
        expected = {
            "series": len(series),
            "sr": DESCRIPTIONS["sr"],
            "seg": DESCRIPTIONS["seg"] if herniations else None,
            "gsps": DESCRIPTIONS["gsps"],
            "sc": DESCRIPTIONS["sc"],
            "measurements": len(written.findings["findings"]),
            "segments": len(herniations),
        }
        env = dict(
            os.environ,
            ORTHANC_URL=f"http://127.0.0.1:{orthanc.http_port}",
            ORTHANC_AUTHORIZATION=orthanc.authorization,
            OMP_NUM_THREADS="1",
        )
        browser = ns.run(
            [
                sys.executable,
                "-m",
                "tests.integration.ohif",
                study["study_instance_uid"],
                json.dumps(expected),
                str(tmp / "screenshots"),
            ],
            cwd=REPO,
            env=env,
            timeout=180,
        )
        output = browser.stdout.decode(errors="replace")
        assert browser.returncode == 0, output + browser.stderr.decode(errors="replace")[-4000:]
        report = json.loads(output)
    if "chromium_error" in report:
        pytest.skip(f"Chromium cannot start here: {report['chromium_error']}")
    print(f"loop {loop_s:.0f} s, browser {report['seconds']} (s since launch)")
    figures = os.environ.get("MEDDET_OHIF_FIGURES")
    if figures:
        for shot in report.get("screenshots", []):
            shutil.copy(shot, Path(figures) / Path(shot).name)
    assert "error" not in report, f"{report['error']}\nscreenshots: {report.get('screenshots')}"
    return {"report": report, "findings": written.findings, "herniations": herniations}


def test_study_browser_lists_every_result_series(viewed: dict) -> None:
    listed = {row["description"]: row for row in viewed["report"]["series"]}
    kinds = [k for k in KINDS if k != "seg" or viewed["herniations"]]
    assert {DESCRIPTIONS[k] for k in kinds} <= set(listed)
    modalities = {"sr": "SR", "seg": "SEG", "gsps": "PR", "sc": "OT"}
    assert all(listed[DESCRIPTIONS[k]]["modality"] == modalities[k] for k in kinds)
    assert viewed["report"]["http_errors"] == []  # every static file and DICOMweb call answered


def test_sr_measurements_list_one_entry_per_level_with_its_label(viewed: dict) -> None:
    report, findings = viewed["report"], viewed["findings"]["findings"]
    assert report["sr_prompt"] == "Do you want to continue tracking measurements for this study?"
    titles = [row["title"] for row in report["measurements"]]
    assert sorted(titles) == sorted(_label(f) for f in findings)  # one per disc, no more
    for finding in findings:
        [row] = [r for r in report["measurements"] if r["title"] == _label(finding)]
        herniation = finding["label"] == "herniation"
        assert ("Herniation of intervertebral disc" if herniation else "Normal") in row["details"]
        if finding["level"] != "unknown":  # the finding site, as SNOMED CT names the disc
            assert finding["level"].replace("-", "/") + " disc" in row["details"]
    assert report["measurement_boxes"] >= 1  # the key slice's boxes are drawn


def test_sr_overlay_shows_our_numbers(viewed: dict) -> None:
    overlay = viewed["report"]["sr_overlay"]
    assert overlay, "nothing drawn over the SR's first key slice"
    for block in overlay:
        assert "Certainty of Finding:" in block and "Probability:" in block and "Threshold Value:" in block


def test_seg_is_listed_with_our_segment_labels_and_drawn(viewed: dict) -> None:
    report = viewed["report"]
    if not viewed["herniations"]:
        pytest.skip("the model called no herniation on this study: no SEG")
    assert report["seg_prompt"] == "Do you want to open this Segmentation?"
    # discs of unknown level are numbered in document order, normal ones included (as the SR's)
    unknown = [f for f in viewed["findings"]["findings"] if f["level"] == "unknown"]
    labels = [
        f"{f['level']} herniation" if f["level"] != "unknown" else f"herniation, level unknown ({unknown.index(f) + 1})"
        for f in viewed["herniations"]
    ]
    assert [row["title"] for row in report["segments"]] == labels
    # the overlay is drawn on the image: the grey canvas holds pixels of our red/orange segments
    assert report["seg_canvas"]["warm"] > ohif.SEG_PIXELS, report["seg_canvas"]


def test_gsps_is_refused_and_the_burned_in_fallback_is_shown(viewed: dict) -> None:
    """docs/conformance.md section 6 says so: OHIF does not apply GSPS; the SC shows the boxes."""
    report = viewed["report"]
    [gsps] = [row for row in report["series"] if row["description"] == DESCRIPTIONS["gsps"]]
    assert gsps["messages"] == ["SOP Class UID is not supported."], (
        "OHIF's answer to our GSPS changed: update docs/conformance.md (section 6) and this test"
    )
    assert DESCRIPTIONS["sc"] in report["sc_viewport"]
