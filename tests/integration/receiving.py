"""The receive node over real loopback associations, in this process or as ``meddet serve``:
start it, send to it, read what it recorded. Shared by the integration tests (a test PACS,
subprocesses, free ports and waits are dicom_node/loopback.py; Orthanc is
tests/integration/orthanc_netns.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pynetdicom import AE
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from dicom_node.audit.models import Association, Instance, Series, SeriesState
from dicom_node.config import Settings
from dicom_node.jobs import enqueue_series
from dicom_node.loopback import NodeProcess
from dicom_node.node import Node

MODEL = "test-model-1"


def start_node(settings: Settings, factory: sessionmaker[Session]) -> Node:
    """A node on a free loopback port (``settings.port`` 0) whose selected series get a job."""
    return Node(settings, factory, on_selected=lambda s, series: enqueue_series(s, series, MODEL)).start()


@contextmanager
def running_node(settings: Settings, factory: sessionmaker[Session], **update: Any) -> Iterator[Node]:
    """:func:`start_node` with ``settings`` changed by ``update``; stopped afterwards."""
    node = start_node(settings.model_copy(update=update) if update else settings, factory)
    try:
        yield node
    finally:
        node.stop(timeout=5)


def serve(tmp_path: Path, port: int) -> NodeProcess:
    """``meddet serve`` on ``port``, data under ``tmp_path / "data"``, log ``serve.log``, once it
    listens. No broker listens (jobs wait in the outbox) and the checkpoint is a stand-in (only
    its version is read)."""
    (tmp_path / "model.pt").write_bytes(b"stand-in checkpoint: only its version is read here")
    env = dict(
        os.environ,
        MEDDET_DATA_DIR=str(tmp_path / "data"),
        MEDDET_PORT=str(port),
        MEDDET_QUIET_PERIOD="2",
        MEDDET_BROKER_URL="redis://127.0.0.1:1/0",
        MEDDET_CHECKPOINT=str(tmp_path / "model.pt"),
    )
    node = NodeProcess(env, tmp_path / "serve.log")
    try:
        node.wait_listening(port, timeout=60)
    except BaseException:
        node.kill()
        raise
    return node


def series_state(factory: sessionmaker[Session], uid: str) -> Series | None:
    with factory() as session:
        return session.scalar(select(Series).where(Series.series_instance_uid == uid))


def completed(factory: sessionmaker[Session], uid: str) -> Series | None:
    series = series_state(factory, uid)
    return series if series and series.state != SeriesState.receiving else None


def instance_count(factory: sessionmaker[Session], uid: str) -> int:
    with factory() as session:
        return (
            session.scalar(select(func.count(Instance.id)).join(Series).where(Series.series_instance_uid == uid)) or 0
        )


def rejected_association(node: Node, factory: sessionmaker[Session]) -> Association | None:
    """The (first) association the node rejected, once what it recorded is written."""
    node.recorder.flush()
    with factory() as session:
        return session.scalar(select(Association).where(Association.outcome == "rejected"))


def send(port: int, datasets, ae_title: str = "PYSCU") -> list[int]:  # type: ignore[no-untyped-def]
    """C-STORE ``datasets`` on one association (a context per SOP class and transfer syntax)."""
    ae = AE(ae_title=ae_title)
    for ds in datasets:
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="MEDDET")
    assert assoc.is_established, "association was not accepted"
    try:
        return [int(assoc.send_c_store(ds).Status) for ds in datasets]
    finally:
        assoc.release()
