"""Resource limits shared by the receive path and the worker: defaults and how they count.

The settings (``MEDDET_MAX_PDU``, ``MEDDET_MAX_INSTANCE_BYTES``, ``MEDDET_MAX_PIXELS``) take
their defaults from here, and so do functions called without settings (``pixels.read_series``
in the worker), so every caller is bounded.
"""

from __future__ import annotations

from typing import Any

#: Largest PDU we accept (and announce as our Maximum Length Received): 1 MiB.
DEFAULT_MAX_PDU = 1 << 20
#: Largest instance: as received, and for deflated data sets after inflation: 512 MiB.
DEFAULT_MAX_INSTANCE_BYTES = 512 << 20
#: Largest image, Rows x Columns x frames, per instance and per analysed series: 2^28
#: (268 M pixels: 512 x 512 x 1024, or 1024 x 1024 x 256; 1 GiB as float32). A cervical MR
#: series is ~512 x 512 x 20.
DEFAULT_MAX_PIXELS = 1 << 28
#: Seconds an association may idle, or take to deliver one PDU from its first byte.
DEFAULT_NETWORK_TIMEOUT = 60.0
#: Seconds for the TLS handshake and for the association request.
DEFAULT_ACSE_TIMEOUT = 30.0
#: Seconds an association may last in all.
DEFAULT_ASSOCIATION_TIME_LIMIT = 3600.0


def positive_int(value: Any) -> int | None:
    """``value`` as a positive int, or None (absent, zero, negative or not a number)."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def declared_pixels(ds: Any) -> tuple[int, int, int]:
    """(Rows, Columns, frames) as a header declares them (missing or bad: 0, 0, 1)."""
    rows = positive_int(ds.get("Rows")) or 0
    columns = positive_int(ds.get("Columns")) or 0
    frames = positive_int(ds.get("NumberOfFrames")) or 1
    return rows, columns, frames


def too_many_pixels(ds: Any, max_pixels: int) -> str | None:
    """Why ``ds`` declares too large an image for ``max_pixels``, or None."""
    rows, columns, frames = declared_pixels(ds)
    total = rows * columns * frames
    if total <= max_pixels:
        return None
    return f"image over MEDDET_MAX_PIXELS ({max_pixels}): {rows} x {columns} x {frames} frames = {total} pixels"
