"""CLI commands (data); torch and heavy modules are imported inside the commands."""

from __future__ import annotations

from dicom_node.cli import app  # noqa: F401
