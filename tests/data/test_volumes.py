"""SPIDER-layout volumes: .mha / .mhd / .nii.gz reading, the sagittal view, disc boxes, the
label policy, level maps, patient splits and one training step on the slices.

The files are written here by hand (MetaImage header text, nibabel for NIfTI) from one phantom
drawn in the canonical view [S, H, W] (slices R->L, rows head->feet, columns A->P) and stored
with another axis order, flipped axes, a 5 degree tilt and anisotropic spacing.
"""

from __future__ import annotations

import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from detector.config import load_config as load_detector_config
from detector.data.spider import VolumeSliceDataset, spider_datasets, split_patients
from detector.data.spider_config import LabelPolicy, SpiderConfig, level_map, read_gradings
from detector.data.volumes import RAS_TO_LPS, read_volume, sagittal_orientation, to_sagittal
from detector.sources import eval_dataset, resolve

S, H, W = 10, 48, 40
SPACING = (0.8, 3.3, 0.6)  # stored axes i (rows), j (slices), k (columns)
ORIGIN = (-12.5, 40.0, 310.25)
MET = {"MET_UCHAR": "u1", "MET_SHORT": "i2", "MET_USHORT": "u2", "MET_INT": "i4", "MET_FLOAT": "f4", "MET_DOUBLE": "f8"}

# discs in the canonical view: value -> (first slice, last slice, rows, columns)
DISCS = {203: (2, 6, (10, 13), (8, 24)), 202: (2, 7, (22, 25), (9, 26)), 201: (3, 6, (34, 37), (10, 27))}


def tilted_direction() -> np.ndarray:
    """Columns: LPS directions of stored axes i (+S), j (patient right), k (anterior), tilted 5 deg."""
    base = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
    a = np.deg2rad(5.0)
    tilt = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    return tilt @ base


def phantom() -> tuple[np.ndarray, np.ndarray]:
    """(image, mask) in the canonical view: vertebrae, canal and three discs, the middle one
    herniating on slice 4 and a sliver on slice 7 (too small to box)."""
    mask = np.zeros((S, H, W), np.int16)
    for n, (top, bottom) in enumerate([(0, 10), (13, 22), (25, 34), (37, 48)]):
        mask[2:8, top:bottom, 8:27] = 4 - n  # vertebral bodies, numbered from the bottom
    mask[2:8, :, 29:33] = 100  # canal
    for value, (s0, s1, (r0, r1), (c0, c1)) in DISCS.items():
        mask[s0 : s1 + 1, r0:r1, c0:c1] = value
    mask[7, 22:25, 12:] = 0
    mask[7, 22:25, 9:12] = 202
    mask[4, 23, 26:30] = 202  # posterior protrusion on slice 4
    rng = np.random.default_rng(0)
    image = rng.normal(60, 5, mask.shape) + 140 * (mask > 0) + 120 * (mask > 200) + 200 * (mask == 100)
    return image.round().astype(np.int16), mask


def stored(canonical: np.ndarray) -> np.ndarray:
    """Canonical [S, H, W] -> stored [i, j, k] (i = H reversed, j = S reversed, k = W reversed)."""
    return np.transpose(canonical[::-1, ::-1, ::-1], (1, 0, 2))


def write_mha(
    path: Path, array: np.ndarray, element: str, compressed: bool = False, msb: bool = False, detached: bool = False
) -> None:
    raw = np.asarray(array.transpose(2, 1, 0), np.dtype(MET[element]).newbyteorder(">" if msb else "<")).tobytes()
    if compressed:
        raw = zlib.compress(raw)
    direction = tilted_direction()
    lines = [
        "ObjectType = Image",
        "NDims = 3",
        "BinaryData = True",
        f"BinaryDataByteOrderMSB = {msb}",
        f"CompressedData = {compressed}",
        *([f"CompressedDataSize = {len(raw)}"] if compressed else []),
        "TransformMatrix = " + " ".join(f"{v:.10g}" for v in direction.T.ravel()),
        "Offset = " + " ".join(map(str, ORIGIN)),
        "CenterOfRotation = 0 0 0",
        "AnatomicalOrientation = RAI",
        "ElementSpacing = " + " ".join(map(str, SPACING)),
        "DimSize = " + " ".join(map(str, array.shape)),
        f"ElementType = {element}",
        f"ElementDataFile = {path.stem + '.raw' if detached else 'LOCAL'}",
    ]
    header = ("\n".join(lines) + "\n").encode()
    if detached:
        path.write_bytes(header)
        (path.parent / f"{path.stem}.raw").write_bytes(raw)
    else:
        path.write_bytes(header + raw)


