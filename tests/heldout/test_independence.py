"""The held-out generator stays independent of training: no import either way."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DETECTOR = ROOT / "detector"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return out


def _training_files() -> list[Path]:
    files: set[Path] = set()
    for sub in ("data", "distill", "discs"):
        if (DETECTOR / sub).is_dir():
            files.update((DETECTOR / sub).rglob("*.py"))
    if (DETECTOR / "train.py").is_file():
        files.add(DETECTOR / "train.py")
    for pkg in ("detector", "dicom_node", "worker", "benchmarks"):
        files.update(p for p in (ROOT / pkg).rglob("*.py") if "train" in p.name)
    return sorted(files)


def test_training_code_never_imports_heldout() -> None:
    files = _training_files()
    assert any(p.parent.name == "data" for p in files) and (DETECTOR / "train.py") in files
    for path in files:
        bad = [m for m in _imports(path) if "heldout" in m]
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_heldout_imports_only_itself_and_numeric_libraries() -> None:
    files = sorted((DETECTOR / "heldout").rglob("*.py"))
    assert len(files) >= 5
    for path in files:
        for m in _imports(path):
            if m.startswith("detector"):
                assert m.startswith("detector.heldout"), f"{path.name} imports {m}"
            assert not m.startswith("."), f"{path.name}: relative import {m}"
            top = m.split(".")[0]
            assert top in {
                "detector",
                "numpy",
                "scipy",
                "__future__",
                "collections",
                "dataclasses",
                "typing",
                "math",
                "time",
            }, f"{path.name} imports {m}"
