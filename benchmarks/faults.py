"""The fault suite (issue 12): a bounded soak with restarts and kills, outages, a full disk and
a fuzz, against real ``meddet serve`` / ``meddet worker`` subprocesses over loopback.

    python benchmarks/faults.py [--senders 8] [--series 30] [--slices 5] [--size 128]
        [--fuzz-examples 100] [--small] [--only soak,distributed] [--json OUT] [--keep DIR]

Phases (docs/reliability.md says what each checks):
- embedded node (SQLite, in-process worker): the soak, N senders (pynetdicom, and dcmtk
  storescu for every fourth) x M series, the node stopped with SIGTERM at a third and killed
  with SIGKILL at two thirds (mid-job when one runs); then the hypothesis fuzz of PDUs and
  headers; then the spool's disk full (a small tmpfs; skipped, with the reason, when it
  cannot be mounted);
- distributed (private Redis, private PostgreSQL cluster, ``meddet worker``): the worker's pool
  process SIGKILLed mid-job, Redis stopped while series arrive, PostgreSQL stopped while
  series arrive.

Prints one row per phase: instances sent / acknowledged / recorded / analysed / lost, jobs
stuck and failed, duplicates at the destination, peak RSS of node and worker; and the log
lines holding any patient name or ID the generator used (console and JSON logs). Exits 1 when
anything was lost or stuck, a duplicate arrived, a log shows patient data, or a check failed.
``--small`` is the CI size (tests/integration/test_fault_suite.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")
# hypothesis keeps a cache in the working directory unless told otherwise
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", str(Path(tempfile.gettempdir()) / "meddet-faults-hypothesis"))

from benchmarks.faultsuite import distributed, embedded  # noqa: E402
from benchmarks.faultsuite.context import Context, Sizes  # noqa: E402
from benchmarks.faultsuite.generator import FAMILY, Generator  # noqa: E402
from benchmarks.faultsuite.report import Row, phi_lines, table, total_row  # noqa: E402
from benchmarks.faultsuite.services import PeakRSS  # noqa: E402
from dicom_node.loopback import TestPACS  # noqa: E402
from tests.worker.support import checkpoint_for_tests  # noqa: E402

PHASES = ("soak", "distributed")


def run_suite(sizes: Sizes, workdir: Path, phases: tuple[str, ...] = PHASES) -> dict[str, Any]:
    """Run the phases; the figures as a dict (``rows``, ``table``, ``phi``, ``notes``,
    ``skipped``, ``problems``). The embedded and the distributed phases share nothing but the
    destination SCP, so they run at the same time."""
    started = time.monotonic()
    generator = Generator(workdir / "series", slices=sizes.slices, size=sizes.size)
    destination = TestPACS(ae_title="FAULTDEST").start()
    rss = PeakRSS().start()
    ctx = Context(sizes, workdir, generator, destination, checkpoint_for_tests(workdir), rss)
    rows: list[Row] = []
    dist_rows: list[Row] = []
    errors: list[BaseException] = []

    def run_distributed() -> None:
        try:
            dist_rows.append(distributed.run(ctx))
        except BaseException as exc:  # noqa: BLE001 - re-raised on the main thread
            errors.append(exc)

    thread = threading.Thread(target=run_distributed, name="distributed")
    try:
        if "distributed" in phases:
            thread.start()
        if "soak" in phases:
            rows.extend(embedded.run(ctx))
    finally:
        if thread.ident is not None:  # started
            thread.join()
        rss.stop()
        destination.stop()
    if errors:
        raise errors[0]
    rows.extend(dist_rows)
    rows.append(total_row(rows))
    phi = phi_lines(sorted(ctx.logs.glob("*.log")), generator.phi_tokens)
    total = rows[-1]
    if total.lost or total.stuck or total.duplicates or phi["json"] or phi["console"]:
        ctx.problem("lost, stuck, duplicated, or patient data in a log (see the table)")
    return {
        "sizes": sizes.__dict__,
        "seconds": round(time.monotonic() - started, 1),
        "rows": [r.as_dict() for r in rows],
        "table": table(rows, phi),
        "phi": phi,
        "patients": len(generator.names),
        "phi_markers": [FAMILY, f"QXF{generator.token}"],
        "notes": ctx.notes,
        "skipped": ctx.skipped,
        "problems": ctx.problems,
        "logs": sorted(p.name for p in ctx.logs.glob("*.log")),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="the CI size (2 senders, few series)")
    parser.add_argument("--senders", type=int)
    parser.add_argument("--series", type=int, help="series per sender in the soak")
    parser.add_argument("--slices", type=int)
    parser.add_argument("--size", type=int, help="matrix size of the synthetic slices")
    parser.add_argument("--fuzz-examples", type=int)
    parser.add_argument("--only", default=",".join(PHASES), help=f"comma-separated, of {PHASES}")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--keep", type=Path, help="work (and log) folder to keep; default: a temp one")
    args = parser.parse_args(argv)

    sizes = Sizes.small() if args.small else Sizes()
    given = {
        k: v
        for k, v in {
            "senders": args.senders,
            "series": args.series,
            "slices": args.slices,
            "size": args.size,
            "fuzz_examples": args.fuzz_examples,
        }.items()
        if v is not None
    }
    sizes = replace(sizes, **given)
    phases = tuple(p for p in args.only.split(",") if p)
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="meddet-faults-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        result = run_suite(sizes, workdir, phases)
    finally:
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(result["table"])
    for title, key in (("faults and checks", "notes"), ("skipped", "skipped"), ("PROBLEMS", "problems")):
        if result[key]:
            print(f"\n{title}:")
            print("\n".join(f"- {line}" for line in result[key]))
    for kind in ("console", "json"):
        for line in result["phi"][kind][:20]:
            print(f"PHI ({kind}): {line}")
    print(f"\n{result['seconds']:.0f} s in all")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str))
    return 1 if result["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
