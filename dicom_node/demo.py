"""``meddet demo``: the whole loop on one machine, made of the real parts.

A synthetic study is sent with a Storage SCU to ``meddet serve`` (a subprocess in embedded mode,
data in the demo folder), which analyses it and sends its result objects to a built-in test
PACS (a pynetdicom Storage SCP on loopback). The CLI command wires these pieces; the functions
here have no global state and do no I/O at import; the loopback parts (test PACS, node
subprocess, free port, wait) live in :mod:`dicom_node.loopback`, shared with the tests.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import Dataset

from dicom_node.analysis import FINDINGS_FILE, read_manifest

DEMO_AE = "DEMOSCU"


@dataclass(frozen=True)
class JobResults:
    """What the worker wrote for a series: findings.json and the manifest of result objects."""

    folder: Path
    findings: dict[str, Any]
    objects: list[dict[str, str]]  # {"kind", "file", "sop_instance_uid"}


def find_results(data_dir: Path, series_uid: str) -> JobResults | None:
    """The finished results of ``series_uid`` under the node's data dir, None while there are none.

    The folders have the layout of :func:`dicom_node.analysis.write_results`: the manifest
    (objects.json) is written last, so its presence means the run is complete.
    """
    for folder in sorted(p for p in (data_dir / "results").glob("*") if p.is_dir()):
        findings = folder / FINDINGS_FILE
        manifest = read_manifest(folder)
        if manifest is not None and findings.is_file():
            document = json.loads(findings.read_text())
            if document["series_instance_uid"] == series_uid:
                return JobResults(folder, document, manifest)
    return None


def all_received(received: Sequence[Dataset], results: JobResults) -> bool:
    """True once the PACS holds every result object of the run."""
    uids = {str(ds.SOPInstanceUID) for ds in received}
    return all(item["sop_instance_uid"] in uids for item in results.objects)


def key_finding(findings: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The finding to show: the most certain herniation, else the most certain finding."""
    if not findings:
        return None
    return max(findings, key=lambda f: (f["label"] == "herniation", f["score"]))


def finding_text(finding: dict[str, Any]) -> str:
    """As the GSPS writes it: ``C5-C6 herniation 91%``, ``disc (level unknown) normal disc 88%``
    (the certainty of the stated finding: p for a herniation, 1 - p for a normal disc)."""
    name = finding["level"] if finding["level"] != "unknown" else "disc (level unknown)"
    p = finding.get("probability")
    certainty = finding["score"] if p is None else (p if finding["label"] == "herniation" else 1 - p)
    return f"{name} {finding['label'].replace('_', ' ')} {certainty:.0%}"


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Window a slice to 0-255 between its 1st and 99.5th percentiles. [H, W] -> [H, W] uint8."""
    low, high = np.percentile(pixels, [1.0, 99.5])
    scaled = (pixels.astype(np.float32) - low) / max(float(high - low), 1e-6)
    windowed: np.ndarray = (np.clip(scaled, 0.0, 1.0) * 255).astype(np.uint8)
    return windowed


def draw_key_slice(source: Dataset, findings: Sequence[dict[str, Any]], out: Path, scale: int = 2) -> Path:
    """Save ``source``'s pixels as a PNG with the boxes of the findings on that slice drawn."""
    image = render_key_slice(source, findings, scale, "MedDet demo - synthetic data, not for diagnosis")
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out)
    return out


def render_key_slice(
    source: Dataset,
    findings: Sequence[dict[str, Any]],
    scale: int = 2,
    banner: str | None = None,
    frame: int = 1,
) -> Any:
    """``source``'s pixels (``frame``, 1-based, of a multi-frame source) as an RGB PIL image,
    ``scale`` times larger, with the boxes and texts of the findings on that slice drawn."""
    from PIL import Image, ImageDraw, ImageFont

    uid = str(source.SOPInstanceUID)
    pixels = source.pixel_array
    if int(source.get("NumberOfFrames", 1) or 1) > 1:
        pixels = pixels[frame - 1]
    image = Image.fromarray(to_uint8(pixels)).convert("RGB")
    image = image.resize((image.width * scale, image.height * scale), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=8 * scale)
    for finding in findings:
        if finding["sop_instance_uid"] != uid or int(finding.get("frame", 1)) != frame:
            continue
        colour = (255, 60, 60) if finding["label"] == "herniation" else (80, 220, 80)
        x0, y0, x1, y1 = (v * scale for v in finding["box"])
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=2)
        text = finding_text(finding)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        x = min(max(x0, 0), image.width - (right - left) - 2)  # keep the label inside the image
        y = y0 - (bottom - top) - 4 if y0 - (bottom - top) - 4 >= 0 else y1 + 2
        draw.text((x, y), text, fill=colour, font=font)
    if banner:
        draw.text((6, 6), banner, fill=(255, 255, 0), font=font)
    return image


@dataclass(frozen=True)
class LevelRow:
    """One line of the demo's table."""

    level: str
    label: str
    score: float  # the herniation probability
    slice_number: int | None
    truth: str


def level_rows(
    findings: Sequence[dict[str, Any]], instance_numbers: dict[str, int], herniated_truth: set[str] | None
) -> list[LevelRow]:
    """Findings per level, cranial to caudal, with the phantom's ground truth when known."""
    rows = []
    for finding in sorted(findings, key=lambda f: f["level"]):
        truth = (
            "?"
            if herniated_truth is None or finding["level"] == "unknown"
            else ("herniation" if finding["level"] in herniated_truth else "normal")
        )
        rows.append(
            LevelRow(
                finding["level"],
                finding["label"],
                float(finding["score"]),
                instance_numbers.get(finding["sop_instance_uid"]),
                truth,
            )
        )
    return rows
