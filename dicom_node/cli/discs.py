"""Second-stage commands: train-discs, train-locator, calibrate (torch imported lazily inside
each command)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn, TypeVar

import typer

from dicom_node.cli import app, state

if TYPE_CHECKING:
    import numpy as np

    from detector.discs.model import DiscModels
    from detector.discs.samples import Detect

T = TypeVar("T")


@app.command("train-discs")
def train_discs_cmd(
    out: Annotated[Path, typer.Option("--out", help="Output folder (last.pt resumes, best.pt is the result)")] = Path(
        "runs/discs"
    ),
    epochs: Annotated[int, typer.Option("--epochs", help="Epochs; each draws fresh synthetic patients")] = 20,
    patients: Annotated[int, typer.Option("--patients", help="Synthetic patients per epoch (~5 discs each)")] = 500,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the training and validation draws")] = 5150,
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Continue from OUT/last.pt if present")] = True,
    threads: Annotated[int, typer.Option("--threads", help="torch CPU threads (0 = torch's default)")] = 0,
    checkpoint: Annotated[
        Path | None,
        typer.Option("--checkpoint", help="Detector whose boxes half the herniation crops sit on (default: shipped)"),
    ] = None,
    only: Annotated[
        str | None,
        typer.Option(
            "--only", help="Train only this net ('level' or 'herniation'); the other is the checkpoint's second stage"
        ),
    ] = None,
    warm: Annotated[
        bool,
        typer.Option(
            "--warm/--fresh",
            help="With --only: start that net from the checkpoint's weights (fine-tune) instead of new",
        ),
    ] = False,
    lr: Annotated[float, typer.Option("--lr", min=1e-6, help="Peak learning rate (one-cycle schedule)")] = 2e-3,
    random_look: Annotated[
        float,
        typer.Option(
            "--random-look",
            min=0.0,
            max=0.5,
            help="Share of patients drawn with every tissue's intensity at random (SynthSeg-style), "
            "taken from our generator's own look; half are always random T2 looks",
        ),
    ] = 0.0,
    bones: Annotated[
        bool,
        typer.Option(
            "--bones/--no-bones",
            help="Draw C1's posterior arch and the clivus in most necks, and other C1 and dens sizes",
        ),
    ] = False,
    warp: Annotated[
        float,
        typer.Option(
            "--warp",
            min=0.0,
            max=10.0,
            help="Level crops: a smooth elastic warp, this sd in mm per cosine mode (other bone shapes); 0 = off",
        ),
    ] = 0.0,
    other_generator: Annotated[
        float,
        typer.Option(
            "--other-generator",
            min=0.0,
            max=1.0,
            help="Share of patients drawn from the second training generator (detector.altgen: another "
            "anatomy and renderer)",
        ),
    ] = 0.0,
    osteophytes: Annotated[
        float,
        typer.Option(
            "--osteophytes",
            min=0.0,
            max=1.0,
            help="Share of our generator's discs drawn with posterior corner osteophytes (1-3.5 mm bony "
            "spurs into the canal, herniated or not): a degenerative confounder labelled by the disc alone",
        ),
    ] = 0.0,
    coarsest: Annotated[
        float,
        typer.Option(
            "--coarsest",
            min=1.0,
            max=6.0,
            help="Herniation crops: the coarsest acquired resolution the randomisation simulates, in crop "
            "pixels of 0.3 mm (2.5 = 0.75 mm; 4 = 1.2 mm, a 256 matrix over a 300 mm field of view)",
        ),
    ] = 2.5,
    acquired_noise: Annotated[
        bool,
        typer.Option(
            "--acquired-noise/--white-noise",
            help="Herniation crops: noise white at the simulated acquired pixel (band-limited at 0.3 mm, "
            "as a coarser scan's is), each group of 32 crops with its own resolution; default: white "
            "at 0.3 mm, one resolution per epoch",
        ),
    ] = False,
    texture: Annotated[
        float,
        typer.Option(
            "--texture",
            min=0.0,
            max=1.0,
            help="Herniation crops: the share given a random texture first (a random shallow conv net "
            "mixed in, GIN-style, fluid kept bright): another renderer's or scanner's local contrast; "
            "0 = off",
        ),
    ] = 0.0,
    anchor_shift: Annotated[
        float,
        typer.Option(
            "--anchor-shift",
            min=0.0,
            max=8.0,
            help="Herniation crops on true discs: move the anchor up to this many mm along the rows (half "
            "that along the columns), as a detector on another scanner misplaces its boxes; 0 = off",
        ),
    ] = 0.0,
    annulus_anchor: Annotated[
        bool,
        typer.Option(
            "--annulus-anchor/--box-anchor",
            help="Herniation crops: anchor on the disc without its protrusion, none on the detector's boxes "
            "(a herniation widens its box backwards, so a crop on the box's centre sits further back "
            "and the net can learn the crop's place instead of the canal); validation too. Default: on "
            "the true box, half the patients on the detector's boxes",
        ),
    ] = False,
) -> None:
    """Train the second stage (herniation call + protrusion, disc level) on crops from our own
    synthetic generator, randomised in look every epoch. Writes OUT/best.pt (a DiscModels
    payload); `meddet calibrate --discs OUT/best.pt` then puts it in a checkpoint."""
    import torch

    from detector.discs.samples import Variety
    from detector.discs.train import DiscTrainConfig, train_discs
    from detector.inference import Detector

    if threads:
        torch.set_num_threads(threads)
    init: DiscModels | None = None
    nets: tuple[str, ...] = ("herniation", "level")
    if only is not None:
        if only not in nets:
            _fail(f"--only: expected 'level' or 'herniation', got {only!r}")
        init, nets = _start_from(checkpoint, None if warm else only), (only,)
    elif warm:
        _fail("--warm: name the net to fine-tune with --only")
    detect: Detect | None = None
    if "herniation" in nets and not annulus_anchor:  # half its crops sit on the detector's boxes
        detector = Detector.from_checkpoint(checkpoint, device="cpu")

        def boxes(image: np.ndarray) -> list[tuple[float, float, float, float]]:
            return [d.box for d in detector.predict([image])[0] if d.score >= 0.1]

        detect = boxes
    cfg = DiscTrainConfig(
        epochs=epochs,
        patients_per_epoch=patients,
        seed=seed,
        nets=nets,
        lr=lr,
        herniation_coarsest=coarsest,
        herniation_acquired_noise=acquired_noise,
        herniation_texture=texture,
        variety=Variety(
            random_look=random_look,
            craniovertebral_bones=bones,
            warp_mm=warp,
            other_generator=other_generator,
            anchor_shift_mm=anchor_shift,
            annulus_anchor=annulus_anchor,
            osteophytes=osteophytes,
        ),
    )
    best = train_discs(cfg, out, log=typer.echo, resume=resume, init=init, detect=detect)
    typer.echo(f"best second stage: {best}")


@app.command("train-locator")
def train_locator_cmd(
    out: Annotated[Path, typer.Option("--out", help="Output folder (OUT/locator.pt is the result)")] = Path(
        "runs/locator"
    ),
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="Epochs; each draws fresh synthetic patients")] = 16,
    patients: Annotated[int, typer.Option("--patients", min=8, help="Synthetic patients per epoch")] = 1024,
    val_patients: Annotated[
        int, typer.Option("--val-patients", min=8, help="Fixed validation patients (the best epoch is kept)")
    ] = 256,
    random_look: Annotated[
        float,
        typer.Option(
            "--random-look",
            min=0.0,
            max=1.0,
            help="Share of patients with every tissue's intensity at random (the rest: half random T2 looks)",
        ),
    ] = 0.0,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the training and validation draws")] = 0,
    threads: Annotated[int, typer.Option("--threads", help="torch CPU threads (0 = torch's default)")] = 0,
) -> None:
    """Train the level locator: a whole-neck window (skull base to the thoracic spine) ->
    where each disc level C2-C3 .. T1-T2 is, on fresh synthetic patients every epoch.
    Writes OUT/locator.pt; `meddet calibrate --locator OUT/locator.pt` puts it in a checkpoint,
    where its view of each disc's level is combined with the level net's."""
    import torch

    from detector.discs.locator_train import LocatorTrainConfig, train_locator

    if threads:
        torch.set_num_threads(threads)
    cfg = LocatorTrainConfig(
        epochs=epochs, patients_per_epoch=patients, val_patients=val_patients, random_look=random_look, seed=seed
    )
    best = train_locator(cfg, out, log=typer.echo)
    typer.echo(f"best locator: {best}")


def _start_from(checkpoint: Path | None, fresh: str | None) -> DiscModels:
    """The checkpoint's second stage with the ``fresh`` net new (at today's crop spec), or
    as stored (``fresh`` None: fine-tuning)."""
    from dataclasses import replace

    from detector import SHIPPED_CHECKPOINT
    from detector import checkpoint as ckpt
    from detector.discs.model import DiscModels

    stored = ckpt.load(checkpoint or SHIPPED_CHECKPOINT).get("discs")
    if stored is None:
        _fail(f"--only: {checkpoint or SHIPPED_CHECKPOINT} holds no second stage to keep the other net from")
    kept, new = DiscModels.from_payload(stored), DiscModels.new()
    if fresh is None:
        return kept
    if fresh == "level":
        return replace(kept, level=new.level, level_crop=new.level_crop)
    return replace(kept, herniation=new.herniation, herniation_crop=new.herniation_crop)


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
    """Fit the calibration of the herniation call (Platt scaling of the per-level logit) and
    choose the operating point that reaches the target sensitivity, on labelled studies that
    are not the test set; store both (and what data they came from) in the checkpoint that
    `meddet serve`, `worker` and `predict` then use by default. The fit is made under today's
    analysis rules (how chains are named, which detections a call reads), which the checkpoint
    stores with it."""
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
            _fail("--fusion: only with --locator (it says how the locator's view combines with the level net's)")
        if fusion not in FUSIONS:
            _fail(f"--fusion: expected one of {', '.join(FUSIONS)}, got {fusion!r}")
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
        _fail(f"checkpoint: {exc}")
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
        _fail("calibration: no level could be named on this data")
    try:
        cal = calibrate(logits, labels, target_sensitivity, described)
    except ValueError as exc:
        _fail(f"calibration: {exc}")
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
        _fail(f"{root}: no {' or '.join(BOX_FILES)} found")
    for box_file in files:
        spec = json.loads(box_file.read_text())
        if "herniated_levels" not in spec:
            _fail(f"{box_file}: no 'herniated_levels' list: calibration needs per-level truth")
        unknown = set(spec["herniated_levels"]) - set(LEVELS)
        if unknown:
            _fail(f"{box_file}: unknown levels {sorted(unknown)} (expected names from {list(LEVELS)})")
        try:
            series = read_series(box_file.parent, spec.get("series_instance_uid"))
            spacing = series.pixel_spacing
        except SeriesError as exc:
            _fail(f"{box_file.parent}: {exc}")
        truth = {lv: lv in spec["herniated_levels"] for lv in LEVELS}
        yield np.stack(series.images), spacing, truth


def _fail(message: str) -> NoReturn:
    typer.secho(f"Error: {message}", fg="red", err=True)
    raise typer.Exit(2)
