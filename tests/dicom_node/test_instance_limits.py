"""Issue 12 items 4 and 5 in the header checks: inflated size and declared pixel count."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, RLELossless

from dicom_node import statuses
from dicom_node.headers import Rejected, inspect_dataset
from tests.factories import make_mr_series, make_size_bomb


def data_set(ds: Dataset, deflate: bool = False) -> bytes:
    """The data set alone, as a C-STORE carries it (raw deflate for the deflated syntax)."""
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_dataset(buffer, ds)
    raw = buffer.getvalue()
    if not deflate:
        return raw
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return packer.compress(raw) + packer.flush()


def test_a_header_declaring_more_pixels_than_the_limit_is_refused_with_the_reason() -> None:
    bomb = make_size_bomb()
    with pytest.raises(Rejected) as refused:
        inspect_dataset(data_set(bomb), RLELossless, str(bomb.SOPInstanceUID))
    assert refused.value.status == statuses.INSTANCE_TOO_LARGE
    assert "65535 x 65535 x 10000" in refused.value.reason
    assert "MEDDET_MAX_PIXELS" in refused.value.reason


def test_the_pixel_limit_is_a_parameter_and_a_real_mr_slice_passes_the_default() -> None:
    ds = make_mr_series(1, 512, 512)[0]
    assert inspect_dataset(data_set(ds), ExplicitVRLittleEndian).sop_uid == ds.SOPInstanceUID
    with pytest.raises(Rejected, match="MEDDET_MAX_PIXELS"):
        inspect_dataset(data_set(ds), ExplicitVRLittleEndian, max_pixels=512 * 511)


def test_a_deflated_data_set_is_inflated_only_up_to_the_limit() -> None:
    ds = make_mr_series(1, 8, 8)[0]
    ds.Rows = ds.Columns = 4096
    ds.PixelData = np.zeros((4096, 4096), np.uint16).tobytes()  # 32 MiB, ~32 KiB deflated
    deflated = data_set(ds, deflate=True)
    assert len(deflated) < 100_000
    with pytest.raises(Rejected) as refused:
        inspect_dataset(deflated, DeflatedExplicitVRLittleEndian, max_bytes=1 << 20)
    assert refused.value.status == statuses.INSTANCE_TOO_LARGE
    assert "MEDDET_MAX_INSTANCE_BYTES" in refused.value.reason
    header = inspect_dataset(deflated, DeflatedExplicitVRLittleEndian, max_bytes=64 << 20)
    assert header.transfer_syntax_uid == DeflatedExplicitVRLittleEndian


def test_a_truncated_deflated_data_set_cannot_be_understood() -> None:
    deflated = data_set(make_mr_series(1, 64, 64)[0], deflate=True)
    with pytest.raises(Rejected) as refused:
        inspect_dataset(deflated[: len(deflated) // 2], DeflatedExplicitVRLittleEndian)
    assert refused.value.status == statuses.CANNOT_UNDERSTAND
