"""The embedded node (``meddet serve``, SQLite, in-process worker): the soak with SIGTERM and
SIGKILL restarts, then the fuzz, then a full disk, all against the same node."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from benchmarks.faultsuite import fuzz
from benchmarks.faultsuite.context import Context, count_row, flatten, running_job, wait_settled
from benchmarks.faultsuite.nodes import ServeProcess, suite_env
from benchmarks.faultsuite.report import Row
from benchmarks.faultsuite.senders import Ledger, Traffic, make_sender
from benchmarks.faultsuite.services import SmallDisk
from dicom_node.loopback import wait_for

LEASE_SECONDS = "6"  # a killed node's running job is swept back into the queue soon after


def _node(ctx: Context, data_dir: Path, database_url: str, full_disk: bool) -> ServeProcess:
    env = suite_env(
        ctx.destination.destination, ctx.checkpoint, data_dir, database_url, MEDDET_JOB_LEASE_SECONDS=LEASE_SECONDS
    )
    if full_disk:  # no watermark: the write itself must meet the full disk (ENOSPC)
        env["MEDDET_DISK_WATERMARK"] = "100"
    return ServeProcess("node", env, ctx.logs, ctx.rss, json_first=False)


def run(ctx: Context) -> list[Row]:
    """Soak, fuzz and full disk on one embedded node; their rows."""
    disk = SmallDisk(ctx.workdir / "small-disk", megabytes=64 + ctx.sizes.senders * ctx.sizes.series // 2)
    reason = disk.unavailable()
    if reason is None:
        try:
            disk.mount()
        except OSError as exc:
            reason = str(exc)
    if reason is not None:
        ctx.skip(f"full disk: {reason}")
    data_dir = (disk.path if disk.mounted else ctx.workdir) / "embedded-data"
    database_url = f"sqlite:///{ctx.workdir / 'embedded-audit.db'}"  # off the small disk
    node = _node(ctx, data_dir, database_url, disk.mounted).start()
    try:
        rows = [soak(ctx, node, database_url)]
        rows.append(fuzz.run(ctx, node, database_url, data_dir))
        if disk.mounted:
            rows.append(full_disk(ctx, node, database_url, disk, data_dir))
        ctx.rss.sample()
        for row in rows:
            row.node_rss_mib = ctx.rss.mib("node")
        return rows
    finally:
        node.stop()
        disk.unmount()


def soak(ctx: Context, node: ServeProcess, database_url: str) -> Row:
    """N senders x M series; the node stopped (SIGTERM) at a third, killed (SIGKILL, mid-job
    when a job runs) at two thirds, restarted each time; every acknowledged instance analysed."""
    sizes = ctx.sizes
    ctx.phase(f"soak: {sizes.senders} senders x {sizes.series} series x {sizes.slices} slices")
    plan = ctx.generator.for_senders("soak", sizes.senders, sizes.series)
    ledger = Ledger()
    traffic = Traffic(plan, node.port, ledger, sizes.timeout, sizes.pace)
    third, two_thirds = threading.Event(), threading.Event()

    def progress(acked: int) -> None:
        if acked * 3 >= traffic.total:
            third.set()
        if acked * 3 >= 2 * traffic.total:
            two_thirds.set()

    ledger.watch(progress)
    started = time.monotonic()
    traffic.start()

    third.wait(sizes.timeout)
    at = len(ledger.acked)
    t0 = time.monotonic()
    node.stop()
    node.start()
    ctx.note(
        f"soak: node stopped with SIGTERM at {at}/{traffic.total} acknowledged, "
        f"listening again after {time.monotonic() - t0:.1f} s"
    )

    two_thirds.wait(sizes.timeout)
    try:
        job = wait_for(lambda: running_job(database_url), 3, "a running job", interval=0.05)
    except TimeoutError:
        job = None
    at = len(ledger.acked)
    t0 = time.monotonic()
    node.kill()
    node.start()
    ctx.note(
        f"soak: node killed with SIGKILL at {at}/{traffic.total} acknowledged"
        + (f", job {job} running" if job else ", no job running")
        + f"; listening again after {time.monotonic() - t0:.1f} s"
    )

    missed = traffic.join()
    if missed:
        ctx.problem(f"soak: {len(missed)} series not fully acknowledged by the deadline")
    waited = wait_settled(ctx, database_url, flatten(plan), "soak jobs")
    ctx.note(
        f"soak: traffic and analysis took {time.monotonic() - started:.0f} s "
        f"(last job finished {waited:.0f} s after the last send); "
        f"{ledger.associations} association attempts, {ledger.failed_associations} refused or failed (node down)"
    )
    return count_row("soak", ctx, database_url, flatten(plan), ledger)


def full_disk(ctx: Context, node: ServeProcess, database_url: str, disk: SmallDisk, data_dir: Path) -> Row:
    """The spool's disk full (less than one instance free, no watermark): nothing may be
    acknowledged that is not on disk; no partial file stays; once there is room, all is sent."""
    ctx.phase("full disk")
    plan = ctx.generator.for_senders("disk", 2, 1)
    ledger = Ledger()
    disk.fill(leave=12 * 1024)
    senders = [make_sender(i, 2, node.port, ledger) for i in range(2)]
    for sender, (series,) in zip(senders, plan):
        ledger.attempt(series.sop_uids)
        sender.send_once(series, series.files)
    acked_full, refusals = len(ledger.acked), dict(ledger.refusals)
    partial = [p.name for p in (data_dir / "tmp").glob("*.part")]
    echo = fuzz.echo(node.port)
    ctx.note(
        f"full disk: {acked_full} acknowledged and {sum(refusals.values())} refused {refusals} "
        f"with {disk.free_bytes() // 1024} KiB free; partial files left: {len(partial)}; "
        f"C-ECHO {'answered' if echo else 'FAILED'}"
    )
    disk.free()
    missed = Traffic(plan, node.port, ledger, ctx.sizes.timeout).start().join()
    if missed:
        ctx.problem(f"full disk: {len(missed)} series not acknowledged after the disk was freed")
    wait_settled(ctx, database_url, flatten(plan), "full-disk jobs")
    if partial or not echo:
        ctx.problem(f"full disk: {len(partial)} partial files left, C-ECHO answered: {echo}")
    return count_row("full disk", ctx, database_url, flatten(plan), ledger)
