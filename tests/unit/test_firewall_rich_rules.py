"""The firewall role's filters (roles/firewall/filter_plugins/firewall_rich_rules.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

PLUGIN = Path(__file__).parents[2] / "roles/firewall/filter_plugins/firewall_rich_rules.py"
spec = importlib.util.spec_from_file_location("firewall_rich_rules", PLUGIN)
assert spec and spec.loader
plugin = importlib.util.module_from_spec(spec)
spec.loader.exec_module(plugin)

# As firewalld 1.3 (Debian 12) prints them: `firewall-cmd --list-rich-rules`.
PRINTED = [
    'rule family="ipv4" source address="172.30.240.3/32" port port="5671" protocol="tcp" accept',
    'rule family="ipv4" source address="10.0.0.0/8" port port="15671" protocol="tcp" accept',
    'rule family="ipv6" source address="fd00::/64" port port="5671" protocol="tcp" accept',
    'rule family="ipv4" source address="10.0.0.1/32" port port="5671" protocol="udp" accept',
    'rule family="ipv4" source address="10.9.9.9/32" port port="56710" protocol="tcp" accept',
    'rule family="ipv4" source address="10.0.0.2/32" service name="ssh" accept',
]


def test_one_rule_per_source_in_the_printed_form() -> None:
    rules = [
        {"port": 5671, "sources": ["172.30.240.3/32", "fd00::/64"]},
        {"port": "15671", "protocol": "tcp", "sources": ["10.0.0.0/8"]},
        {"port": 4369, "sources": []},
    ]
    assert plugin.firewall_rich_rules(rules) == [PRINTED[0], PRINTED[2], PRINTED[1]]


def test_protocol_defaults_to_tcp_and_udp_is_kept() -> None:
    assert plugin.firewall_rich_rules([{"port": 5671, "protocol": "udp", "sources": ["10.0.0.1/32"]}]) == [
        PRINTED[3]
    ]
    assert plugin.firewall_rich_rules([{"port": 5671, "protocol": None, "sources": ["10.0.0.1/32"]}]) == [
        PRINTED[3].replace("udp", "tcp")
    ]


def test_rules_of_ports_match_port_and_protocol_exactly() -> None:
    assert plugin.firewall_rules_of_ports(PRINTED, [{"port": 5671, "sources": []}]) == [
        PRINTED[0],
        PRINTED[2],
    ]
    assert plugin.firewall_rules_of_ports(PRINTED, [{"port": 5671, "protocol": "udp", "sources": []}]) == [
        PRINTED[3]
    ]
    both = [{"port": 15671, "sources": []}, {"port": 56710, "sources": ["x"]}]
    assert plugin.firewall_rules_of_ports(PRINTED, both) == [PRINTED[1], PRINTED[4]]
    assert plugin.firewall_rules_of_ports(PRINTED, []) == []
    assert plugin.firewall_rules_of_ports([], [{"port": 5671, "sources": []}]) == []
