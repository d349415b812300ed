"""Second-stage training commands: train-discs, train-locator (torch imported lazily inside
each command); ``meddet calibrate`` is in ``calibrate.py``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from dicom_node.cli import app, fail

if TYPE_CHECKING:
    import numpy as np

    from detector.discs.model import DiscModels
    from detector.discs.samples import Detect


#: ``--other-generator``, as train-discs and train-locator take it.
OtherGenerator = Annotated[
    float,
    typer.Option(
        "--other-generator",
        min=0.0,
        max=1.0,
        help="Share of training patients drawn by the second training generator (detector.altgen: "
        "another anatomy and renderer; train-locator validates on the same share); never the held-out one",
    ),
]


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
    other_generator: OtherGenerator = 0.0,
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
    consistency: Annotated[
        float,
        typer.Option(
            "--consistency",
            min=0.0,
            max=100.0,
            help="Randomise each crop twice and weigh the learning nets' disagreement between the two "
            "views (Jensen-Shannon, as AugMix) by this much; about twice the time per epoch; 0 = off",
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
    """Train the second stage: the herniation call (+ protrusion in mm) and the disc level.

    On crops from our own synthetic generator, randomised in look every epoch. Writes
    OUT/best.pt (a DiscModels payload); `meddet calibrate --discs OUT/best.pt` then puts it
    in a checkpoint."""
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
            fail(f"--only: expected 'level' or 'herniation', got {only!r}")
        init, nets = _start_from(checkpoint, None if warm else only), (only,)
    elif warm:
        fail("--warm: name the net to fine-tune with --only")
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
        consistency=consistency,
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
    other_generator: OtherGenerator = 0.0,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the training and validation draws")] = 0,
    threads: Annotated[int, typer.Option("--threads", help="torch CPU threads (0 = torch's default)")] = 0,
) -> None:
    """Train the level locator: where each disc level is, on a whole-neck window.

    The window reaches from the skull base to the thoracic spine; the locator says where each
    disc level C2-C3 .. T1-T2 is, trained on fresh synthetic patients every epoch. Writes
    OUT/locator.pt; `meddet calibrate --locator OUT/locator.pt` puts it in a checkpoint,
    where its view of each disc's level is combined with the level net's."""
    import torch

    from detector.discs.locator_train import LocatorTrainConfig, train_locator

    if threads:
        torch.set_num_threads(threads)
    cfg = LocatorTrainConfig(
        epochs=epochs,
        patients_per_epoch=patients,
        val_patients=val_patients,
        random_look=random_look,
        other_generator=other_generator,
        seed=seed,
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
        fail(f"--only: {checkpoint or SHIPPED_CHECKPOINT} holds no second stage to keep the other net from")
    kept, new = DiscModels.from_payload(stored), DiscModels.new()
    if fresh is None:
        return kept
    if fresh == "level":
        return replace(kept, level=new.level, level_crop=new.level_crop)
    return replace(kept, herniation=new.herniation, herniation_crop=new.herniation_crop)
