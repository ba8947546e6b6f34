"""Which addresses a download may reach: every block of the special-purpose table classified,
the audit's addresses refused, NAT64/6to4/Teredo judged by their IPv4 address. Classification
only: nothing here opens a connection."""

from __future__ import annotations

import ipaddress

import pytest

from downloaderApp.errors import ForbiddenAddress
from downloaderApp.safety import check_address
from downloaderApp.special_addresses import BLOCKS, Block, block_of


def decided_by(block: Block) -> list[str]:
    """Addresses of BLOCK (its first, middle and last) whose most specific block is BLOCK."""
    net = block.network
    first, last = int(net.network_address), int(net.broadcast_address)
    picks = {first, (first + last) // 2, last, first + 1, last - 1}
    make = ipaddress.IPv4Address if net.version == 4 else ipaddress.IPv6Address
    addresses = [make(n) for n in sorted(picks) if first <= n <= last]
    return [str(ip) for ip in addresses if block_of(ip) == block]


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.reachable != "embedded"], ids=str)
def test_each_block_of_the_table_is_reachable_or_refused_as_the_registry_says(block: Block) -> None:
    addresses = decided_by(block)
    assert addresses, f"no address decided by {block.network} itself"
    for address in addresses:
        if block.reachable:
            assert check_address(address, ()) == address
        else:
            with pytest.raises(ForbiddenAddress, match=r"not globally routable"):
                check_address(address, ())


@pytest.mark.parametrize(
    "address",
    # Global by ipaddress.is_global on CPython 3.10.13, 3.11.7 and 3.12.1; 3fff::/20 on all.
    [
        "192.0.0.192",
        "192.0.0.8",
        "192.0.0.100",
        "192.0.0.255",
        "::ffff:192.0.0.192",
        "2002:c000:c0::1",
        "3fff::1",
    ],
)
def test_the_audits_addresses_are_refused_on_every_python(address: str) -> None:
    with pytest.raises(ForbiddenAddress, match=r"not globally routable"):
        check_address(address, ())


def test_the_decision_does_not_come_from_the_interpreters_is_global(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ipaddress.IPv4Address, "is_global", property(lambda self: True))
    monkeypatch.setattr(ipaddress.IPv6Address, "is_global", property(lambda self: True))
    for address in ("192.0.0.192", "10.0.0.1", "3fff::1", "fd00::1"):
        with pytest.raises(ForbiddenAddress):
            check_address(address, ())


def test_a_refusal_names_the_block() -> None:
    with pytest.raises(
        ForbiddenAddress, match=r"address 169\.254\.169\.254 \(link local \(cloud metadata\)\)"
    ):
        check_address("169.254.169.254", ())


def teredo(server: str, client: str) -> str:
    """A Teredo address (RFC 4380): prefix, server, flags, port, and the client obfuscated."""
    value = (0x2001_0000 << 96) | (int(ipaddress.IPv4Address(server)) << 64) | (0x8000_0000 << 32)
    return str(ipaddress.IPv6Address(value | (int(ipaddress.IPv4Address(client)) ^ 0xFFFFFFFF)))


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("64:ff9b::8.8.8.8", True),  # NAT64 of a public address: an IPv6-only worker with DNS64
        ("64:ff9b::a9fe:a9fe", False),  # NAT64 of 169.254.169.254
        ("64:ff9b::10.0.0.1", False),
        ("64:ff9b:1::808:808", False),  # local-use translation prefix
        ("2002:808:808::1", True),  # 6to4 of 8.8.8.8
        ("2002:a00:1::1", False),  # 6to4 of 10.0.0.1
        (teredo("8.8.8.8", "1.1.1.1"), True),
        (teredo("8.8.8.8", "10.0.0.1"), False),
        (teredo("127.0.0.1", "1.1.1.1"), False),
        ("::ffff:8.8.8.8", True),
        ("::ffff:192.168.1.1", False),
    ],
)
def test_addresses_that_embed_ipv4_are_judged_by_it(address: str, public: bool) -> None:
    if public:
        assert check_address(address, ()) == address
    else:
        with pytest.raises(ForbiddenAddress):
            check_address(address, ())
