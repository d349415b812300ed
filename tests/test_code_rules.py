"""Lint, import rules and types, run as tests so that ``python -m pytest`` (and so ``.ci/run``)
enforces them. Their configuration is in pyproject.toml (``[tool.ruff]``, ``[tool.mypy]``,
``[tool.importlinter]``); the tools come with ``pip install -e '.[test]'``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def run(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, NO_COLOR="1", PYTHONPATH=str(ROOT))
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def tool(name: str) -> str:
    """The console script ``name`` of this interpreter's environment (or on PATH)."""
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is missing: pip install -e '.[test]'")
    return found


def test_ruff_finds_nothing() -> None:
    done = run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "."], 120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_code_is_laid_out_by_ruff_format() -> None:
    done = run([sys.executable, "-m", "ruff", "format", "--check", "--no-cache", "."], 120)
    assert done.returncode == 0, "run `ruff format .`:\n" + done.stdout + done.stderr


def test_import_contracts_hold() -> None:
    """detector imports none of our packages; worker never imports the CLI; dicom_node imports
    worker and migrations only from its CLI, and only the CLI imports the CLI."""
    done = run([tool("lint-imports"), "--no-cache"], 120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_the_import_contracts_of_issue_13_are_configured() -> None:
    contracts = {c["name"]: c for c in PYPROJECT["tool"]["importlinter"]["contracts"]}
    pure = [c for c in contracts.values() if c.get("source_modules") == ["detector"]]
    assert pure and set(pure[0]["forbidden_modules"]) == {"dicom_node", "worker", "migrations"}
    no_cli = [c for c in contracts.values() if c.get("source_modules") == ["worker"]]
    assert no_cli and no_cli[0]["forbidden_modules"] == ["dicom_node.cli"]
    node = [c for c in contracts.values() if c.get("source_modules") == ["dicom_node"]]
    assert node and set(node[0]["forbidden_modules"]) == {"worker", "migrations"}
    # Only the CLI's imports are exempt: no other edge is waved through.
    assert all(i.startswith("dicom_node.cli.** -> ") for i in node[0]["ignore_imports"])
    protected = [c for c in contracts.values() if c["type"] == "protected"]
    assert protected and protected[0]["protected_modules"] == ["dicom_node.cli"]


#: The flags of mypy's --strict that are set per module (warn_unused_ignores and
#: warn_redundant_casts, the other two, are global options).
STRICT_FLAGS = (
    "disallow_any_generics",
    "disallow_subclassing_any",
    "disallow_untyped_calls",
    "disallow_untyped_defs",
    "disallow_incomplete_defs",
    "check_untyped_defs",
    "disallow_untyped_decorators",
    "warn_return_any",
    "no_implicit_reexport",
    "strict_equality",
    "extra_checks",
)


def test_mypy_checks_dicom_node_and_worker_strictly() -> None:
    """Issue 13: mypy strict on dicom_node/ and worker/, its defaults on detector/."""
    mypy = PYPROJECT["tool"]["mypy"]
    assert set(mypy["files"]) >= {"detector", "dicom_node", "worker"}
    assert mypy["warn_unused_ignores"] is True and mypy["warn_redundant_casts"] is True
    overrides = mypy["overrides"]
    strict = [o for o in overrides if set(o["module"]) >= {"dicom_node", "dicom_node.*", "worker", "worker.*"}]
    assert len(strict) == 1 and {flag: strict[0].get(flag) for flag in STRICT_FLAGS} == dict.fromkeys(
        STRICT_FLAGS, True
    )
    # No later override relaxes a dicom_node or worker module: the temporary ones that issue 13
    # allowed while other work was changing them are gone, and none may come back.
    relaxed = {
        m for o in overrides if o is not strict[0] for m in o["module"] if m.split(".")[0] in ("dicom_node", "worker")
    }
    assert not relaxed, sorted(relaxed)


@pytest.mark.slow
def test_mypy_finds_nothing() -> None:
    """``python -m mypy``: detector/ (mypy's defaults), dicom_node/ and worker/ (strict)."""
    done = run([sys.executable, "-m", "mypy"], 500)
    assert done.returncode == 0, done.stdout + done.stderr
    assert set(PYPROJECT["tool"]["mypy"]["files"]) >= {"detector", "dicom_node", "worker"}


def test_no_two_modules_import_each_other() -> None:
    """No import cycle among the modules of our packages, imports inside functions included
    (a lazy import that closes a loop is still a loop to read). A package's ``__init__`` is left
    out: the CLI's registers its command modules, which import its ``app``."""
    import importlib.util

    import grimp

    graph = grimp.build_graph(*PYPROJECT["tool"]["importlinter"]["root_packages"])
    packages = {m for m in graph.modules if (spec := importlib.util.find_spec(m)) and spec.submodule_search_locations}
    modules = sorted(graph.modules - packages)
    imports = {m: sorted(graph.find_modules_directly_imported_by(m) - packages) for m in modules}
    cycles = [c for c in _strongly_connected(imports) if len(c) > 1]
    assert not cycles, f"modules that import each other (move what both need below them): {cycles}"


def _strongly_connected(edges: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of a directed graph, iteratively."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(edges[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges.get(child, []))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                found.append(sorted(component))
    return found
