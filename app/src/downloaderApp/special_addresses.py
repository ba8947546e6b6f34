"""Which IP addresses a download may reach: IANA's special-purpose address registries as a table.

The decision does not depend on the interpreter: ``ipaddress.is_global`` differs between
CPython releases and distributions' patches (192.0.0.0/24 or 3fff::/20 are "global" on some),
so the worker's guard uses this table instead. Sources: the IANA IPv4 and IPv6 Special-Purpose
Address Registries (RFC 6890 and the RFCs each entry names), plus multicast, and for IPv6 the
rule that only 2000::/3 is allocated global unicast.

An address is public when the most specific block holding it is globally reachable, or when no
block holds it. Addresses that embed an IPv4 address a gateway forwards to (6to4, Teredo, NAT64)
are public only if that IPv4 address is.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

__all__ = ["BLOCKS", "Block", "block_of", "is_public"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Block:
    network: IPNetwork
    name: str
    # IANA's "Globally Reachable" column; "embedded" where the registry says N/A and the
    # address carries an IPv4 address that decides (6to4, Teredo, the NAT64 well-known prefix).
    reachable: bool | str


def _blocks(rows: list[tuple[str, str, bool | str]]) -> tuple[Block, ...]:
    return tuple(
        Block(ipaddress.ip_network(cidr), name, reachable) for cidr, name, reachable in rows
    )


BLOCKS: tuple[Block, ...] = _blocks(
    [
        # IPv4 Special-Purpose Address Registry
        ("0.0.0.0/8", '"This network"', False),
        ("10.0.0.0/8", "private use", False),
        ("100.64.0.0/10", "shared address space", False),
        ("127.0.0.0/8", "loopback", False),
        ("169.254.0.0/16", "link local (cloud metadata)", False),
        ("172.16.0.0/12", "private use", False),
        ("192.0.0.0/24", "IETF protocol assignments", False),
        ("192.0.0.0/29", "IPv4 service continuity prefix", False),
        ("192.0.0.8/32", "IPv4 dummy address", False),
        ("192.0.0.9/32", "port control protocol anycast", True),
        ("192.0.0.10/32", "traversal using relays around NAT anycast", True),
        ("192.0.0.170/31", "NAT64/DNS64 discovery", False),
        ("192.0.2.0/24", "documentation (TEST-NET-1)", False),
        ("192.31.196.0/24", "AS112-v4", True),
        ("192.52.193.0/24", "AMT", True),
        ("192.88.99.0/24", "deprecated 6to4 relay anycast", False),
        ("192.168.0.0/16", "private use", False),
        ("192.175.48.0/24", "direct delegation AS112 service", True),
        ("198.18.0.0/15", "benchmarking", False),
        ("198.51.100.0/24", "documentation (TEST-NET-2)", False),
        ("203.0.113.0/24", "documentation (TEST-NET-3)", False),
        ("224.0.0.0/4", "multicast", False),
        ("240.0.0.0/4", "reserved", False),
        ("255.255.255.255/32", "limited broadcast", False),
        # IPv6: everything outside 2000::/3 is not global unicast, except the NAT64 prefix
        ("::/0", "not allocated as global unicast (outside 2000::/3)", False),
        ("2000::/3", "global unicast", True),
        # IPv6 Special-Purpose Address Registry
        ("::/128", "unspecified", False),
        ("::1/128", "loopback", False),
        ("::ffff:0:0/96", "IPv4-mapped", "embedded"),
        ("64:ff9b::/96", "IPv4-IPv6 translation (NAT64)", "embedded"),
        ("64:ff9b:1::/48", "local-use IPv4/IPv6 translation", False),
        ("100::/64", "discard-only", False),
        ("100:0:0:1::/64", "dummy IPv6 prefix", False),
        ("2001::/23", "IETF protocol assignments", False),
        ("2001::/32", "Teredo", "embedded"),
        ("2001:1::1/128", "port control protocol anycast", True),
        ("2001:1::2/128", "traversal using relays around NAT anycast", True),
        ("2001:1::3/128", "DNS-SD service registration protocol anycast", True),
        ("2001:2::/48", "benchmarking", False),
        ("2001:3::/32", "AMT", True),
        ("2001:4:112::/48", "AS112-v6", True),
        ("2001:10::/28", "deprecated ORCHID", False),
        ("2001:20::/28", "ORCHIDv2", True),
        ("2001:30::/28", "drone remote ID protocol entity tags", True),
        ("2001:db8::/32", "documentation", False),
        ("2002::/16", "6to4", "embedded"),
        ("2620:4f:8000::/48", "direct delegation AS112 service", True),
        ("3fff::/20", "documentation", False),
        ("5f00::/16", "segment routing (SRv6) SIDs", False),
        ("fc00::/7", "unique local", False),
        ("fe80::/10", "link-local unicast", False),
        ("fec0::/10", "deprecated site-local", False),
        ("ff00::/8", "multicast", False),
    ]
)


def block_of(ip: IPAddress) -> Block | None:
    """The most specific block of the table that holds ``ip``, or None."""
    holding = [b for b in BLOCKS if b.network.version == ip.version and ip in b.network]
    return max(holding, key=lambda b: b.network.prefixlen, default=None)


def _embedded(ip: ipaddress.IPv6Address, block: Block) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]  # the client's address; the server's is judged with it below
    if block.network == ipaddress.IPv6Network("64:ff9b::/96"):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public(ip: IPAddress) -> bool:
    """Whether a download may reach ``ip`` without an allowed network (the module's docstring)."""
    block = block_of(ip)
    if block is None or block.reachable is True:
        return True
    if block.reachable is False or not isinstance(ip, ipaddress.IPv6Address):
        return False
    embedded = _embedded(ip, block)
    if embedded is None:
        return False
    if ip.teredo is not None and not is_public(ip.teredo[0]):
        return False
    return is_public(embedded)
