"""How received instances become audit rows: one at a time (recovery, and the recorder's
event-by-event retry) or a batch at a time (the recorder's normal path, a few SQL statements
per batch instead of several per instance).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import cast

from sqlalchemy import Table, insert, select
from sqlalchemy.orm import Session

from dicom_node.audit.models import Instance, Series, SeriesState, clip
from dicom_node.headers import InstanceHeader
from dicom_node.logging import get_logger
from dicom_node.spool import StoredFile, file_sha256

log = get_logger(__name__)


def has_all_expected(series: Series) -> bool:
    expected = series.expected_instances
    return expected is not None and expected != 0 and series.n_instances >= expected


def _modality(header: InstanceHeader) -> str | None:
    """Modality as stored: DICOM's CS allows 16 characters, and so does the column."""
    modality = clip(Series.modality, header.modality)
    if modality != header.modality:
        log.warning(
            "over-long Modality cut to 16 characters", series_uid=header.series_uid, length=len(header.modality or "")
        )
    return modality


def record_instance(
    session: Session,
    header: InstanceHeader,
    stored: StoredFile,
    at: datetime,
    association_id: int | None,
) -> Series | None:
    """Insert the instance and update (or reopen) its series. Duplicates change nothing.

    ``n_instances`` counts distinct SOP Instance UIDs: revision 0 is the first of each.
    Returns the series when the instance was new.
    """
    touched = record_instances(session, [(header, stored, at, association_id)])
    return next(iter(touched), None)


#: (header, stored file, received at, association DB id) of one InstanceStored event.
Stored = tuple[InstanceHeader, StoredFile, datetime, "int | None"]


def record_instances(session: Session, stored: Sequence[Stored]) -> set[Series]:
    """:func:`record_instance` for a batch, with the same result: one SELECT of the touched
    series, one bulk INSERT of the instances, one UPDATE per series (at commit)."""
    uids = {header.series_uid for header, *_ in stored}
    series_by_uid = {
        s.series_instance_uid: s for s in session.scalars(select(Series).where(Series.series_instance_uid.in_(uids)))
    }
    created = False
    for header, file, at, _ in stored:
        if header.series_uid not in series_by_uid:
            series_by_uid[header.series_uid] = _new_series(header, file, at)
            session.add(series_by_uid[header.series_uid])
            created = True
    if created:
        session.flush()
    rows, touched = [], set()
    for header, file, at, association_id in stored:
        series = series_by_uid[header.series_uid]
        if file.duplicate:
            log.info("duplicate instance ignored", sop_uid=header.sop_uid, series_uid=header.series_uid)
            continue
        rows.append(_instance_row(series.id, header, file, at, association_id))
        _count(series, header, file, at)
        touched.add(series)
    if rows:  # Core executemany: the ORM's bulk path costs more than the INSERT itself
        # cast: SQLAlchemy types a mapped class's __table__ as FromClause; a declarative one is a Table
        session.execute(insert(cast(Table, Instance.__table__)), rows)
    return touched


def _new_series(header: InstanceHeader, stored: StoredFile, at: datetime) -> Series:
    return Series(
        series_instance_uid=header.series_uid,
        study_instance_uid=header.study_uid,
        modality=_modality(header),
        spool_path=str(stored.path.parent),
        n_instances=0,
        first_received_at=at,
        last_received_at=at,
        expected_instances=header.expected_in_series,
    )


def _instance_row(
    series_id: int, header: InstanceHeader, stored: StoredFile, at: datetime, association_id: int | None
) -> dict[str, object]:
    return {
        "series_id": series_id,
        "association_id": association_id,
        "sop_instance_uid": header.sop_uid,
        "revision": stored.revision,
        "sop_class_uid": header.sop_class_uid,
        "transfer_syntax_uid": header.transfer_syntax_uid,
        "size_bytes": stored.size,
        # the recorder fills it in before its transaction; read here only for direct callers
        "sha256": stored.sha256 if stored.sha256 is not None else file_sha256(stored.path),
        "spool_path": str(stored.path),
        "received_at": at,
    }


def _count(series: Series, header: InstanceHeader, stored: StoredFile, at: datetime) -> None:
    """A new (not duplicate) instance's effect on its series: counts, times, reopening."""
    if stored.revision > 0:
        log.warning(
            "instance re-sent with different bytes; kept as a revision",
            sop_uid=header.sop_uid,
            revision=stored.revision,
        )
    if stored.revision == 0:
        series.n_instances += 1
    series.last_received_at = max(series.last_received_at, at)
    if header.expected_in_series and not series.expected_instances:
        series.expected_instances = header.expected_in_series
    if series.state != SeriesState.receiving:
        log.info("late instance reopens series", series_uid=header.series_uid, was=series.state.value)
        series.state = SeriesState.receiving
        series.completed_at = None
