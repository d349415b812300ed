"""Source-address allow-list: single addresses and CIDR ranges, IPv4 and IPv6.

An IPv4-mapped IPv6 address (``::ffff:127.0.0.1``, what a dual-stack socket reports for an
IPv4 peer) is matched as its IPv4 form.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_network(text: str) -> Network:
    """``10.0.0.0/8``, ``192.168.1.7``, ``fd00::/8`` or ``::ffff:10.1.2.3`` as a network.

    Host bits set (``10.1.2.3/8``) are allowed and ignored; a bad entry raises ValueError.
    """
    try:
        network = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not an IP address or CIDR range (e.g. 10.0.0.0/8)") from exc
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            return ipaddress.ip_network(f"{mapped}/{network.prefixlen - 96}", strict=False)
    return network


def parse_address(text: str) -> Address | None:
    """A peer's address (IPv4-mapped IPv6 as IPv4; a zone ``%eth0`` dropped), or None."""
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@lru_cache(maxsize=32)
def _networks(entries: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(parse_network(entry) for entry in entries)


def is_allowed(address: str, allowed: Iterable[str]) -> bool:
    """True when ``allowed`` is empty or ``address`` lies in one of its addresses or ranges."""
    entries = tuple(allowed)
    if not entries:
        return True
    peer = parse_address(address)
    if peer is None:
        return False
    return any(peer.version == net.version and peer in net for net in _networks(entries))
