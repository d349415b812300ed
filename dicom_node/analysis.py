"""The one analysis path: a decoded series -> detections -> findings per disc level -> result
objects (:func:`analyze_series`, pure), and the one results folder (:func:`write_results`).

``meddet predict``, the worker pipeline and the demo all go through here, so they write the
same layout::

    OUT/findings.json        the findings document (DESIGN.md section 3)
    OUT/00-sr.dcm, 01-seg.dcm, ...   one file per result object, ``NN-<kind>.dcm`` in build order
    OUT/objects.json         the manifest [{"kind", "file", "sop_instance_uid"}], written last:
                             when it is there, the results of the run are complete on disk

Each file is written atomically (temp file, fsync, rename: :mod:`dicom_node.atomic`).
The detector is anything that has the shape of :class:`Detector` (the real one is
``detector.analysis.Analyzer``); torch is imported only by the detector.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pydicom import Dataset, dcmread

from dicom_node.atomic import write_atomic
from dicom_node.kinds import ResultKind, SrKind
from dicom_node.logging import get_logger
from dicom_node.pixels import Series

if TYPE_CHECKING:
    import numpy as np

    from detector.analysis import Analyzer, SeriesAnalysis
    from detector.types import Detection

FINDINGS_FILE = "findings.json"
MANIFEST_FILE = "objects.json"  # written last: the results of a run are complete on disk

log = get_logger(__name__)
DEFAULT_KINDS: tuple[ResultKind, ...] = ("sr", "seg", "gsps")


class SliceDetector(Protocol):
    """The first stage: boxes per slice."""

    def predict(self, images: Sequence[np.ndarray], batch_size: int = ...) -> list[list[Detection]]: ...


class Detector(Protocol):
    """What the analysis needs of a model (``detector.analysis.Analyzer`` is the real one)."""

    @property
    def version(self) -> str: ...

    @property
    def detector(self) -> SliceDetector: ...

    def analyze(
        self,
        images: Sequence[np.ndarray],
        pixel_spacing: tuple[float, float],
        detections: list[list[Detection]] | None = None,
    ) -> SeriesAnalysis: ...


if TYPE_CHECKING:

    def _the_real_one_is_a_detector(analyzer: Analyzer) -> Detector:
        return analyzer  # mypy checks that detector.analysis.Analyzer has the Protocol's shape


#: ``step(name, **detail)``: a context manager around each stage, yielding a dict the stage
#: adds detail to (the worker times and records each stage with it).
Step = Callable[..., AbstractContextManager[dict[str, Any]]]


@contextmanager
def no_step(name: str, **detail: Any) -> Iterator[dict[str, Any]]:
    yield dict(detail)


@dataclass(frozen=True)
class Analysis:
    """The findings document of a series and its result objects ``(kind, dataset)``."""

    findings: dict[str, Any]
    objects: list[tuple[ResultKind, Dataset]]


def analyze_series(
    series: Series,
    detector: Detector,
    *,
    kinds: Sequence[ResultKind] = DEFAULT_KINDS,
    sr_kind: SrKind = "3d",
    threshold: float | None = None,
    batch_size: int | None = None,
    step: Step = no_step,
) -> Analysis:
    """Detect, name the levels, build the findings and the result objects of ``kinds``.

    No file is read or written. No result object is built when no disc was found (the
    findings document says so). Raises SeriesError (no pixel spacing) and FindingsError
    (the sources cannot make a result object); both are ValueErrors. ``threshold`` overrides
    the checkpoint's operating point; ``batch_size`` the detector's own.
    """
    from dicom_node.findings import build_findings
    from dicom_node.results import build_result_objects  # highdicom: imported when used

    images = series.images
    with step("detect", slices=len(series.slices)):
        spacing = series.pixel_spacing
        detections = None
        if batch_size is not None:
            detections = detector.detector.predict(images, batch_size=batch_size)
        analysis = detector.analyze(images, spacing, detections)
    with step("levels") as info:
        document = build_findings(series, analysis, detector.version, threshold)
        info["levels"] = len(document["findings"])
        info["anchor"] = document["levels"]["anchor"]
    with step("results") as info:
        objects: list[tuple[ResultKind, Dataset]] = []
        if document["findings"] and kinds:  # no disc seen: findings.json says so, nothing to send
            objects = build_result_objects(document, series.sources, kinds, sr_kind)
        info["objects"] = [kind for kind, _ in objects]
    return Analysis(document, objects)


def object_file_name(index: int, kind: str) -> str:
    return f"{index:02d}-{kind}.dcm"


def _save(ds: Dataset, path: Path) -> None:
    ds.save_as(path, enforce_file_format=True)


def write_results(
    out_dir: Path, document: dict[str, Any], objects: Sequence[tuple[ResultKind, Dataset]]
) -> list[dict[str, str]]:
    """findings.json, ``NN-<kind>.dcm`` per object, then the manifest; each file atomic.

    Returns the manifest: ``[{"kind", "file", "sop_instance_uid"}]`` in ``objects`` order.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(out_dir / FINDINGS_FILE, lambda p: p.write_text(json.dumps(document, indent=2) + "\n"))
    manifest = []
    for index, (kind, ds) in enumerate(objects):
        name = object_file_name(index, kind)
        write_atomic(out_dir / name, partial(_save, ds))
        manifest.append({"kind": kind, "file": name, "sop_instance_uid": str(ds.SOPInstanceUID)})
    write_atomic(out_dir / MANIFEST_FILE, lambda p: p.write_text(json.dumps(manifest, indent=2) + "\n"))
    return manifest


def write_result_objects(
    findings: Mapping[str, Any],
    sources: Sequence[Dataset],
    out_dir: Path,
    kinds: Sequence[ResultKind] = ("sr", "seg", "gsps"),
    sr_kind: SrKind = "3d",
) -> list[Path]:
    """Build the result objects of ``findings`` on ``sources`` and write them with the findings
    into ``out_dir`` (:func:`write_results`); the paths of the DICOM files, in build order."""
    from dicom_node.results import build_result_objects

    manifest = write_results(out_dir, dict(findings), build_result_objects(findings, sources, kinds, sr_kind))
    for item in manifest:
        log.info(
            "result written",
            kind=item["kind"],
            sop_instance_uid=item["sop_instance_uid"],
            path=str(out_dir / item["file"]),
        )
    return [out_dir / item["file"] for item in manifest]


def read_manifest(out_dir: Path) -> list[dict[str, str]] | None:
    """The manifest of a finished write, or None when it is not there."""
    path = out_dir / MANIFEST_FILE
    if not path.is_file():
        return None
    manifest: list[dict[str, str]] = json.loads(path.read_text())
    return manifest


def read_results(out_dir: Path) -> list[tuple[str, Dataset]] | None:
    """The result objects of a finished write, or None when the manifest is not there."""
    manifest = read_manifest(out_dir)
    if manifest is None:
        return None
    return [(item["kind"], dcmread(out_dir / item["file"])) for item in manifest]
