"""Issue 12 item 11 (b, c): the Called AE Title is checked; the IP allow-list takes CIDR ranges
and IPv4-mapped IPv6 addresses."""

from __future__ import annotations

from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dicom_node import statuses
from dicom_node.audit.models import Association
from dicom_node.config import Settings
from dicom_node.recorder import AssociationRejected, Event
from dicom_node.scp import StoreHandlers
from tests.integration.receiving import running_node

pytestmark = pytest.mark.integration


def echo(port: int, called: str) -> tuple[bool, bool]:
    """(established, rejected) of a C-ECHO association asking for ``called``."""
    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(Verification)
    ae.acse_timeout = 5
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    established, rejected = assoc.is_established, assoc.is_rejected
    if established:
        assert assoc.send_c_echo().Status == statuses.SUCCESS
        assoc.release()
    return established, rejected


def test_an_association_for_another_called_ae_is_rejected(
    node_settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    with running_node(node_settings, session_factory) as node:
        assert echo(node.port, "MEDDET") == (True, False)
        assert echo(node.port, "OTHERPACS") == (False, True)
        node.recorder.flush()
        with session_factory() as session:
            rejected = session.scalar(select(Association).where(Association.outcome == "rejected"))
        assert rejected is not None and "called AE 'OTHERPACS'" in (rejected.reason or "")


def test_any_called_ae_is_accepted_when_allowed(
    node_settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    with running_node(node_settings, session_factory, accept_any_called_ae=True) as node:
        assert echo(node.port, "OTHERPACS") == (True, False)


def test_a_cidr_range_admits_the_addresses_in_it(
    node_settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    with running_node(node_settings, session_factory, allowed_ips=["192.0.2.0/24", "127.0.0.0/8"]) as node:
        assert echo(node.port, "MEDDET") == (True, False)


def screen(allowed: list[str], address: str, tmp_path: Path) -> tuple[str | None, list[Event]]:
    events: list[Event] = []
    settings = Settings(data_dir=tmp_path, allowed_ips=allowed)
    handlers = StoreHandlers(settings, spool=None, record=events.append)  # type: ignore[arg-type]
    return handlers.screen(address, 40000), events


@pytest.mark.parametrize(
    ("allowed", "address", "admitted"),
    [
        (["127.0.0.1"], "::ffff:127.0.0.1", True),  # a dual-stack socket's view of an IPv4 peer
        (["::ffff:10.1.2.3"], "10.1.2.3", True),
        (["10.0.0.0/8"], "::ffff:10.200.3.4", True),
        (["10.0.0.0/8"], "11.0.0.1", False),
        (["fd00::/8"], "fd12::7", True),
        (["127.0.0.1"], "::1", False),
        (["192.0.2.10"], "192.0.2.100", False),  # no prefix matching on text
    ],
)
def test_the_allow_list_matches_addresses_not_strings(
    allowed: list[str], address: str, admitted: bool, tmp_path: Path
) -> None:
    reason, events = screen(allowed, address, tmp_path)
    assert (reason is None) == admitted
    assert len(events) == (0 if admitted else 1)
    assert all(isinstance(e, AssociationRejected) for e in events)


def test_a_bad_allow_list_entry_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not an IP address or CIDR range"):
        Settings(data_dir=tmp_path, allowed_ips="10.0.0.0/8, example.org")
