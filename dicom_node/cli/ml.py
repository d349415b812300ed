"""Detector commands: train, evaluate (torch imported lazily inside each command)."""

from __future__ import annotations

from dicom_node.cli import app  # noqa: F401
