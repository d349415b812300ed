"""Pipeline benchmark: last instance received -> results at the destination, and throughput.

    python benchmarks/pipeline.py [--slices 20] [--rounds 3] [--series 6] [--quiet 2]
        [--no-expected-count] [--checkpoint PT] [--broker redis://...] [--json]

One process runs what ``meddet serve`` runs in embedded mode (the Node, the in-process worker
thread, SQLite) plus a pynetdicom Storage SCP as the destination; with ``--broker`` the node
relays jobs through Redis to a ``meddet worker`` subprocess instead. dcmtk ``storescu``
(``TCP_NODELAY=1``) sends a ``--slices`` series; we time from storescu's exit (the last
instance is on disk) to the last result object arriving at the SCP, and subtract the time the
node spent waiting for completion (the quiet period, or nothing when ImagesInAcquisition says
the series is complete). Median of ``--rounds`` after one warm-up series (the model loads once).

Printed against a baseline measured in the same run: ``Detector.predict`` alone on the same
slices. Also the detector's share of the job's run time (from the audit trail), and worker
throughput: ``--series`` series sent back to back, series per minute from the first job running
to the last job done (and, end to end, from the first send). Target (DESIGN.md section 6): under 10 s on this CPU for 20 slices.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
STORESCU = "/usr/bin/storescu"  # /usr/bin: a pip package shadows storescu on PATH


def make_series(n_slices: int, seed: int, folder: Path, expected_count: bool = True) -> list[Path]:
    """A synthetic sagittal cervical T2 series (``meddet synth``'s phantom, 256x256) as files.

    ``expected_count=False`` drops ImagesInAcquisition, so only the quiet period completes it.
    """
    from pydicom import dcmread

    from dicom_node.synth import write_studies

    (study,) = write_studies(folder, 1, seed, n_slices=n_slices, size=256)
    files = sorted(study.dicom_dir.glob("*.dcm"))
    if not expected_count:
        for path in files:
            ds = dcmread(path)
            del ds.ImagesInAcquisition
            ds.save_as(path)
    return files


class Destination:
    """A pynetdicom Storage SCP recording when each object arrives."""

    def __init__(self) -> None:
        from pynetdicom import AE, AllStoragePresentationContexts, evt

        self.arrivals: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        ae = AE(ae_title="BENCHDEST")
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax)

        def on_store(event):  # type: ignore[no-untyped-def]
            with self._lock:
                self.arrivals.append((time.perf_counter(), str(event.request.AffectedSOPInstanceUID)))
            return 0x0000

        self.server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
        self.port = int(self.server.server_address[1])

    def wait(self, count: int, timeout: float = 300.0) -> float:
        """Time of the ``count``-th arrival."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.arrivals) >= count:
                    return self.arrivals[count - 1][0]
            time.sleep(0.005)
        raise TimeoutError(f"only {len(self.arrivals)} of {count} result objects arrived")


def send(files: list[Path], port: int) -> None:
    subprocess.run(
        [STORESCU, "-aec", "MEDDET", "127.0.0.1", str(port), *map(str, files)],
        env={**os.environ, "TCP_NODELAY": "1"},
        check=True,
        capture_output=True,
    )


def job_timing(sessions, series_uid: str) -> dict:  # type: ignore[no-untyped-def]
    """From the audit trail: completion wait, detector seconds, job run seconds."""
    from sqlalchemy import select

    from dicom_node.audit.models import Job, JobEvent, Series

    with sessions() as session:
        series = session.scalars(select(Series).where(Series.series_instance_uid == series_uid)).one()
        job = session.scalars(select(Job).where(Job.series_id == series.id)).one()
        events = session.scalars(select(JobEvent).where(JobEvent.job_id == job.id)).all()
        detect = sum(json.loads(e.detail)["seconds"] for e in events if e.state == "step:detect")
        done = next(e for e in events if e.state == "done")
        running = next(e for e in events if e.state == "running")
        wait = (series.completed_at - series.last_received_at).total_seconds()
        return {
            "job_id": job.id,
            "state": job.state.value,
            "detect_s": detect,
            "run_s": json.loads(done.detail)["seconds"],
            "completion_wait_s": max(0.0, wait),
            "running_at": running.at,
            "done_at": done.at,
            "steps": {e.state[5:]: json.loads(e.detail)["seconds"] for e in events if e.state.startswith("step:")},
            "completion": series.completion_reason,
        }


def start_worker(settings, log: Path, threads: int) -> subprocess.Popen:  # type: ignore[no-untyped-def]
    """``meddet worker`` (distributed mode) on the same DB, spool and destination."""
    env = {
        **os.environ,
        "MEDDET_DATA_DIR": str(settings.data_dir),
        "MEDDET_BROKER_URL": settings.broker_url,
        "MEDDET_DESTINATIONS": ",".join(map(str, settings.destinations)),
        "MEDDET_DEVICE": settings.device,
        "OMP_NUM_THREADS": str(threads),
        "MEDDET_LOG_LEVEL": "INFO",  # the worker says "ready" at INFO
    }
    if settings.checkpoint is not None:
        env["MEDDET_CHECKPOINT"] = str(settings.checkpoint)
    proc = subprocess.Popen(
        [sys.executable, "-m", "dicom_node.cli", "worker"], env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 120
    while "ready" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"meddet worker did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.2)
    return proc


class DetectorBaseline:
    """``Detector.predict`` alone on decoded slices: the baseline, measured beside each round."""

    def __init__(self, settings) -> None:  # type: ignore[no-untyped-def]
        from detector.inference import Detector

        self.detector = Detector.from_checkpoint(settings.checkpoint, device=settings.device)

    def seconds(self, files: list[Path]) -> float:
        from dicom_node.pixels import read_series

        images = read_series(files).images
        start = time.perf_counter()
        self.detector.predict(images)
        return time.perf_counter() - start


def run(args: argparse.Namespace) -> dict:
    import torch

    import detector
    from dicom_node.audit.db import make_engine, make_session_factory
    from dicom_node.config import Settings
    from dicom_node.jobs import enqueue_series
    from dicom_node.logging import configure_logging
    from dicom_node.metrics import Metrics
    from dicom_node.node import Node
    from migrations import upgrade
    from worker.dispatch import make_dispatcher

    configure_logging("WARNING")
    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="meddet-bench-pipeline-"))
    dest = Destination()
    settings = Settings(
        data_dir=tmp / "data",
        port=0,
        quiet_period=args.quiet,
        device="cpu",
        destinations=f"BENCHDEST@127.0.0.1:{dest.port}",
        checkpoint=args.checkpoint,
        broker_url=args.broker,
    )
    upgrade(settings.effective_database_url)
    sessions = make_session_factory(make_engine(settings.effective_database_url))
    metrics = Metrics()
    version = detector.model_version(settings.checkpoint)
    dispatcher = make_dispatcher(settings, sessions, metrics, poll_interval=0.5)
    node = Node(
        settings,
        sessions,
        on_selected=lambda session, series: enqueue_series(session, series, version),
        after_commit=lambda completed: dispatcher.notify(),
    )
    worker = start_worker(settings, tmp / "worker.log", args.threads) if args.broker else None
    dispatcher.start()
    node.start()
    try:
        from pydicom import dcmread

        def one_series(seed: int) -> dict:
            return timed_loop(make_series(args.slices, seed, tmp / f"series-{seed}", args.expected))

        def timed_loop(files: list[Path]) -> dict:
            uid = str(dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
            before = len(dest.arrivals)
            send(files, node.port)
            last_received = time.perf_counter()
            while True:  # the number of objects a job sends is in its manifest once written
                timing = job_timing_or_none(sessions, uid)
                if timing and timing["state"] in ("done", "failed", "quarantined"):
                    break
                time.sleep(0.05)
            if timing["state"] != "done":
                raise RuntimeError(f"job ended {timing['state']}")
            manifest = json.loads((settings.results_dir / str(timing["job_id"]) / "objects.json").read_text())
            arrived = dest.wait(before + len(manifest) * len(settings.destinations))
            total = arrived - last_received
            return {**timing, "files": files, "total_s": total, "latency_s": total - timing["completion_wait_s"]}

        baseline = DetectorBaseline(settings)
        warm = one_series(0)  # warm-up: model load, first imports
        baseline.seconds(warm["files"])
        rounds = []
        for seed in range(1, args.rounds + 1):  # interleaved: baseline, then the loop, same slices
            files = make_series(args.slices, seed, tmp / f"series-{seed}", args.expected)
            alone = baseline.seconds(files)
            rounds.append({**timed_loop(files), "detector_only_s": alone})
        latency = statistics.median(r["latency_s"] for r in rounds)
        alone = statistics.median(r["detector_only_s"] for r in rounds)
        share = statistics.median(r["detect_s"] / r["run_s"] for r in rounds)
        overhead = statistics.median(r["latency_s"] - r["detect_s"] for r in rounds)
        steps = {name: round(statistics.median(r["steps"][name] for r in rounds), 3) for name in rounds[0]["steps"]}

        start = time.perf_counter()
        batch = [make_series(args.slices, 100 + i, tmp / f"batch-{i}") for i in range(args.series)]
        prepared = time.perf_counter() - start
        t0 = time.perf_counter()
        for files in batch:
            send(files, node.port)
        uids = [str(dcmread(f[0], stop_before_pixels=True).SeriesInstanceUID) for f in batch]
        while not all((t := job_timing_or_none(sessions, u)) and t["state"] == "done" for u in uids):
            time.sleep(0.05)
        elapsed = time.perf_counter() - t0
        timings = [job_timing(sessions, u) for u in uids]
        busy = max(t["done_at"] for t in timings) - min(t["running_at"] for t in timings)
    finally:
        node.stop()
        dispatcher.stop(timeout=60)
        if worker is not None:
            worker.send_signal(signal.SIGTERM)
            worker.wait(60)
        dest.server.shutdown()
    return {
        "slices": args.slices,
        "quiet_period_s": args.quiet,
        "completion": rounds[0]["completion"],
        "latency_s": round(latency, 3),
        "total_s_incl_completion_wait": round(statistics.median(r["total_s"] for r in rounds), 3),
        "detector_only_s": round(alone, 3),
        "latency_over_detector_only": round(latency / alone, 2),
        "latency_minus_detector_s": round(overhead, 3),
        "rounds": [{k: round(v, 3) for k, v in r.items() if k.endswith("_s")} for r in rounds],
        "detector_share_of_job": round(share, 3),
        "step_seconds": steps,
        "target_s": 10.0,
        "meets_target": latency < 10.0,
        "throughput_series_per_min": round(args.series / busy.total_seconds() * 60, 2),
        "end_to_end_series_per_min": round(args.series / elapsed * 60, 2),
        "throughput_series": args.series,
        "mode": "distributed (Redis + meddet worker)" if args.broker else "embedded",
        "series_prepared_s": round(prepared, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def job_timing_or_none(sessions, uid: str) -> dict | None:  # type: ignore[no-untyped-def]
    from sqlalchemy.exc import NoResultFound

    try:
        return job_timing(sessions, uid)
    except (NoResultFound, StopIteration, TypeError):
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slices", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--series", type=int, default=6, help="series for the throughput run")
    parser.add_argument("--quiet", type=float, default=2.0, help="quiet period, seconds")
    parser.add_argument(
        "--no-expected-count",
        dest="expected",
        action="store_false",
        help="drop ImagesInAcquisition: series complete by the quiet period",
    )
    parser.add_argument("--broker", default=None, help="Redis URL: distributed mode with a `meddet worker` subprocess")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: shipped")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"pipeline benchmark, {result['mode']} ({result['slices']} slices, completion by {result['completion']}, "
        f"started {datetime.now(UTC):%Y-%m-%d %H:%M} UTC)"
    )
    print(
        f"  last instance -> results at destination: {result['latency_s']:.2f} s "
        f"(minus completion wait; with it {result['total_s_incl_completion_wait']:.2f} s), "
        f"target < {result['target_s']:.0f} s: {'yes' if result['meets_target'] else 'NO'}"
    )
    print(
        f"  detector alone on the same slices: {result['detector_only_s']:.2f} s; "
        f"end-to-end / detector-only = {result['latency_over_detector_only']:.2f}x"
    )
    print(
        f"  detector share of the job's run time: {result['detector_share_of_job']:.0%}; "
        f"everything else (decode, levels, objects, write, send, hand-offs): "
        f"{result['latency_minus_detector_s']:.2f} s"
    )
    print("  steps (median s): " + ", ".join(f"{k} {v:.2f}" for k, v in result["step_seconds"].items()))
    print(
        f"  worker throughput (1 worker): {result['throughput_series_per_min']:.1f} "
        f"series/min over {result['throughput_series']} series (first job running -> last done); "
        f"first send -> last done: {result['end_to_end_series_per_min']:.1f} series/min"
    )
    what = "node + embedded worker" if result["mode"] == "embedded" else "node (worker not counted)"
    print(
        f"  peak RSS of this process, {what}: {result['peak_rss_mb']:.0f} MB (targets: worker < 2048 MB, node < 300 MB)"
    )


if __name__ == "__main__":
    main()
