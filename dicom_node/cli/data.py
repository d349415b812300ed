"""Data commands: ``meddet synth`` (synthetic DICOM studies) and ``meddet predict``.

torch and the detector are imported inside the commands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from dicom_node.cli import app, fail, state


@app.command()
def synth(
    out: Annotated[Path, typer.Option("--out", help="Output folder (one sub-folder per study)")],
    studies: Annotated[int, typer.Option("--studies", min=1, help="Number of studies")] = 1,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same studies and UIDs)")] = 0,
    hard: Annotated[bool, typer.Option("--hard", help="Subtle herniations, strong noise, low contrast")] = False,
    slices: Annotated[int, typer.Option("--slices", min=1, help="Sagittal slices per series")] = 15,
    size: Annotated[int | None, typer.Option("--size", help="Matrix size (default: varied)")] = None,
    transfer_syntax: Annotated[
        str, typer.Option("--transfer-syntax", help="explicit, implicit, deflate, rle, jpeg-ls or jpeg2000")
    ] = "explicit",
    as_json: Annotated[bool, typer.Option("--json", help="Print the index as JSON")] = False,
) -> None:
    """Write synthetic sagittal T2 cervical spine MR series (DICOM) with ground-truth boxes."""
    from dicom_node.synth import TRANSFER_SYNTAXES, write_studies

    if transfer_syntax not in TRANSFER_SYNTAXES:
        fail(f"--transfer-syntax: {transfer_syntax!r} not one of {', '.join(TRANSFER_SYNTAXES)}", 2)
    written = write_studies(out, studies, seed, hard=hard, n_slices=slices, size=size, transfer_syntax=transfer_syntax)
    if as_json:
        typer.echo((out / "index.json").read_text())
        return
    for w in written:
        levels = ", ".join(w.herniated_levels) or "none"
        typer.echo(f"{w.dicom_dir}  herniated: {levels}")
    typer.echo(f"{len(written)} studies x {slices} slices -> {out} (ground truth in */ground_truth.json)")


@app.command()
def predict(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="DICOM series folder or file")],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Output folder: findings.json, NN-<kind>.dcm result objects, objects.json "
            "(the worker's results layout)",
        ),
    ],
    checkpoint: Annotated[
        Path | None, typer.Option("--checkpoint", help="Detector checkpoint (default: MEDDET_CHECKPOINT or shipped)")
    ] = None,
    series_uid: Annotated[
        str | None, typer.Option("--series", help="Series Instance UID when PATH holds several")
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option(
            "--threshold",
            help="Calibrated probability that calls a level herniated "
            "(default: the operating point stored in the checkpoint by `meddet calibrate`)",
        ),
    ] = None,
    results: Annotated[
        str, typer.Option("--results", help="DICOM result objects: comma list of sr,seg,gsps,sc,kos, or 'none'")
    ] = "sr,seg,gsps",
    sr_kind: Annotated[str, typer.Option("--sr-kind", help="3d, comprehensive or enhanced")] = "3d",
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N")] = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 8,
    as_json: Annotated[bool, typer.Option("--json", help="Print findings.json instead of a table")] = False,
) -> None:
    """Find disc herniations in a sagittal cervical MR series.

    Writes OUT/findings.json, one OUT/NN-<kind>.dcm per result object (00-sr.dcm, 01-seg.dcm...)
    and OUT/objects.json (the manifest, written last): the same layout as the worker's results.
    """
    from dicom_node.analysis import FINDINGS_FILE, MANIFEST_FILE, analyze_series, write_results
    from dicom_node.kinds import result_kinds
    from dicom_node.kinds import sr_kind as parse_sr_kind
    from dicom_node.pixels import SeriesError, read_series
    from dicom_node.results import FindingsError

    try:
        series = read_series(path, series_uid)
    except SeriesError as exc:
        fail(str(exc), 2)
    ckpt = checkpoint or state(ctx).settings.checkpoint
    try:
        from detector.analysis import Analyzer

        analyzer = Analyzer.from_checkpoint(ckpt, device=device)
    except (FileNotFoundError, ImportError, ValueError) as exc:
        fail(f"detector: {exc}", 2)
    try:
        kinds = result_kinds([k.strip() for k in results.split(",") if k.strip() and k.strip() != "none"])
        sr = parse_sr_kind(sr_kind)
    except ValueError as exc:  # names the unknown value and the allowed ones
        fail(f"--results/--sr-kind: {exc}", 2)
    try:
        result = analyze_series(series, analyzer, kinds=kinds, sr_kind=sr, threshold=threshold, batch_size=batch_size)
    except FindingsError as exc:
        fail(f"result objects: {exc}", 1)
    except SeriesError as exc:  # no pixel spacing
        fail(str(exc), 2)
    findings = result.findings
    if kinds and not findings["findings"]:
        typer.secho("no disc found: no result objects written", fg="yellow", err=True)
    manifest = write_results(out, findings, result.objects)
    if as_json:
        typer.echo(json.dumps(findings, indent=1))
        return
    numbers = {s.sop_instance_uid: (k, s.source.get("InstanceNumber")) for k, s in enumerate(series.slices)}
    _print_table(findings, numbers)
    for name in [FINDINGS_FILE, *(item["file"] for item in manifest), MANIFEST_FILE]:
        typer.echo(f"wrote {out / name}")


def _print_table(findings: dict[str, Any], slice_of: dict[str, tuple[int, object]]) -> None:
    """Findings as a table; ``slice_of``: SOP Instance UID -> (slice index, InstanceNumber)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"series {findings['series_instance_uid']} ({len(slice_of)} slices)")
    for col in ("level", "finding", "probability", "protrusion", "key slice (instance)", "box (x0, y0, x1, y1)"):
        table.add_column(col)
    for f in findings["findings"]:
        style = "bold red" if f["label"] == "herniation" else "green"
        k, number = slice_of[f["sop_instance_uid"]]
        prot = f.get("protrusion_mm")
        table.add_row(
            f["level"],
            f"[{style}]{f['label']}[/]",
            f"{f.get('probability', f['score']):.2f}",
            "" if prot is None else f"{prot:.1f} mm",
            f"{k} (#{number})",
            ", ".join(f"{v:.0f}" for v in f["box"]),
        )
    if not findings["findings"]:
        table.add_row("-", "no disc found", "", "", "", "")
    point = findings.get("operating_point")
    if point:
        table.caption = (
            f"herniation called at probability >= {point['threshold']:.2f} ({point['method']}; {point['data']})"
        )
    levels = findings.get("levels") or {}
    if levels.get("reason"):
        table.caption = f"{table.caption or ''}\nlevels unknown: {levels['reason']}"
    Console().print(table)
