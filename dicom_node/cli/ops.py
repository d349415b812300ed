"""Distributed-mode and operator commands: worker, resend, demo."""

from __future__ import annotations

from dicom_node.cli import app  # noqa: F401
