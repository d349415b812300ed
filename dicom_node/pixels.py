"""DICOM series -> ordered float32 slices for the detector, with their source datasets.

``read_series(path)`` takes a folder (searched recursively; non-DICOM files are skipped), a
file, or a list of files, and returns a ``Series``: one float32 [H, W] image per slice in
modality values (Rescale Slope/Intercept applied, MONOCHROME1 inverted), ordered along the
slice normal, each with the dataset and 1-based frame it came from. Any transfer syntax that
pydicom + pylibjpeg decode is accepted (JPEG baseline/lossless, JPEG-LS, JPEG 2000, RLE,
deflate). Enhanced (multi-frame) MR is split into its frames.

Sagittal slices are turned to the detector's view (``canonical=True``): head up, anterior on
the left, i.e. rows run to the feet and columns to the back, as with orientation
[0, 1, 0, 0, 0, -1]. ``Series.to_source_box`` maps a box back to the stored pixels.
Errors are ``SeriesError``s that name the file or UID and what is missing.

Nothing is decoded beyond ``max_pixels`` (Rows x Columns x frames as the headers declare
them, summed over the series; default :data:`~dicom_node.limits.DEFAULT_MAX_PIXELS`): a
1 KB instance can declare terabytes of pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRLittleEndian

from dicom_node.limits import DEFAULT_MAX_PIXELS, declared_pixels, too_many_pixels
from dicom_node.logging import get_logger

log = get_logger(__name__)


class SeriesError(ValueError):
    """The input is not one readable image series; the message says what and where."""


@dataclass(frozen=True)
class View:
    """How a stored slice was turned into the canonical view (applied in this order)."""

    transpose: bool = False
    flip_rows: bool = False  # upside down
    flip_cols: bool = False  # left-right

    def apply(self, img: np.ndarray) -> np.ndarray:
        if self.transpose:
            img = img.T
        if self.flip_rows:
            img = img[::-1]
        if self.flip_cols:
            img = img[:, ::-1]
        return np.ascontiguousarray(img)

    def from_source_box(self, box: Sequence[float], shape: tuple[int, int]) -> tuple[float, float, float, float]:
        """Box (x0, y0, x1, y1) in stored pixels of ``shape`` (rows, columns) -> canonical view."""
        x0, y0, x1, y1 = (float(v) for v in box)
        h, w = shape
        if self.transpose:
            x0, y0, x1, y1, h, w = y0, x0, y1, x1, w, h
        if self.flip_rows:
            y0, y1 = h - y1, h - y0
        if self.flip_cols:
            x0, x1 = w - x1, w - x0
        return (x0, y0, x1, y1)

    def to_source_box(self, box: Sequence[float], shape: tuple[int, int]) -> tuple[float, float, float, float]:
        """Box (x0, y0, x1, y1) in the canonical image of ``shape`` (H, W) -> stored pixels."""
        x0, y0, x1, y1 = (float(v) for v in box)
        h, w = shape
        if self.flip_cols:
            x0, x1 = w - x1, w - x0
        if self.flip_rows:
            y0, y1 = h - y1, h - y0
        if self.transpose:
            x0, y0, x1, y1 = y0, x0, y1, x1
        return (x0, y0, x1, y1)


@dataclass(frozen=True)
class Slice:
    """One image of the series, canonical view, in modality values."""

    image: np.ndarray  # float32 [H, W]
    source: Dataset
    frame: int  # 1-based frame in ``source``
    position: float  # mm along the slice normal
    view: View

    @property
    def sop_instance_uid(self) -> str:
        return str(self.source.SOPInstanceUID)


@dataclass(frozen=True)
class Series:
    """The slices of one series, ordered along the slice normal."""

    slices: tuple[Slice, ...]

    @property
    def images(self) -> list[np.ndarray]:
        return [s.image for s in self.slices]

    @property
    def sources(self) -> list[Dataset]:
        """The distinct source datasets, in slice order (one per file)."""
        seen: dict[str, Dataset] = {}
        for s in self.slices:
            seen.setdefault(s.sop_instance_uid, s.source)
        return list(seen.values())

    @property
    def study_instance_uid(self) -> str:
        return str(self.slices[0].source.StudyInstanceUID)

    @property
    def series_instance_uid(self) -> str:
        return str(self.slices[0].source.SeriesInstanceUID)

    def to_source_box(self, index: int, box: Sequence[float]) -> tuple[float, float, float, float]:
        s = self.slices[index]
        return s.view.to_source_box(box, s.image.shape)

    @property
    def pixel_spacing(self) -> tuple[float, float]:
        """(row, column) spacing in mm of the canonical images, from the middle slice.

        Pixel Spacing (or its per-frame / shared functional group); a series without it
        (e.g. a secondary capture) raises SeriesError: the analysis measures in mm.
        """
        s = self.slices[len(self.slices) // 2]
        spacing = _pixel_spacing(s.source, s.frame - 1)
        if spacing is None:
            raise SeriesError(
                f"instance {s.sop_instance_uid}: no Pixel Spacing; the analysis needs the pixel size in mm"
            )
        return (spacing[1], spacing[0]) if s.view.transpose else spacing


def read_series(
    path: str | Path | Sequence[str | Path],
    series_uid: str | None = None,
    canonical: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Series:
    """Read one series from a folder, a file or a list of files (see the module docstring)."""
    files = _files(path)
    datasets = []
    for f in files:
        try:
            datasets.append(dcmread(f))
        except (InvalidDicomError, OSError, EOFError) as exc:
            log.debug("skipped: not DICOM", path=str(f), error=str(exc))
    if not datasets:
        raise SeriesError(f"{path}: no DICOM files found")
    if not any(_is_image(ds) for ds in datasets):
        raise SeriesError(f"{path}: no DICOM image found ({len(datasets)} non-image files, e.g. SR/SEG/PR)")
    return series_from_datasets(datasets, series_uid, canonical, where=str(path), max_pixels=max_pixels)


def series_from_datasets(
    datasets: Sequence[Dataset],
    series_uid: str | None = None,
    canonical: bool = True,
    where: str = "datasets",
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Series:
    """Decode and order already-read datasets of one series (see ``read_series``)."""
    groups: dict[str, list[Dataset]] = {}
    for ds in datasets:
        if not _is_image(ds):
            continue
        groups.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append(ds)
    if not groups:
        raise SeriesError(f"{where}: no image instance (with PixelData) among {len(datasets)} datasets")
    if series_uid is not None:
        if series_uid not in groups:
            raise SeriesError(f"{where}: series {series_uid} not found (found {sorted(groups)})")
        chosen = groups[series_uid]
    elif len(groups) > 1:
        found = ", ".join(f"{uid} ({len(g)} files, {g[0].get('SeriesDescription', '?')})" for uid, g in groups.items())
        raise SeriesError(f"{where}: holds {len(groups)} series, pick one: {found}")
    else:
        chosen = next(iter(groups.values()))
    _check_pixel_budget(chosen, max_pixels, where)
    slices = [s for ds in chosen for s in dataset_slices(ds, canonical, max_pixels)]
    slices.sort(key=lambda s: (s.position, s.sop_instance_uid, s.frame))
    return Series(tuple(slices))


def _check_pixel_budget(datasets: Sequence[Dataset], max_pixels: int, where: str) -> None:
    """Raise SeriesError when the series declares more than ``max_pixels`` in all."""
    total = 0
    for ds in datasets:
        rows, columns, frames = declared_pixels(ds)
        total += rows * columns * frames
    if total > max_pixels:
        uid = datasets[0].get("SeriesInstanceUID", "?")
        raise SeriesError(
            f"{where}: series {uid} declares {total} pixels (Rows x Columns x frames over "
            f"{len(datasets)} instances), over the limit of {max_pixels} (MEDDET_MAX_PIXELS); "
            "not decoded"
        )


def _is_image(ds: Dataset) -> bool:
    """An image instance: pixel data, and not a segmentation (result objects may sit beside)."""
    return "PixelData" in ds and ds.get("Modality") != "SEG"


def _files(path: str | Path | Sequence[str | Path]) -> list[Path]:
    if isinstance(path, (str, Path)):
        p = Path(path)
        if p.is_dir():
            return sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
        if p.is_file():
            return [p]
        raise SeriesError(f"{p}: no such file or folder")
    missing = [str(p) for p in path if not Path(p).is_file()]
    if missing:
        raise SeriesError(f"files not found: {missing}")
    return [Path(p) for p in path]


def _require(ds: Dataset, *keywords: str) -> None:
    missing = [k for k in keywords if k not in ds]
    if missing:
        uid = ds.get("SOPInstanceUID", getattr(ds, "filename", "?"))
        raise SeriesError(f"instance {uid}: missing {', '.join(missing)}")


def dataset_slices(ds: Dataset, canonical: bool = True, max_pixels: int = DEFAULT_MAX_PIXELS) -> list[Slice]:
    """The decoded slices (frames) of one dataset, in frame order."""
    _require(ds, "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Rows", "Columns", "PixelData")
    if (too_large := too_many_pixels(ds, max_pixels)) is not None:
        raise SeriesError(f"instance {ds.SOPInstanceUID}: {too_large}; not decoded")
    if ds.get("SamplesPerPixel", 1) != 1:
        raise SeriesError(
            f"instance {ds.SOPInstanceUID}: colour images (SamplesPerPixel {ds.SamplesPerPixel}) are not MR slices"
        )
    if "TransferSyntaxUID" not in getattr(ds, "file_meta", {}):
        ds = _with_native_syntax(ds)
    try:
        arr = ds.pixel_array
    except Exception as exc:  # pydicom raises several types for missing decoders / bad data
        raise SeriesError(
            f"instance {ds.SOPInstanceUID}: cannot decode pixels of transfer syntax "
            f"{ds.file_meta.get('TransferSyntaxUID', '?')}: {exc}"
        ) from exc
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    frames = arr.reshape(n_frames, int(ds.Rows), int(ds.Columns))
    out = []
    for i in range(n_frames):
        pos, iop = _geometry(ds, i)
        slope, intercept = _rescale(ds, i)
        img = frames[i].astype(np.float32) * np.float32(slope) + np.float32(intercept)
        if ds.get("PhotometricInterpretation", "MONOCHROME2") == "MONOCHROME1":
            img = img.max() + img.min() - img
        view = _canonical_view(iop) if canonical and iop is not None else View()
        if iop is not None and pos is not None:
            normal = np.cross(iop[:3], iop[3:])
            position = float(np.dot(pos, normal))
        else:
            position = float(ds.get("InstanceNumber", 0) or 0) + i
        out.append(Slice(view.apply(img), ds, i + 1, position, view))
    return out


def _with_native_syntax(ds: Dataset) -> Dataset:
    """A shallow copy of a dataset built in memory (no file meta), read as native pixels."""
    copy = Dataset(ds)
    copy.file_meta = FileMetaDataset()
    copy.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return copy


def _geometry(ds: Dataset, i: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """ImagePositionPatient and ImageOrientationPatient of frame ``i`` (None where absent)."""
    pos = ds.get("ImagePositionPatient")
    iop = ds.get("ImageOrientationPatient")
    for group in (_frame_group(ds, i), _shared_group(ds)):
        if group is None:
            continue
        if pos is None and "PlanePositionSequence" in group:
            pos = group.PlanePositionSequence[0].get("ImagePositionPatient")
        if iop is None and "PlaneOrientationSequence" in group:
            iop = group.PlaneOrientationSequence[0].get("ImageOrientationPatient")
    if pos is None or iop is None:
        log.warning("no slice geometry, ordering by InstanceNumber", sop_instance_uid=str(ds.SOPInstanceUID))
    return (None if pos is None else np.asarray(pos, float)), (None if iop is None else np.asarray(iop, float))


def _pixel_spacing(ds: Dataset, i: int) -> tuple[float, float] | None:
    """Pixel Spacing (row, column mm) of frame ``i``: top level, per-frame or shared group."""
    value = ds.get("PixelSpacing")
    for group in (_frame_group(ds, i), _shared_group(ds)):
        if value is None and group is not None and "PixelMeasuresSequence" in group:
            value = group.PixelMeasuresSequence[0].get("PixelSpacing")
    if value is None or len(value) != 2 or min(float(v) for v in value) <= 0:
        return None
    return float(value[0]), float(value[1])


def _rescale(ds: Dataset, i: int) -> tuple[float, float]:
    for group in (_frame_group(ds, i), _shared_group(ds)):
        if group is not None and "PixelValueTransformationSequence" in group:
            item = group.PixelValueTransformationSequence[0]
            return float(item.get("RescaleSlope", 1) or 1), float(item.get("RescaleIntercept", 0) or 0)
    return float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)


def _frame_group(ds: Dataset, i: int) -> Dataset | None:
    seq = ds.get("PerFrameFunctionalGroupsSequence")
    return seq[i] if seq is not None and len(seq) > i else None


def _shared_group(ds: Dataset) -> Dataset | None:
    seq = ds.get("SharedFunctionalGroupsSequence")
    return seq[0] if seq else None


def _canonical_view(iop: np.ndarray) -> View:
    """The view that shows a sagittal slice with rows to the feet and columns to the back.

    ``iop[:3]`` is the patient direction of increasing column index, ``iop[3:]`` of increasing
    row index (LPS). Non-sagittal slices are left as stored.
    """
    along_col, along_row = iop[:3], iop[3:]
    if abs(np.cross(along_col, along_row)[0]) < 0.5:  # normal not mostly left-right
        return View()
    transpose = abs(along_col[2]) > abs(along_col[1])  # columns run head-feet: swap axes
    if transpose:
        along_col, along_row = along_row, along_col
    return View(transpose=transpose, flip_rows=bool(along_row[2] > 0), flip_cols=bool(along_col[1] < 0))
