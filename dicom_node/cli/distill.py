"""``meddet distill``: MedDet multi-teacher distillation (torch imported inside the command)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dicom_node.cli import app


@app.command("distill")
def distill_cmd(
    teachers: Annotated[
        str, typer.Option("--teachers", help="Comma-separated teacher checkpoints (trained with `meddet train`)")
    ],
    student: Annotated[
        str | None, typer.Option("--student", help="Student config name or TOML path (default: the distill config's)")
    ] = None,
    data: Annotated[
        str,
        typer.Option(
            "--data", help="'synthetic', 'synthetic:hard', or a COCO/YOLO folder (train/ + val/ or one folder)"
        ),
    ] = "synthetic",
    out: Annotated[Path, typer.Option("--out", help="Output folder (last.pt resumable, student.pt, model.pt)")] = Path(
        "runs/meddet"
    ),
    config: Annotated[
        str, typer.Option("--config", help="Distill config name (distill_small, distill_paper) or TOML path")
    ] = "distill_small",
    epochs: Annotated[int | None, typer.Option("--epochs", help="Override train.epochs")] = None,
    images: Annotated[int | None, typer.Option("--images", help="Override train.train_images (synthetic)")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Override train.seed")] = None,
    fusion: Annotated[str | None, typer.Option("--fusion", help="lwff, sum or concat")] = None,
    ode: Annotated[str | None, typer.Option("--ode", help="nmODE² placement: head, fpn, backbone or none")] = None,
    adversarial: Annotated[bool | None, typer.Option("--adversarial/--no-adversarial", help="AATM on or off")] = None,
    cache: Annotated[str | None, typer.Option("--cache", help="Teacher features: memory, disk or none")] = None,
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Continue from OUT/last.pt if present")] = True,
    init_from: Annotated[
        Path | None,
        typer.Option(
            "--init-from", help="Start the student from this checkpoint's weights where names and shapes match"
        ),
    ] = None,
    threads: Annotated[int, typer.Option("--threads", help="torch CPU threads (0 = torch's default)")] = 0,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
) -> None:
    """Distil frozen GFL teachers into a student (AFA + LWFF + AATM + nmODE²); exports OUT/model.pt."""
    import torch

    from detector import checkpoint
    from detector.config import load_config
    from detector.distill.config import load_distill
    from detector.distill.trainer import distill, load_teacher
    from detector.evaluate import format_metrics
    from detector.sources import resolve
    from dicom_node.cli.ml import open_folder

    dcfg, student_cfg = load_distill(config)
    if student is not None:
        student_cfg = load_config(student).replace(train=student_cfg.to_dict()["train"])
        dcfg = dcfg.replace(student=student)
    changes = {
        k: v
        for k, v in {"fusion": fusion, "ode": ode, "adversarial": adversarial, "cache": cache}.items()
        if v is not None
    }
    try:
        dcfg = dcfg.replace(**changes)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    overrides = {k: v for k, v in {"epochs": epochs, "train_images": images, "seed": seed}.items() if v is not None}
    if overrides:
        student_cfg = student_cfg.replace(train=overrides)
    if threads:
        torch.set_num_threads(threads)
    paths = [Path(p) for p in teachers.split(",") if p.strip()]
    missing = [str(p) for p in paths if not p.is_file()]
    if not paths or missing:
        raise typer.BadParameter(f"teacher checkpoint(s) not found: {missing or teachers!r}", param_hint="--teachers")
    loaded = [load_teacher(p) for p in paths]
    train_set, val_set = resolve(data, student_cfg.train, open_folder)
    typer.echo(
        f"distilling {len(loaded)} teachers ({', '.join(v for _, v in loaded)}) into {dcfg.student}: "
        f"{len(train_set)} train / {len(val_set)} val images -> {out}"
    )
    result = distill(
        dcfg,
        student_cfg,
        [m for m, _ in loaded],
        train_set,
        val_set,
        out,
        config_name=f"meddet-{Path(dcfg.student).stem}",
        teacher_versions=[v for _, v in loaded],
        resume=resume,
        progress=progress,
        log=typer.echo,
        init=init_from,
    )
    if dcfg.ode in ("fpn", "backbone"):
        typer.echo(f"{result.student} holds the {dcfg.ode} nmODE² variant (ablation only; Detector loads head/none)")
        return
    exported = checkpoint.export(result.student, out / "model.pt")  # type: ignore[arg-type]
    typer.echo(f"exported {out / 'model.pt'} (version {exported['version']}, epoch {exported.get('epoch')})")
    if result.metrics:
        typer.echo(format_metrics(result.metrics))
