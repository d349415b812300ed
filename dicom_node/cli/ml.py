"""Detector commands: train, evaluate (torch imported lazily inside each command)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, cast

import typer

from dicom_node.cli import app, state

if TYPE_CHECKING:
    import numpy as np

    from detector.sources import SliceDataset

DataOpt = Annotated[
    str,
    typer.Option(
        "--data",
        help="'synthetic', 'synthetic:hard', or a folder: DICOM series + boxes.json, COCO or YOLO (train/ + val/, or one folder)",
    ),
]
ThreadsOpt = Annotated[int, typer.Option("--threads", help="torch CPU threads (0 = torch's default)")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N")]


def open_folder(root: Path) -> SliceDataset:
    """A data folder: DICOM series with a box file (boxes.json / ground_truth.json, e.g.
    ``meddet synth`` output), else a COCO or YOLO folder."""
    from detector.sources import folder_dataset
    from dicom_node.datasets import BOX_FILES, DicomBoxDataset

    if any(next(root.rglob(name), None) for name in BOX_FILES):
        return DicomBoxDataset(root)
    return folder_dataset(root)


def _usage_error(exc: Exception) -> typer.Exit:
    typer.secho(f"Error: {exc}", fg="red", err=True)
    return typer.Exit(2)


@app.command("train")
def train_cmd(
    config: Annotated[
        str, typer.Option("--config", help="Shipped config name (e.g. student, teacher_r50) or a TOML path")
    ],
    data: DataOpt = "synthetic",
    out: Annotated[Path, typer.Option("--out", help="Output folder (last.pt, best.pt, model.pt)")] = Path(
        "runs/student"
    ),
    epochs: Annotated[int | None, typer.Option("--epochs", help="Override train.epochs")] = None,
    images: Annotated[int | None, typer.Option("--images", help="Override train.train_images (synthetic)")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Override train.seed")] = None,
    lr: Annotated[float | None, typer.Option("--lr", min=1e-6, help="Override train.lr (peak learning rate)")] = None,
    varied: Annotated[
        float | None,
        typer.Option(
            "--varied",
            min=0.0,
            max=1.0,
            help="Override train.varied: share of synthetic slices drawn with wider necks and random T2 "
            "looks, and of slices whose look is randomised (domain randomisation)",
        ),
    ] = None,
    varied_tissues: Annotated[
        bool | None,
        typer.Option(
            "--random-tissues/--generator-tissues",
            help="Override train.varied_tissues: the varied slices' tissues at random T2 intensities, "
            "or at the generator's own",
        ),
    ] = None,
    other_generator: Annotated[
        float | None,
        typer.Option(
            "--other-generator",
            min=0.0,
            max=1.0,
            help="Override train.other_generator: share of synthetic training slices from the second "
            "training generator (detector.altgen: another anatomy and renderer)",
        ),
    ] = None,
    random_look: Annotated[
        float | None,
        typer.Option(
            "--random-look",
            min=0.0,
            max=1.0,
            help="Override train.random_look: share of our generator's slices with every tissue's "
            "intensity at random (a vertebral body as bright as a disc, boxed as background)",
        ),
    ] = None,
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Continue from OUT/last.pt if present")] = True,
    init_from: Annotated[
        Path | None,
        typer.Option("--init-from", help="Start from this checkpoint's weights where names and shapes match"),
    ] = None,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = 0,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
) -> None:
    """Train a detector; writes resumable checkpoints and a small exported OUT/model.pt."""
    import torch

    from detector import checkpoint
    from detector.config import load_config
    from detector.evaluate import format_metrics
    from detector.sources import resolve
    from detector.train import train

    try:
        cfg = load_config(config)
    except (ValueError, FileNotFoundError) as exc:
        raise _usage_error(exc) from exc
    given = {
        "epochs": epochs,
        "train_images": images,
        "seed": seed,
        "lr": lr,
        "varied": varied,
        "varied_tissues": varied_tissues,
        "other_generator": other_generator,
        "random_look": random_look,
    }
    overrides = {k: v for k, v in given.items() if v is not None}
    if overrides:
        cfg = cfg.replace(train=overrides)
    if threads:
        torch.set_num_threads(threads)
    try:
        train_set, val_set = resolve(data, cfg.train, open_folder)
    except (ValueError, FileNotFoundError) as exc:
        raise _usage_error(exc) from exc
    name = Path(config).stem
    typer.echo(f"training {name}: {len(train_set)} train / {len(val_set)} val images -> {out}")
    result = train(
        cfg,
        train_set,
        val_set,
        out,
        config_name=name,
        resume=resume,
        device=device,
        progress=progress,
        log=typer.echo,
        init=init_from,
    )
    exported = checkpoint.export(result.best or result.last, out / "model.pt")  # type: ignore[arg-type]
    typer.echo(f"exported {out / 'model.pt'} (version {exported['version']}, epoch {exported.get('epoch')})")
    if exported.get("metrics"):
        typer.echo(format_metrics(exported["metrics"]))


@app.command("evaluate")
def evaluate_cmd(
    ctx: typer.Context,
    checkpoint_path: Annotated[
        Path | None, typer.Option("--checkpoint", help="Checkpoint (default: MEDDET_CHECKPOINT or the shipped one)")
    ] = None,
    data: Annotated[
        str,
        typer.Option(
            "--data",
            help="'synthetic', 'synthetic:hard', a folder (as for train), or 'heldout' "
            "('heldout:routine', 'heldout:hard'): the independent held-out studies, scored per disc level "
            "(docs/heldout.md)",
        ),
    ] = "synthetic:hard",
    images: Annotated[
        int | None,
        typer.Option(
            "--images", help="Synthetic slices to score (default 300); heldout: studies per kind (default 25)"
        ),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            "--seed",
            help="Data seed (default 20240 for synthetic: not seen in training; 7100 for heldout: the "
            "model card's test studies)",
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 8,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print metrics as JSON")] = False,
) -> None:
    """Score a checkpoint on a dataset: mAP50, mAP50:95, per-class AP and recall.

    pycocotools on the dataset's boxes; with `--data heldout`, the per-level protocol on the
    held-out generator (naming, herniation by name and by position, docs/heldout.md)."""
    import torch

    from detector.evaluate import evaluate_model, format_metrics
    from detector.inference import Detector
    from detector.sources import eval_dataset

    if threads:
        torch.set_num_threads(threads)
    if data == "heldout" or data.startswith("heldout:"):
        _evaluate_heldout(
            checkpoint_path or state(ctx).settings.checkpoint,
            data,
            images or 25,
            7100 if seed is None else seed,
            device,
            as_json,
        )
        return
    seed = 20240 if seed is None else seed
    det = Detector.from_checkpoint(checkpoint_path or state(ctx).settings.checkpoint, device=device)
    dataset = eval_dataset(data, 300 if images is None else images, seed, open_folder)
    metrics = evaluate_model(det.model, dataset, det.cfg.preprocess, batch_size, det.class_names)
    metrics = {"model_version": det.version, "data": data, "seed": seed, **metrics}
    if as_json:
        typer.echo(json.dumps(metrics, indent=2))
    else:
        typer.echo(f"model {det.version} on {data} (seed {seed})")
        typer.echo(format_metrics(metrics))


def _evaluate_heldout(checkpoint: Path | None, data: str, n: int, seed: int, device: str, as_json: bool) -> None:
    """``meddet evaluate --data heldout[:routine|:hard]``: the checkpoint's analysis (detector,
    anchor-named levels, calibrated call) on ``n`` held-out studies per kind, per disc level."""
    from detector.analysis import Analyzer
    from detector.heldout import studies
    from detector.heldout.protocol import check_targets, score_studies
    from detector.heldout.report_text import format_report, format_targets

    kind = data.partition(":")[2] or "both"
    if kind not in ("both", "routine", "hard"):
        raise _usage_error(ValueError(f"--data: {data!r} is not heldout, heldout:routine or heldout:hard"))
    try:
        analyzer = Analyzer.from_checkpoint(checkpoint, device=device)
    except (FileNotFoundError, ValueError) as exc:
        raise _usage_error(exc) from exc
    # a volume [S, H, W] is the sequence of its slices (numpy's stubs do not call it a Sequence)
    report = score_studies(
        lambda v, sp: analyzer.analyze(cast("Sequence[np.ndarray]", v), sp).findings,
        studies(0 if kind == "hard" else n, 0 if kind == "routine" else n, seed),
    )
    if as_json:
        out = {"model_version": analyzer.version, "data": data, "seed": seed, "studies_per_kind": n, **report.to_dict()}
        typer.echo(json.dumps(out, indent=2))
        return
    typer.echo(format_report(report, f"model {analyzer.version} on {data} (seed {seed}, {n} studies per kind)"))
    typer.echo(format_targets(report))
    if not all(t.passed for t in check_targets(report)):
        typer.echo("(targets not met)")
