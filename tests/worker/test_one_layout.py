"""``meddet predict`` and the worker go through one analysis (dicom_node.analysis) and write one
results layout: findings.json, ``NN-<kind>.dcm``, objects.json (the manifest, last)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pydicom import dcmread

from dicom_node.analysis import Detector, read_results
from dicom_node.config import Settings
from dicom_node.metrics import Metrics
from dicom_node.synth import write_studies
from tests.data.test_predict import invoke, truth_analysis
from tests.worker.support import register_series
from worker import pipeline
from worker.context import WorkerContext
from worker.tasks import run_job

SEED, SLICES, SIZE = 41, 9, 128


class TruthAnalyzer:
    """A :class:`Detector` whose analysis is the phantom's ground truth (no model)."""

    version = "truth-1"

    def __init__(self, study) -> None:  # type: ignore[no-untyped-def]
        self.study = study
        self.detector = self  # the slice detector: predict() gives the true boxes

    def predict(self, images, batch_size: int = 8):  # type: ignore[no-untyped-def]
        return truth_analysis(self.study).detections

    def analyze(self, images, pixel_spacing, detections=None):  # type: ignore[no-untyped-def]
        assert len(images) == SLICES
        return truth_analysis(self.study)


def _layout(folder: Path) -> tuple[list[str], list[tuple[str, str]], dict]:
    manifest = json.loads((folder / "objects.json").read_text())
    files = sorted(p.name for p in folder.iterdir())
    return (
        files,
        [(item["kind"], item["file"]) for item in manifest],
        json.loads((folder / "findings.json").read_text()),
    )


def test_predict_and_the_worker_write_the_same_layout(sessions, tmp_path, monkeypatch):
    from detector.analysis import Analyzer
    from detector.data.synthetic import make_study

    written = write_studies(tmp_path / "in", 1, seed=SEED, n_slices=SLICES, size=SIZE)
    study = make_study(np.random.default_rng([SEED, 0]), n_slices=SLICES, size=SIZE)
    analyzer: Detector = TruthAnalyzer(study)  # type-checks as the Protocol
    monkeypatch.setattr(Analyzer, "from_checkpoint", classmethod(lambda cls, *a, **k: analyzer))

    out = tmp_path / "predict"
    run = invoke("predict", str(written[0].dicom_dir), "--out", str(out), "--results", "sr,seg,gsps")
    assert run.exit_code == 0, run.output

    datasets = [dcmread(p) for p in sorted(written[0].dicom_dir.iterdir())]
    job_id = register_series(sessions, datasets, tmp_path / "spool", analyzer.version)
    settings = Settings(data_dir=tmp_path / "node", result_objects=["sr", "seg", "gsps"])
    ctx = WorkerContext(settings, sessions, Metrics(), detector_factory=lambda s: analyzer)
    assert run_job(ctx, job_id) == "done"
    job_dir = pipeline.results_dir(ctx, job_id)

    predict_files, predict_manifest, predict_findings = _layout(out)
    worker_files, worker_manifest, worker_findings = _layout(job_dir)
    assert predict_files == worker_files
    assert predict_manifest == worker_manifest
    assert [kind for kind, _ in worker_manifest] == ["sr", "seg", "gsps"]  # the phantom has herniations
    assert [file for _, file in worker_manifest] == ["00-sr.dcm", "01-seg.dcm", "02-gsps.dcm"]
    assert predict_files == ["00-sr.dcm", "01-seg.dcm", "02-gsps.dcm", "findings.json", "objects.json"]
    assert predict_findings == worker_findings  # the same document, from the same analysis
    for folder in (out, job_dir):
        objects = read_results(folder)
        assert objects is not None and [k for k, _ in objects] == ["sr", "seg", "gsps"]
