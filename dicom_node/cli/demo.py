"""``meddet demo``: synthetic study -> node -> results in a built-in test PACS, printed and drawn."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from dicom_node.cli import app, state

if TYPE_CHECKING:
    from pydicom import Dataset
    from rich.console import Console

    from dicom_node.demo import JobResults
    from dicom_node.loopback import TestPACS


def _show(
    console: Console,
    results: JobResults,
    sources: Sequence[Dataset],
    truth: set[str],
    pacs: TestPACS,
    elapsed: float,
    png: Path,
) -> None:
    """Print the findings per level and what the PACS holds; draw the key slice."""
    from rich.table import Table

    from dicom_node import demo as loop

    findings = results.findings["findings"]
    numbers = {str(ds.SOPInstanceUID): int(ds.InstanceNumber) for ds in sources}
    table = Table(
        "level",
        "finding",
        "herniation probability",
        "key slice",
        "ground truth",
        title=f"MedDet findings, {elapsed:.1f} s after sending",
    )
    for row in loop.level_rows(findings, numbers, truth):
        colour = "red" if row.label == "herniation" else "green"
        table.add_row(
            row.level, f"[{colour}]{row.label}[/{colour}]", f"{row.score:.0%}", str(row.slice_number), row.truth
        )
    console.print(table if findings else "[yellow]the detector found no disc[/yellow]")
    for ds in pacs.received():
        console.print(
            f"  in the test PACS: {ds.Modality:<3} {ds.SOPClassUID.name}, "
            f'series {ds.get("SeriesNumber", "")} "{ds.get("SeriesDescription", "")}"'
        )
    key = loop.key_finding(findings)
    if key is not None:
        source = next(ds for ds in sources if str(ds.SOPInstanceUID) == key["sop_instance_uid"])
        loop.draw_key_slice(source, findings, png)
        console.print(f"key slice {int(source.InstanceNumber)} with the boxes: {png}")


@app.command()
def demo(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="Folder for the study, node data, PACS and PNG")] = Path("meddet-demo"),
    seed: Annotated[
        int,
        typer.Option(
            help="Seed of the synthetic study (1: the first seed whose phantom has two herniated levels, "
            "chosen by its ground truth, not by what the model makes of it)"
        ),
    ] = 1,
    hard: Annotated[bool, typer.Option(help="A hard synthetic study (subtle herniations, noise)")] = False,
    quiet_period: Annotated[float, typer.Option(help="Node quiet period in seconds")] = 2.0,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the results")] = 300.0,
) -> None:
    """Run the whole loop on this machine and show what a PACS user would get.

    A synthetic sagittal cervical T2 study (`meddet synth`) is sent with a Storage SCU to a
    `meddet serve` node (embedded mode, data in OUT/node), which analyses it and sends its SR,
    SEG and GSPS to a built-in test PACS on loopback (OUT/pacs). Prints the findings per disc
    level next to the phantom's ground truth and saves OUT/key-slice.png with the boxes drawn.
    """
    from pydicom import dcmread
    from rich.console import Console

    from dicom_node import demo as loop
    from dicom_node import loopback as lb
    from dicom_node.destinations import Destination
    from dicom_node.logging import configure_logging
    from dicom_node.sender import send_objects
    from dicom_node.synth import write_studies

    settings = state(ctx).settings
    configure_logging("WARNING", settings.log_json)  # the demo tells its own story
    console = Console()
    for previous in ("study", "node", "pacs"):  # a re-run starts clean (same seed, same UIDs)
        shutil.rmtree(out / previous, ignore_errors=True)
    (out / "node.log").unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)

    with console.status("synthesizing a study"):
        [study] = write_studies(out / "study", 1, seed, hard=hard)
    sources = [dcmread(p) for p in sorted(study.dicom_dir.glob("*.dcm"))]
    truth = set(study.herniated_levels)
    console.print(
        f"study: {len(sources)} sagittal T2 slices in {study.dicom_dir}; "
        f"herniated levels (ground truth): {', '.join(sorted(truth)) or 'none'}"
    )

    pacs = lb.TestPACS(out / "pacs").start()
    node_port = lb.free_port()
    env = lb.node_environment(
        dict(os.environ), out / "node", node_port, pacs.destination, quiet_period, settings.checkpoint, settings.device
    )
    node = lb.NodeProcess(env, out / "node.log")
    try:
        with console.status("starting the node (meddet serve)"):
            node.wait_listening(node_port)
        console.print(f"node: {settings.ae_title}@127.0.0.1:{node_port}; test PACS: {pacs.destination}")
        started = time.monotonic()
        report = send_objects(
            sources, Destination(ae_title=settings.ae_title, host="127.0.0.1", port=node_port), calling_ae=loop.DEMO_AE
        )
        if not report.ok:
            raise RuntimeError(f"sending the study failed: {report.summary}")
        with console.status("analysing; waiting for the results in the test PACS"):
            results = lb.wait_for(
                lambda: loop.find_results(out / "node", study.series_instance_uid), timeout, "results for the series"
            )
            lb.wait_for(lambda: loop.all_received(pacs.received(), results), 60, "results in the test PACS")
        _show(console, results, sources, truth, pacs, time.monotonic() - started, out / "key-slice.png")
    except (RuntimeError, TimeoutError) as exc:
        console.print(f"[red]{exc}[/red]\nlast lines of {out / 'node.log'}:\n{node.tail()}")
        raise typer.Exit(1) from exc
    finally:
        node.stop()
        pacs.stop()
    console.print("[yellow]Synthetic data. Findings are preliminary and not for diagnosis.[/yellow]")
