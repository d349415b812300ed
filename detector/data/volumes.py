"""3-D MR volumes (MetaImage ``.mha``/``.mhd``, NIfTI ``.nii``/``.nii.gz``) in the detector's view.

Physical coordinates are LPS millimetres (ITK and DICOM: +x patient Left, +y Posterior,
+z Superior). MetaImage headers are LPS already; NIfTI affines are RAS+ and are turned to LPS
by negating x and y.

Canonical (sagittal) view, the one ``dicom_node.pixels`` gives DICOM series and the detector was
trained on: float32 ``[S, H, W]``, slices from patient right to left, rows head -> feet, columns
anterior -> posterior. Each stored axis goes to the anatomical axis its direction cosine is
closest to, then is flipped where it runs the other way: a permutation and flips, no
resampling (an oblique acquisition keeps its small tilt, as a viewer shows it).

``disc_boxes`` turns a disc mask in that view into one box per visible disc per slice. Pure
numpy, no torch; NIfTI needs ``nibabel`` (imported only for NIfTI files).
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

VOLUME_SUFFIXES = (".mha", ".mhd", ".nii.gz", ".nii")
MET_TYPES = {
    "MET_UCHAR": "u1",
    "MET_CHAR": "i1",
    "MET_USHORT": "u2",
    "MET_SHORT": "i2",
    "MET_UINT": "u4",
    "MET_INT": "i4",
    "MET_ULONG_LONG": "u8",
    "MET_LONG_LONG": "i8",
    "MET_FLOAT": "f4",
    "MET_DOUBLE": "f8",
}
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])
Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Volume:
    """A volume as stored: ``array[i, j, k]`` (i varies fastest on disk, as ITK's x)."""

    array: np.ndarray  # [I, J, K], the file's dtype
    spacing: tuple[float, float, float]  # mm between voxel centres along i, j, k
    origin: tuple[float, float, float]  # LPS mm of voxel (0, 0, 0)
    direction: np.ndarray  # float64 [3, 3]; column m = LPS unit vector of index axis m
    path: Path


@dataclass(frozen=True)
class Orientation:
    """How to get the canonical view: ``array.transpose(perm)``, then flip the marked axes."""

    perm: tuple[int, int, int]  # stored axes feeding (slice, row, column)
    flip: tuple[bool, bool, bool]

    def apply(self, array: np.ndarray) -> np.ndarray:
        out = np.transpose(array, self.perm)
        index = tuple(slice(None, None, -1) if f else slice(None) for f in self.flip)
        return np.ascontiguousarray(out[index])


@dataclass(frozen=True)
class SagittalVolume:
    """The canonical view of a volume; every slice shares ``pixel_spacing`` (row mm, column mm)."""

    volume: np.ndarray  # [S, H, W]
    pixel_spacing: tuple[float, float]
    slice_spacing: float  # mm between slice centres
    orientation: Orientation


def volume_stem(path: Path) -> str:
    """File name without its volume suffix: ``12_t2.nii.gz`` -> ``12_t2``."""
    name = path.name
    for suffix in VOLUME_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def is_volume_file(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(VOLUME_SUFFIXES)


def read_volume(path: str | Path) -> Volume:
    """A ``.mha``/``.mhd`` (MetaImage) or ``.nii``/``.nii.gz`` (NIfTI) 3-D volume."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith((".mha", ".mhd")):
        return read_metaimage(path)
    if name.endswith((".nii", ".nii.gz")):
        return read_nifti(path)
    raise ValueError(f"{path}: not a volume file (expected one of {VOLUME_SUFFIXES})")


def read_metaimage(path: Path) -> Volume:
    """MetaImage: text header, then raw or zlib-compressed (``CompressedData = True``) voxels,
    in the same file (``ElementDataFile = LOCAL``, .mha) or a named one (.mhd + .raw)."""
    raw = path.read_bytes()
    header, data_start = _metaimage_header(raw, path)

    def field(*keys: str, default: str = "") -> str:
        return next((header[k] for k in keys if k in header), default)

    ndims = int(field("NDims", default="0"))
    dims = _numbers(field("DimSize"), int, path, "DimSize")
    if ndims != 3 or len(dims) != 3:
        raise ValueError(f"{path}: NDims {ndims}, DimSize {dims}: only 3-D volumes are read")
    if int(field("ElementNumberOfChannels", default="1")) != 1:
        raise ValueError(f"{path}: ElementNumberOfChannels > 1 (vector images) is not supported")
    element = field("ElementType")
    if element not in MET_TYPES:
        raise ValueError(f"{path}: ElementType {element!r} is not one of {sorted(MET_TYPES)}")
    msb = field("ElementByteOrderMSB", "BinaryDataByteOrderMSB", default="False").lower() == "true"
    dtype = np.dtype(MET_TYPES[element]).newbyteorder(">" if msb else "<")
    data_file = field("ElementDataFile", default="LOCAL")
    at_end = False  # HeaderSize = -1: the voxels are the last bytes of the data file
    if data_file == "LOCAL":
        data = raw[data_start:]
    elif not data_file or data_file.split()[0] == "LIST" or "%" in data_file:
        raise ValueError(f"{path}: ElementDataFile {data_file!r} (file lists) is not supported")
    else:
        data_path = path.parent / data_file
        if not data_path.is_file():
            raise FileNotFoundError(f"{path}: its ElementDataFile {data_path} does not exist")
        skip = int(field("HeaderSize", default="0"))
        at_end = skip < 0
        data = data_path.read_bytes()[max(skip, 0) :]
    if field("CompressedData", default="False").lower() == "true":
        size = field("CompressedDataSize")
        try:
            data = zlib.decompressobj().decompress(data[: int(size)] if size else data)
        except zlib.error as exc:
            raise ValueError(f"{path}: compressed voxel data does not inflate ({exc})") from exc
    need = int(np.prod(dims)) * dtype.itemsize
    if len(data) < need:
        raise ValueError(f"{path}: {len(data)} bytes of voxel data, DimSize x {element} needs {need}")
    data = data[len(data) - need :] if at_end else data[:need]
    array = np.frombuffer(data, dtype=dtype).reshape(dims[::-1]).transpose(2, 1, 0)
    spacing = _numbers(field("ElementSpacing", "ElementSize", default="1 1 1"), float, path, "ElementSpacing")
    origin = _numbers(field("Offset", "Position", "Origin", default="0 0 0"), float, path, "Offset")
    matrix = _numbers(
        field("TransformMatrix", "Rotation", "Orientation", default="1 0 0 0 1 0 0 0 1"), float, path, "TransformMatrix"
    )
    if len(spacing) != 3 or len(origin) != 3 or len(matrix) != 9:
        raise ValueError(f"{path}: ElementSpacing, Offset and TransformMatrix need 3, 3 and 9 numbers")
    # MetaIO stores one axis direction after the other (ITK's direction matrix, transposed)
    direction = np.asarray(matrix, dtype=np.float64).reshape(3, 3).T
    return _volume(array.astype(array.dtype.newbyteorder("=")), spacing, origin, direction, path)


def read_nifti(path: Path) -> Volume:
    """NIfTI-1/2 through nibabel; its RAS+ affine (sform, else qform) becomes LPS."""
    try:
        import nibabel as nib
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise ImportError(f"{path}: reading NIfTI needs nibabel (pip install nibabel)") from exc
    try:
        img: Any = nib.load(str(path))
    except Exception as exc:  # nibabel raises several kinds for bad files
        raise ValueError(f"{path}: not a readable NIfTI file ({exc})") from exc
    array = np.asanyarray(img.dataobj)
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise ValueError(f"{path}: shape {array.shape}: only 3-D volumes are read")
    affine = RAS_TO_LPS @ np.asarray(img.affine, dtype=np.float64)[:3]
    spacing = np.linalg.norm(affine[:, :3], axis=0)
    if np.any(spacing <= 0):
        raise ValueError(f"{path}: its affine has a zero-length axis")
    return _volume(np.asarray(array), spacing, affine[:, 3], affine[:, :3] / spacing, path)


def sagittal_orientation(direction: np.ndarray) -> Orientation:
    """The permutation and flips that bring stored axes to (slice R->L, row S->I, column A->P)."""
    d = np.abs(np.asarray(direction, dtype=np.float64))
    # anatomical order of the view: x (slices), z (rows), y (columns)
    perm = max(itertools.permutations(range(3)), key=lambda p: d[0, p[0]] + d[2, p[1]] + d[1, p[2]])
    direction = np.asarray(direction, dtype=np.float64)
    flip = (direction[0, perm[0]] < 0, direction[2, perm[1]] > 0, direction[1, perm[2]] < 0)
    return Orientation(tuple(int(p) for p in perm), tuple(bool(f) for f in flip))  # type: ignore[arg-type]


def to_sagittal(volume: Volume, dtype: type | None = np.float32) -> SagittalVolume:
    """The canonical view of ``volume`` as ``dtype`` (float32 for images; None keeps the file's, for masks)."""
    orient = sagittal_orientation(volume.direction)
    array = orient.apply(volume.array)
    array = array if dtype is None else array.astype(dtype, copy=False)
    s, r, c = (volume.spacing[p] for p in orient.perm)
    return SagittalVolume(array, (float(r), float(c)), float(s), orient)


def grid_difference(
    volume: Volume, shape: tuple[int, ...], spacing: Sequence[float], direction: np.ndarray, tol: float = 1e-3
) -> str | None:
    """None when ``volume`` lies on that grid (shape, spacing, direction), else what differs."""
    if volume.array.shape != tuple(shape):
        return f"shape {volume.array.shape} vs {tuple(shape)}"
    if not np.allclose(volume.spacing, spacing, rtol=tol, atol=tol):
        return f"spacing {volume.spacing} vs {tuple(spacing)}"
    if not np.allclose(volume.direction, direction, atol=tol):
        return f"direction {volume.direction.round(4).tolist()} vs {np.asarray(direction).round(4).tolist()}"
    return None


def disc_boxes(
    mask: np.ndarray, discs: set[int] | None = None, min_fraction: float = 0.3, min_pixels: int = 4
) -> list[dict[int, Box]]:
    """Per slice of a canonical mask ``[S, H, W]``: ``{disc label: (x0, y0, x1, y1)}``.

    A box spans the disc's pixels on that slice (pixel edges: x1 = last column + 1). A disc
    counts on a slice when it covers at least ``min_pixels`` there and ``min_fraction`` of its
    largest cross-section in the volume, so a lateral sliver of a disc is not boxed. ``discs``:
    the mask values that are discs (default: SPIDER's 201-299 present in the mask).
    """
    picked = np.isin(mask, sorted(discs)) if discs is not None else (mask >= 201) & (mask <= 299)
    wanted = [int(v) for v in np.unique(mask[picked])]
    out: list[dict[int, Box]] = [{} for _ in range(mask.shape[0])]
    for value in wanted:
        s, r, c = np.nonzero(mask == value)
        areas = np.bincount(s, minlength=mask.shape[0])
        floor = max(min_pixels, min_fraction * areas.max())
        for k in np.flatnonzero(areas >= floor):
            on = s == k
            out[k][value] = (float(c[on].min()), float(r[on].min()), float(c[on].max() + 1), float(r[on].max() + 1))
    return out


def _volume(array: np.ndarray, spacing, origin, direction: np.ndarray, path: Path) -> Volume:
    if abs(np.linalg.det(direction)) < 1e-3:
        raise ValueError(f"{path}: direction matrix {direction.round(3).tolist()} is singular")
    return Volume(
        array,
        tuple(float(v) for v in spacing),  # type: ignore[arg-type]
        tuple(float(v) for v in origin),  # type: ignore[arg-type]
        np.asarray(direction, dtype=np.float64),
        path,
    )


def _metaimage_header(raw: bytes, path: Path) -> tuple[dict[str, str], int]:
    """``Key = Value`` lines up to ``ElementDataFile``; returns them and where the data starts."""
    fields: dict[str, str] = {}
    pos = 0
    while pos < len(raw) and pos < 1 << 16:
        end = raw.find(b"\n", pos)
        end = len(raw) if end < 0 else end
        line = raw[pos:end].decode("latin-1").strip()
        pos = end + 1
        if not line:
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"{path}: header line {line[:60]!r} is not 'Key = Value': not a MetaImage file")
        fields[key.strip()] = value.strip()
        if key.strip() == "ElementDataFile":
            return fields, pos
    raise ValueError(f"{path}: no ElementDataFile line in the header: not a MetaImage file")


def _numbers(text: str, kind: type, path: Path, name: str) -> list:
    try:
        return [kind(float(v)) if kind is int else kind(v) for v in text.split()]
    except ValueError as exc:
        raise ValueError(f"{path}: {name} {text!r} is not a list of numbers") from exc