def write_nifti(path: Path, array: np.ndarray) -> None:
    import nibabel as nib

    affine = np.eye(4)
    affine[:3, :3] = RAS_TO_LPS @ tilted_direction() @ np.diag(SPACING)
    affine[:3, 3] = RAS_TO_LPS @ np.array(ORIGIN)
    nib.save(nib.Nifti1Image(array, affine), str(path))


def write_volume(path: Path, array: np.ndarray, compressed: bool = True) -> None:
    if path.name.endswith(".nii.gz"):
        write_nifti(path, array)
    else:
        write_mha(path, array, "MET_SHORT", compressed=compressed)


GRADINGS_HEADER = "Patient,IVD label,Modic,UP endplate,LOW endplate,Spondylolisthesis,Disc herniation,Disc narrowing,Disc bulging,Pfirrman grade\n"


def make_root(root: Path, patients: int = 5, gradings: str | None = None, toml: str | None = None) -> Path:
    """A SPIDER-layout folder: per patient t1 (.mha) and t2 (.mha, or .nii.gz for even ids)."""
    image, mask = phantom()
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rows = []
    for p in range(1, patients + 1):
        for seq in ("t1", "t2"):
            suffix = ".nii.gz" if seq == "t2" and p % 2 == 0 else ".mha"
            write_volume(root / "images" / f"{p}_{seq}{suffix}", stored(image), compressed=p % 2 == 1)
            write_volume(root / "masks" / f"{p}_{seq}{suffix}", stored(mask), compressed=True)
        # IVD 1 (201, lowest): herniated in odd patients; IVD 2 bulging only; IVD 3 healthy
        rows += [f"{p},1,0,0,0,0,{p % 2},1,0,3", f"{p},2,0,0,0,0,0,0,1,2", f"{p},3,0,0,0,0,0,0,0,1"]
    (root / "radiological_gradings.csv").write_text(gradings or GRADINGS_HEADER + "\n".join(rows) + "\n")
    if toml is not None:
        (root / "spider.toml").write_text(toml)
    return root


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_root(tmp_path_factory.mktemp("spider"))


@pytest.mark.parametrize(
    "element, compressed, msb, detached",
    [
        ("MET_SHORT", False, False, False),
        ("MET_SHORT", True, False, False),
        ("MET_FLOAT", True, False, False),
        ("MET_UCHAR", False, False, True),
        ("MET_USHORT", False, True, False),
        ("MET_INT", True, True, False),
        ("MET_DOUBLE", False, False, False),
    ],
)
def test_metaimage_reader_returns_voxels_spacing_and_direction(tmp_path, element, compressed, msb, detached):
    image, _ = phantom()
    data = stored(np.abs(image)).astype(MET[element])
    path = tmp_path / ("v.mhd" if detached else "v.mha")
    write_mha(path, data, element, compressed=compressed, msb=msb, detached=detached)
    vol = read_volume(path)
    assert vol.array.shape == (H, S, W) and vol.array.dtype == np.dtype(MET[element])
    assert np.array_equal(vol.array, data)
    assert vol.spacing == SPACING and vol.origin == ORIGIN
    np.testing.assert_allclose(vol.direction, tilted_direction(), atol=1e-9)


def test_nifti_reader_turns_ras_into_lps(tmp_path):
    image, _ = phantom()
    write_nifti(tmp_path / "v.nii.gz", stored(image))
    vol = read_volume(tmp_path / "v.nii.gz")
    assert np.array_equal(vol.array, stored(image))
    np.testing.assert_allclose(vol.spacing, SPACING, rtol=1e-6)
    np.testing.assert_allclose(vol.origin, ORIGIN, atol=1e-4)
    np.testing.assert_allclose(vol.direction, tilted_direction(), atol=1e-6)


@pytest.mark.parametrize("name", ["v.mha", "v.nii.gz"])
def test_canonical_view_is_right_to_left_head_to_feet_anterior_to_posterior(tmp_path, name):
    image, mask = phantom()
    write_volume(tmp_path / name, stored(image))
    view = to_sagittal(read_volume(tmp_path / name))
    assert view.volume.dtype == np.float32 and np.array_equal(view.volume, image.astype(np.float32))
    assert view.pixel_spacing == pytest.approx((0.8, 0.6)) and view.slice_spacing == pytest.approx(3.3)
    orient = sagittal_orientation(tilted_direction())
    assert orient.perm == (1, 0, 2) and orient.flip == (True, True, True)
    # stored like a DICOM sagittal series (i along +y posterior, j along -z feet, k along +x left):
    lps = np.array([[0, 0, 1], [1, 0, 0], [0, -1, 0]], float)  # columns = directions of i, j, k
    assert sagittal_orientation(lps).perm == (2, 1, 0) and sagittal_orientation(lps).flip == (False, False, False)


