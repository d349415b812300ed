"""Detector commands: train, evaluate (torch imported lazily inside each command)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from dicom_node.cli import app, state

DataOpt = Annotated[
    str, typer.Option("--data", help="'synthetic', 'synthetic:hard', or a folder: DICOM series + boxes.json, COCO or YOLO (train/ + val/, or one folder)")
]
ThreadsOpt = Annotated[int, typer.Option("--threads", help="torch CPU threads (0 = torch's default)")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N")]


def open_folder(root: Path):  # type: ignore[no-untyped-def]
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
    config: Annotated[str, typer.Option("--config", help="Shipped config name (e.g. student, teacher_r50) or a TOML path")],
    data: DataOpt = "synthetic",
    out: Annotated[Path, typer.Option("--out", help="Output folder (last.pt, best.pt, model.pt)")] = Path("runs/student"),
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Override train.epochs")] = None,
    images: Annotated[Optional[int], typer.Option("--images", help="Override train.train_images (synthetic)")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Override train.seed")] = None,
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Continue from OUT/last.pt if present")] = True,
    init_from: Annotated[
        Optional[Path], typer.Option("--init-from", help="Start from this checkpoint's weights where names and shapes match")
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
    overrides = {k: v for k, v in {"epochs": epochs, "train_images": images, "seed": seed}.items() if v is not None}
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
    result = train(cfg, train_set, val_set, out, config_name=name, resume=resume, device=device, progress=progress, log=typer.echo,
                   init=init_from)
    exported = checkpoint.export(result.best or result.last, out / "model.pt")  # type: ignore[arg-type]
    typer.echo(f"exported {out / 'model.pt'} (version {exported['version']}, epoch {exported.get('epoch')})")
    if exported.get("metrics"):
        typer.echo(format_metrics(exported["metrics"]))


@app.command("evaluate")
def evaluate_cmd(
    ctx: typer.Context,
    checkpoint_path: Annotated[
        Optional[Path], typer.Option("--checkpoint", help="Checkpoint (default: MEDDET_CHECKPOINT or the shipped one)")
    ] = None,
    data: DataOpt = "synthetic:hard",
    images: Annotated[int, typer.Option("--images", help="Synthetic slices to score")] = 300,
    seed: Annotated[int, typer.Option("--seed", help="Synthetic data seed (use one not seen in training)")] = 20240,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 8,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print metrics as JSON")] = False,
) -> None:
    """mAP50, mAP50:95, per-class AP and recall (pycocotools) of a checkpoint on a dataset."""
    import torch

    from detector.evaluate import evaluate_model, format_metrics
    from detector.inference import Detector
    from detector.sources import eval_dataset

    if threads:
        torch.set_num_threads(threads)
    det = Detector.from_checkpoint(checkpoint_path or state(ctx).settings.checkpoint, device=device)
    dataset = eval_dataset(data, images, seed, open_folder)
    metrics = evaluate_model(det.model, dataset, det.cfg.preprocess, batch_size, det.class_names)
    metrics = {"model_version": det.version, "data": data, "seed": seed, **metrics}
    if as_json:
        typer.echo(json.dumps(metrics, indent=2))
    else:
        typer.echo(f"model {det.version} on {data} (seed {seed})")
        typer.echo(format_metrics(metrics))
