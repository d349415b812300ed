"""What the event-driven reactors alone are worth: pynetdicom stock vs dicom_node.reactor.

    python benchmarks/reactor.py [--instances 500] [--rounds 5] [--json]

Same instances and sender as benchmarks/ingest.py (dcmtk storescu, TCP_NODELAY=1), interleaved
rounds, medians. Three receivers, each writing every instance to a file like storescp does
(no fsync, no audit DB): dcmtk storescp; a pynetdicom AE whose C-STORE handler writes
``event.encoded_dataset()`` (the best documented handler) with stock reactors; the same AE
and handler with the event-driven reactors of dicom_node/reactor.py.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.receive_harness import make_instances, send, serving, storescp_round  # noqa: E402


def serve(out: Path, event_driven: bool) -> None:
    """A minimal pynetdicom Storage SCP (subprocess): prints its port, serves until stdin closes."""
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import MRImageStorage

    from dicom_node.reactor import start_server

    def on_store(event: evt.Event) -> int:
        (out / f"{event.request.AffectedSOPInstanceUID}.dcm").write_bytes(event.encoded_dataset())
        return 0x0000

    ae = AE(ae_title="PYNETDICOM")
    ae.maximum_pdu_size = 0
    ae.add_supported_context(MRImageStorage)
    server = start_server(ae, ("127.0.0.1", 0), [(evt.EVT_C_STORE, on_store)], event_driven=event_driven)
    print(server.server_address[1], flush=True)
    sys.stdin.read()
    ae.shutdown()


def pynetdicom_round(files: list[Path], event_driven: bool) -> float:
    with tempfile.TemporaryDirectory(prefix="bench-pynetdicom-") as out:
        flag = [] if event_driven else ["--stock"]
        with serving([sys.executable, __file__, "--serve", out, *flag]) as (_, port, lines):
            sent = send(port, files, "PYNETDICOM")
            lines()
        if len(list(Path(out).iterdir())) != len(files):
            raise RuntimeError("pynetdicom SCP did not store every instance")
    return len(files) / sent.seconds


def run(instances: int, rounds: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-reactor-") as folder:
        files = make_instances(instances, 20, Path(folder))
        dcmtk, stock, fast = [], [], []
        for _ in range(rounds):
            dcmtk.append(storescp_round(files).rate)
            stock.append(pynetdicom_round(files, event_driven=False))
            fast.append(pynetdicom_round(files, event_driven=True))
    base = statistics.median(dcmtk)
    return {
        "instances": instances,
        "rounds": rounds,
        "storescp_inst_per_s": round(base, 1),
        "stock_inst_per_s": round(statistics.median(stock), 1),
        "event_driven_inst_per_s": round(statistics.median(fast), 1),
        "stock_ratio": round(statistics.median(stock) / base, 3),
        "event_driven_ratio": round(statistics.median(fast) / base, 3),
        "rounds_storescp": [round(r, 1) for r in dcmtk],
        "rounds_stock": [round(r, 1) for r in stock],
        "rounds_event_driven": [round(r, 1) for r in fast],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--stock", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve is not None:
        serve(args.serve, event_driven=not args.stock)
        return
    result = run(args.instances, args.rounds)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{args.instances} MR instances 256x256, {args.rounds} interleaved rounds (medians), no fsync anywhere")
    print(f"  dcmtk storescp                : {result['storescp_inst_per_s']:8.1f} instances/s")
    print(
        f"  pynetdicom, stock reactors    : {result['stock_inst_per_s']:8.1f} instances/s  ratio {result['stock_ratio']:.3f}"
    )
    print(
        f"  pynetdicom, event-driven      : {result['event_driven_inst_per_s']:8.1f} instances/s  ratio {result['event_driven_ratio']:.3f}"
    )


if __name__ == "__main__":
    main()