def test_discs_are_boxed_per_slice_with_levels_and_labels(root):
    ds = VolumeSliceDataset(root)
    for name in ("1_t2", "2_t2"):  # .mha and .nii.gz
        lv = ds.volume(name)
        assert lv.volume.shape == (S, H, W) and lv.pixel_spacing == pytest.approx((0.8, 0.6))
        herniated = 0 if name.startswith("1") else 1  # IVD 1 herniated in odd patients
        for k in (0, 1, 7, 8, 9):
            assert lv.boxes[k].shape == (0, 4) and lv.levels[k] == []  # slice 7: a sliver only
        np.testing.assert_array_equal(lv.boxes[2], [[8, 10, 24, 13], [9, 22, 26, 25]])
        assert lv.levels[2] == ["C5-C6", "C6-C7"]
        np.testing.assert_array_equal(lv.boxes[4], [[8, 10, 24, 13], [9, 22, 30, 25], [10, 34, 27, 37]])
        assert lv.levels[4] == ["C5-C6", "C6-C7", "C7-T1"]
        assert lv.labels[4].tolist() == [1, 1, herniated]
        assert lv.discs == {"C7-T1": herniated, "C6-C7": 1, "C5-C6": 1}
    image, target = ds[4]
    assert ds.case_of(4).name == "1_t1" and image.dtype == np.float32 and image.shape == (H, W)
    assert target["boxes"].dtype == np.float32 and target["labels"].dtype == np.int64
    assert len(ds) == 5 * 2 * S  # empty slices kept as negatives


def test_label_policy_text_grades_and_binary_columns(tmp_path):
    policy = LabelPolicy(grade_column="Grade")
    assert [policy.classify({"Grade": g}) for g in ("Bulge", "protrusion", "extrusion", "sequestration", "normal")] == [
        1,
        0,
        0,
        0,
        1,
    ]
    binary = LabelPolicy()
    assert binary.classify({"Disc herniation": "1", "Disc bulging": "0"}) == 0
    assert binary.classify({"Disc herniation": "0", "Disc bulging": "1"}) == 1
    assert LabelPolicy(bulging="herniation").classify({"Disc herniation": "0", "Disc bulging": "1"}) == 0
    csv = tmp_path / "grades.csv"
    csv.write_text("Patient,IVD label,Grade\n1,1,protrusion\n1,2,bulge\n1,3,mystery\n")
    with pytest.raises(ValueError, match=r"grades\.csv, line 4 .*IVD label '3'.*'mystery' is not in the label policy"):
        read_gradings(csv, policy)
    with pytest.warns(UserWarning, match="mystery"):
        assert read_gradings(csv, LabelPolicy(grade_column="Grade", missing="skip")) == {
            ("1", 1): 0,
            ("1", 2): 1,
            ("1", 3): None,
        }
    (tmp_path / "blank.csv").write_text(GRADINGS_HEADER + "7,2,0,0,0,0,,0,0,3\n")
    with pytest.raises(ValueError, match=r"blank\.csv, line 2 .*Disc herniation is '', not 0 or 1"):
        read_gradings(tmp_path / "blank.csv", binary)
    with pytest.raises(ValueError, match="no column"):
        read_gradings(csv, binary)


def test_missing_grade_is_an_error_or_drops_the_slices_it_shows_on(tmp_path):
    rows = "1,1,0,0,0,0,1,0,0,3\n1,2,0,0,0,0,0,0,0,3\n"  # no row for IVD label 3 (mask 203, C5-C6)
    root = make_root(tmp_path / "a", patients=1, gradings=GRADINGS_HEADER + rows)
    with pytest.raises(
        ValueError, match=r"radiological_gradings\.csv: no row for Patient 1, IVD label 3 \(C5-C6, in .*1_t1\.mha\)"
    ):
        VolumeSliceDataset(root)
    root = make_root(tmp_path / "b", patients=1, gradings=GRADINGS_HEADER + rows, toml='[labels]\nmissing = "skip"\n')
    with pytest.warns(UserWarning, match="IVD label 3"):
        ds = VolumeSliceDataset(root)
    assert len(ds) == 2 * (S - 5)  # slices 2-6 show the ungraded disc: gone, never "normal"
    assert all(3 not in t["labels"] for _, t in (ds[i] for i in range(len(ds))))


