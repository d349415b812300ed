"""The worker's fork guard: no pool process is forked while its lease sweeper holds the DB."""

from __future__ import annotations

import os
import threading
import time

from dicom_node.config import Settings
from dicom_node.outbox import make_sweeper
from worker.app import fork_guard


def _fork_and_wait() -> float:
    """Seconds this process took to fork a child (that exits at once) and reap it."""
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    waited = time.monotonic() - start
    os.waitpid(pid, 0)
    return waited


def test_a_fork_waits_while_the_guard_is_held_and_not_otherwise() -> None:
    guard = fork_guard()
    held = threading.Event()

    def sweep_pass() -> None:
        with guard:
            held.set()
            time.sleep(0.6)

    worker = threading.Thread(target=sweep_pass)
    worker.start()
    held.wait(5)
    assert _fork_and_wait() >= 0.4  # the fork waited for the pass to end
    worker.join()
    assert _fork_and_wait() < 0.4  # and a fork between passes does not wait
    assert guard.acquire(timeout=1)  # released in the parent after each fork
    guard.release()


def test_the_sweeper_holds_its_guard_around_every_pass(tmp_path, session_factory) -> None:
    passes: list[str] = []

    class Recording:
        def __enter__(self) -> None:
            passes.append("enter")

        def __exit__(self, *exc: object) -> None:
            passes.append("exit")

    settings = Settings(data_dir=tmp_path, job_lease_seconds=0.2)
    sweeper = make_sweeper(settings, session_factory, lambda: None, guard=Recording()).start()
    time.sleep(0.5)
    sweeper.stop()
    assert len(passes) >= 4 and passes == ["enter", "exit"] * (len(passes) // 2)
