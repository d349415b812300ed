"""Detector commands: synth, train, evaluate, predict, distill (torch imported lazily)."""

from __future__ import annotations

from dicom_node.cli import app  # noqa: F401