def test_level_map_is_explicit_and_configurable(tmp_path):
    assert level_map() == {201: "C7-T1", 202: "C6-C7", 203: "C5-C6", 204: "C4-C5", 205: "C3-C4", 206: "C2-C3"}
    lumbar = level_map("L5-S1")
    assert lumbar[201] == "L5-S1" and lumbar[205] == "L1-L2" and lumbar[206] == "T12-L1"
    root = make_root(tmp_path / "t", patients=1, toml='levels = "lumbar"\nsequences = ["t2"]\n')
    ds = VolumeSliceDataset(root)
    assert [c.name for c in ds.cases] == ["1_t2"] and ds.volume(0).levels[4] == ["L3-L4", "L4-L5", "L5-S1"]
    other = tmp_path / "elsewhere.toml"
    other.write_text(f'root = "{root.name}"\n[levels]\n201 = "C6-C7"\n202 = "C5-C6"\n203 = "C4-C5"\n')
    assert VolumeSliceDataset(other).volume("1_t2").levels[3] == ["C4-C5", "C5-C6", "C6-C7"]
    other.write_text(f'root = "{root.name}"\n[levels]\n201 = "C6-C7"\n')
    with pytest.raises(ValueError, match=r"masks/1_t1\.mha: disc label 202 is not in the level map \[201\]"):
        VolumeSliceDataset(other)
    with pytest.raises(ValueError, match="not a disc name"):
        level_map("C7-C5")


def test_split_is_by_patient_deterministic_and_never_shares_a_patient(root):
    ids = [f"P{i:03d}" for i in range(100)]
    train, val = split_patients(ids + ids[:10], val_fraction=0.2, seed=3)  # repeated ids count once
    assert len(val) == 20 and len(train) == 80 and not set(train) & set(val) and set(train) | set(val) == set(ids)
    assert split_patients(list(reversed(ids)), 0.2, seed=3) == (train, val)  # order does not matter
    assert split_patients(ids, 0.2, seed=4)[1] != val
    assert split_patients(["1", "2"], 0.01, 0)[1] and split_patients(["1", "2"], 0.99, 0)[0]
    tr, va = spider_datasets(root)
    assert len(tr) + len(va) == 5 * 2 * S and len(va) > 0 and len(tr) > 0
    train_patients = {tr.case_of(i).patient for i in range(len(tr))}
    val_patients = {va.case_of(i).patient for i in range(len(va))}
    assert not train_patients & val_patients and train_patients | val_patients == set("12345")
    assert {c.sequence for c in va.cases} == {"t1", "t2"}  # both sequences of a patient go together


def test_data_spec_resolves_spider_folders(root):
    tc = load_detector_config("tiny").train
    for spec in (f"spider:{root}", str(root)):  # prefix, or a folder with images/ + masks/
        train_set, val_set = resolve(spec, tc)
        assert isinstance(train_set, VolumeSliceDataset) and not set(train_set.patients) & set(val_set.patients)
    evaluated = eval_dataset(f"spider:{root}", 10, 0)
    assert evaluated.patients == val_set.patients


def test_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.mha"
    bad.write_bytes(
        b"ObjectType = Image\nNDims = 3\nDimSize = 4 4 4\nElementType = MET_SHORT\nElementDataFile = LOCAL\n"
        + b"\0" * 10
    )
    with pytest.raises(ValueError, match=r"bad\.mha: 10 bytes of voxel data, DimSize x MET_SHORT needs 128"):
        read_volume(bad)
    bad.write_bytes(
        b"ObjectType = Image\nNDims = 3\nDimSize = 4 4 4\nElementType = MET_LONG_DOUBLE\nElementDataFile = LOCAL\n"
    )
    with pytest.raises(ValueError, match=r"bad\.mha: ElementType 'MET_LONG_DOUBLE'"):
        read_volume(bad)
    broken = make_root(tmp_path / "grid", patients=1)
    write_mha(broken / "images" / "1_t1.mha", stored(phantom()[0])[:, :, :-1], "MET_SHORT")
    ds = VolumeSliceDataset(broken)
    with pytest.raises(ValueError, match=r"1_t1\.mha: not on the grid of its mask .*shape"):
        ds[0]
    (broken / "masks" / "1_t1.mha").unlink()
    with pytest.raises(FileNotFoundError, match=r"1_t1\.mha: no mask"):
        VolumeSliceDataset(broken)


def test_slices_train_with_the_existing_training_loop(root, tmp_path):
    import torch
    from torch.utils.data import Subset

    from detector.train import train

    torch.set_num_threads(1)
    train_set, val_set = spider_datasets(root)
    two = Subset(train_set, [4, 5])  # slices with three discs each
    assert all(len(two[i][1]["boxes"]) == 3 for i in range(2))
    cfg = load_detector_config("tiny").replace(train={"epochs": 1, "batch_size": 2})
    result = train(cfg, two, Subset(val_set, [4]), tmp_path, config_name="tiny", progress=False, log=lambda s: None)
    assert len(result.history) == 1 and np.isfinite(result.history[0]["loss"])
    assert (tmp_path / "last.pt").is_file()


def test_detector_does_not_import_pydicom():
    code = "import sys, detector.data.spider, detector.sources; assert 'pydicom' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_config_key_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['level'\]"):
        SpiderConfig.from_dict({"level": "cervical"})
