"""The receiving node: spool + group committer + audit recorder + series assembler + Storage
SCP (fast lane) + Storage Commitment SCP, wired once.

``meddet serve`` builds one :class:`Node`; tests and ``meddet demo`` build one in-process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from sqlalchemy.orm import Session, sessionmaker

from dicom_node.assembler import OnSelected, SeriesAssembler
from dicom_node.audit.models import Series
from dicom_node.commitment import CommitmentSCP
from dicom_node.config import Settings
from dicom_node.durability import GroupCommitter
from dicom_node.fastlane import LaneRequestHandler, LaneServer
from dicom_node.guards import GuardedServer, Limits, start_server
from dicom_node.logging import get_logger
from dicom_node.recorder import AuditRecorder
from dicom_node.recovery import reconcile, record_missing
from dicom_node.scp import StoreHandlers, build_ae, image_storage_classes, tls_context
from dicom_node.selection import load_rules
from dicom_node.spool import Spool

log = get_logger(__name__)


class Node:
    """Owns the node's threads; ``start()`` then ``stop()`` (SIGTERM) or ``serve_forever()``."""

    def __init__(
        self,
        settings: Settings,
        session_factory: sessionmaker[Session],
        on_selected: OnSelected,
        after_commit: Callable[[list[Series]], None] = lambda completed: None,
        count_instance: Callable[[str], None] = lambda outcome: None,
    ) -> None:
        self.settings = settings
        group = settings.durability == "group"
        self.spool = Spool(settings.spool_dir, settings.incoming_tmp_dir, settings.quarantine_dir, durable=not group)
        self.assembler = SeriesAssembler(
            session_factory,
            load_rules(settings.rules_file),
            settings.quiet_period,
            on_selected=on_selected,
            after_commit=after_commit,
        )
        self.recorder = AuditRecorder(
            session_factory,
            on_batch=self.assembler.wake,
            on_overflow=lambda: record_missing(self.spool, session_factory),
        )
        # group commit: events wait for their files' flush before the recorder sees them
        self.committer = GroupCommitter(settings.spool_dir, self.recorder.put) if group else None
        record = self.committer.put if self.committer is not None else self.recorder.put
        if self.committer is not None:
            self.recorder.before_flush = self.committer.drain
        self.handlers = StoreHandlers(settings, self.spool, record, count_instance)
        self.storage_classes = frozenset(image_storage_classes().values())
        self.commitment = CommitmentSCP(settings, session_factory, record, self.storage_classes)
        self.ae = build_ae(settings)
        self._session_factory = session_factory
        self._server: GuardedServer | None = None
        self._stopped = threading.Event()

    @property
    def port(self) -> int:
        assert self._server is not None, "node not started"
        return int(self._server.server_address[1])

    def start(self) -> Node:
        recovered = reconcile(self.spool, self._session_factory)
        self.recorder.start()
        if self.committer is not None:
            self.committer.start()
        self.assembler.start()
        self.commitment.start()
        self._server = start_server(
            self.ae,
            (self.settings.host, self.settings.port),
            evt_handlers=[*self.handlers.bindings(), *self.commitment.bindings()],
            ssl_context=tls_context(self.settings),
            limits=Limits.from_settings(self.settings),
            screen=self.handlers.screen,
            server_class=LaneServer,
            request_handler=LaneRequestHandler,
            lane_target=self.handlers,
            lane_classes=self.storage_classes,
        )
        log.info(
            "node listening",
            ae_title=self.settings.ae_title,
            host=self.settings.host,
            port=self.port,
            tls=self.settings.tls_cert is not None,
            durability=self.settings.durability,
            recovered_files=recovered,
        )
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop accepting, let open associations finish (abort after ``timeout``), drain."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self._server is not None:
            self._server.shutdown()
            deadline = time.monotonic() + timeout
            while self._server.active_associations and time.monotonic() < deadline:
                time.sleep(0.05)
            for assoc in self._server.active_associations:
                log.warning("aborting association at shutdown", calling_ae=assoc.requestor.ae_title)
                assoc.abort()
        self.commitment.begin_stop()
        if self.committer is not None:
            self.committer.stop()  # flushes and passes on what is queued
        self.recorder.stop()  # writes what is queued; gives up after 30 s of a DB still down
        self.commitment.stop()  # its barriers have passed: decides what is pending, once
        self.assembler.stop()
        log.info("node stopped")

    def wait(self) -> None:
        self._stopped.wait()
