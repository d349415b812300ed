"""Series assembly: decide when a series is complete, then select it or record why not.

A series is complete after ``quiet_period`` seconds without a new instance, or as soon as the
expected number of instances (ImagesInAcquisition, or one multi-frame instance) has arrived.
All state is in the audit DB, so a restarted node picks up where it stopped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from pydicom import dcmread
from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from dicom_node.audit.db import transaction
from dicom_node.audit.models import Instance, Series, SeriesState
from dicom_node.logging import get_logger
from dicom_node.selection import Decision, Rule, evaluate, series_fields

log = get_logger(__name__)

#: While assembly passes keep failing, a one-line reminder at most this often (seconds).
FAILING_REMINDER_S = 60.0

OnSelected = Callable[[Session, Series], None]


def due_series(session: Session, now: datetime, quiet_period: float) -> list[Series]:
    """Series still receiving whose quiet period has passed or whose expected count is in."""
    cutoff = now - timedelta(seconds=quiet_period)
    query = select(Series).where(
        Series.state == SeriesState.receiving,
        or_(
            Series.last_received_at <= cutoff,
            Series.n_instances >= Series.expected_instances,
        ),
    )
    return list(session.scalars(query))


def decide(session: Session, series: Series, rules: list[Rule]) -> Decision:
    """Evaluate the selection rules on the series' first instance header and its size."""
    first = session.scalar(select(Instance).where(Instance.series_id == series.id).order_by(Instance.id).limit(1))
    if first is None:
        return Decision(False, "no_instances", "the series has no stored instance")
    try:  # values are decoded when read: a bad one (an unknown VR) fails in series_fields
        ds = dcmread(first.spool_path, stop_before_pixels=True)
        fields = series_fields(ds, n_instances=series.n_instances)
    except Exception as exc:  # noqa: BLE001 - recorded as the reason the series is skipped
        return Decision(False, "unreadable_header", f"{type(exc).__name__}: {exc}")
    return evaluate(rules, fields)


class SeriesAssembler:
    """Completes series on a background thread; ``wake()`` makes it look immediately."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        rules: list[Rule],
        quiet_period: float,
        on_selected: OnSelected,
        after_commit: Callable[[list[Series]], None] = lambda completed: None,
        poll_interval: float = 0.5,
    ) -> None:
        self._factory = session_factory
        self._rules = rules
        self._quiet_period = quiet_period
        self._on_selected = on_selected
        self._after_commit = after_commit
        self._poll = min(poll_interval, quiet_period / 4)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="series-assembler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self, _touched: object = None) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        failing_since: float | None = None  # while passes keep failing (e.g. the database is down)
        reminded = 0.0
        while not self._stop.is_set():
            self._wake.wait(self._poll)
            self._wake.clear()
            try:
                self.complete_due(datetime.now(UTC))
            except Exception as exc:  # keep assembling; the next pass retries what failed
                now = time.monotonic()
                if failing_since is None:  # the traceback once, then a line now and then
                    log.exception("series assembly pass failed; retrying every pass")
                    failing_since = reminded = now
                elif now - reminded >= FAILING_REMINDER_S:
                    log.warning(
                        "series assembly still failing",
                        error=type(exc).__name__,
                        failing_for_s=round(now - failing_since),
                    )
                    reminded = now
            else:
                if failing_since is not None:
                    log.info("series assembly works again", failed_for_s=round(time.monotonic() - failing_since, 1))
                    failing_since = None

    def complete_due(self, now: datetime) -> list[Series]:
        """One pass: complete, select or skip every due series (one transaction each; one that
        fails is logged and left receiving for the next pass, the others go on)."""
        with self._factory() as session:
            due = [s.id for s in due_series(session, now, self._quiet_period)]
        completed = []
        for series_id in due:
            try:
                with transaction(self._factory) as session:
                    series = session.get(Series, series_id, with_for_update=True)
                    if series is None or series.state != SeriesState.receiving:
                        continue
                    self._complete(session, series, now)
                    completed.append(series)
            except Exception:  # one series must not hold up the others; it is tried again
                log.exception("series completion failed", series_id=series_id)
        if completed:
            self._after_commit(completed)
        return completed

    def _complete(self, session: Session, series: Series, now: datetime) -> None:
        expected = series.expected_instances
        reason = "expected_count" if expected and series.n_instances >= expected else "quiet_period"
        series.completed_at = now
        series.completion_reason = reason
        decision = decide(session, series, self._rules)
        if decision.selected:
            series.state = SeriesState.selected
            series.failed_rule = None
            series.selection_detail = None
            self._on_selected(session, series)
        else:
            series.state = SeriesState.skipped
            series.failed_rule = decision.failed_rule
            series.selection_detail = decision.detail
        log.info(
            "series complete",
            series_uid=series.series_instance_uid,
            instances=series.n_instances,
            reason=reason,
            state=series.state.value,
            failed_rule=series.failed_rule,
        )
