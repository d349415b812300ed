"""``meddet calibrate``: fit the second stage's calibration and operating point on labelled
studies (synthetic or a site's own), and write a checkpoint that serves them."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from dicom_node.cli import app, fail, state

if TYPE_CHECKING:
    import numpy as np

T = TypeVar("T")


@app.command("calibrate")
def calibrate_cmd(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", help="Checkpoint to write (may be the input one)")],
    data: Annotated[
        str,
        typer.Option(
            "--data",
            help="'synthetic' (our generator, seeds below), or a folder of "
            "DICOM series, each beside a ground_truth.json/boxes.json that lists "
            "'herniated_levels'",
        ),
    ] = "synthetic",
    target_sensitivity: Annotated[
        float,
        typer.Option(
            "--target-sensitivity", min=0.01, max=1.0, help="Per-level sensitivity the operating point must reach"
        ),
    ] = 0.9,
    checkpoint: Annotated[
        Path | None, typer.Option("--checkpoint", help="Input checkpoint (default: MEDDET_CHECKPOINT or shipped)")
    ] = None,
    discs: Annotated[
        Path | None, typer.Option("--discs", help="Install this second stage (best.pt of `meddet train-discs`) first")
    ] = None,
    level: Annotated[
        Path | None,
        typer.Option(
            "--level", help="Take the level net from this second stage (best.pt of `meddet train-discs --only level`)"
        ),
    ] = None,
    add_level: Annotated[
        Path | None,
        typer.Option(
            "--add-level",
            help="Average this second stage's level net with the checkpoint's (after --level): an "
            "ensemble whose level probabilities are the mean of its members'",
        ),
    ] = None,
    add_herniation: Annotated[
        Path | None,
        typer.Option(
            "--add-herniation",
            help="Average this second stage's herniation net with the checkpoint's: an ensemble "
            "whose logit and protrusion are the mean of its members' (calibrated here afresh)",
        ),
    ] = None,
    locator: Annotated[
        Path | None,
        typer.Option("--locator", help="Install this level locator (locator.pt of `meddet train-locator`)"),
    ] = None,
    fusion: Annotated[
        str | None,
        typer.Option(
            "--fusion",
            help="With --locator: how its view of each disc's level combines with the level net's: "
            "'product' (both must agree; the default), 'mean', 'locator' (its view alone) or 'level' (stored, unused)",
        ),
    ] = None,
    studies: Annotated[int, typer.Option("--studies", help="Synthetic studies to calibrate on")] = 120,
    seed: Annotated[
        int, typer.Option("--seed", help="Synthetic seed (keep it apart from training and test seeds)")
    ] = 880000,
    threads: Annotated[int, typer.Option("--threads", help="torch CPU threads (0 = torch's default)")] = 0,
) -> None:
    """Fit the herniation call's calibration and operating point, and store them in the checkpoint.

    Platt scaling of the per-level logit, and the threshold that reaches the target
    sensitivity, on labelled studies that are not the test set; both (and what data they came
    from) go into the checkpoint that `meddet serve`, `worker` and `predict` then use by
    default. The fit is made under today's analysis rules (how chains are named, which
    detections a call reads), which the checkpoint stores with it."""
    import json
    from dataclasses import replace

    import torch

    from detector import checkpoint as ckpt
    from detector.analysis import Analyzer, level_logits
    from detector.discs.calibration import Calibration, calibrate
    from detector.discs.model import DiscModels

    if threads:
        torch.set_num_threads(threads)
    if fusion is not None:
        from detector.naming import FUSIONS

        if locator is None:
            fail("--fusion: only with --locator (it says how the locator's view combines with the level net's)")
        if fusion not in FUSIONS:
            fail(f"--fusion: expected one of {', '.join(FUSIONS)}, got {fusion!r}")
    source = checkpoint or state(ctx).settings.checkpoint
    try:
        second = DiscModels.load(discs) if discs is not None else None
        analyzer = Analyzer.from_checkpoint(source, device="cpu", discs=second)
        if level is not None:
            levels = DiscModels.load(level)
            analyzer.discs = replace(analyzer.discs, level=levels.level.eval(), level_crop=levels.level_crop)
        if add_level is not None:
            analyzer.discs = analyzer.discs.with_level_member(DiscModels.load(add_level))
        if add_herniation is not None:
            analyzer.discs = analyzer.discs.with_herniation_member(DiscModels.load(add_herniation))
        if locator is not None:
            from detector.discs.locator import load_locator

            analyzer.discs.locator = load_locator(locator)
            analyzer.discs.level_fusion = fusion or "product"
    except (FileNotFoundError, ValueError, KeyError) as exc:
        fail(f"checkpoint: {exc}")
    # fitted under today's analysis rules, which the checkpoint then stores (an older one's may differ)
    analyzer.discs = analyzer.discs.with_calibration(Calibration.identity()).under_current_rules()
    if data == "synthetic":
        from detector.discs.samples import calibration_studies

        labelled = calibration_studies(studies, seed)
        described = f"synthetic (detector.data, widened), {studies} studies, seed {seed}"
    else:
        labelled = _folder_studies(Path(data))
        described = f"folder {Path(data).name}"
    logits, labels, unnamed = level_logits(analyzer, _progress(labelled, studies if data == "synthetic" else None))
    if len(labels) == 0:
        fail("calibration: no level could be named on this data")
    try:
        cal = calibrate(logits, labels, target_sensitivity, described)
    except ValueError as exc:
        fail(f"calibration: {exc}")
    from detector import SHIPPED_CHECKPOINT

    source_path = Path(source) if source else SHIPPED_CHECKPOINT
    payload = ckpt.load(source_path)
    sidecar = source_path.with_suffix(".json")
    if sidecar.is_file():  # its detector's metric blocks (e.g. the model card's hard_set) travel along
        payload["metrics"] = {**payload.get("metrics", {}), **json.loads(sidecar.read_text()).get("metrics", {})}
    payload.get("metrics", {}).pop("heldout", None)  # that run judged the old version's analysis, not this
    payload = ckpt.with_second_stage(payload, analyzer.discs.with_calibration(cal).to_payload())
    ckpt.save(payload, out)
    typer.echo(f"{len(labels)} levels ({cal.n_positive} herniated) from {described}; {unnamed} studies unnamed")
    typer.echo(
        f"Platt a={cal.a:.3f} b={cal.b:.3f}; operating point p >= {cal.threshold:.3f}: "
        f"sensitivity {cal.sensitivity:.3f}, specificity {cal.specificity:.3f} (on the calibration data)"
    )
    typer.echo(f"wrote {out} (version {payload['version']})")


def _progress(items: Iterable[T], total: int | None) -> Iterable[T]:
    from rich.progress import track

    return track(items, description="calibrating", total=total, transient=True)


def _folder_studies(root: Path) -> Iterator[tuple[np.ndarray, tuple[float, float], dict[str, bool]]]:
    """(volume, spacing, {level: herniated}) of every series beside a box file with levels."""
    import json

    import numpy as np

    from detector.levels import LEVELS
    from dicom_node.datasets import BOX_FILES
    from dicom_node.pixels import SeriesError, read_series

    files = sorted(p for name in BOX_FILES for p in root.rglob(name))
    if not files:
        fail(f"{root}: no {' or '.join(BOX_FILES)} found")
    for box_file in files:
        spec = json.loads(box_file.read_text())
        if "herniated_levels" not in spec:
            fail(f"{box_file}: no 'herniated_levels' list: calibration needs per-level truth")
        unknown = set(spec["herniated_levels"]) - set(LEVELS)
        if unknown:
            fail(f"{box_file}: unknown levels {sorted(unknown)} (expected names from {list(LEVELS)})")
        try:
            series = read_series(box_file.parent, spec.get("series_instance_uid"))
            spacing = series.pixel_spacing
        except SeriesError as exc:
            fail(f"{box_file.parent}: {exc}")
        truth = {lv: lv in spec["herniated_levels"] for lv in LEVELS}
        yield np.stack(series.images), spacing, truth
