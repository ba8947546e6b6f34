"""The playbooks' filters (playbooks/filter_plugins/cluster_hosts.py)."""

from __future__ import annotations

from pathlib import Path

from file_module import load

ROOT = Path(__file__).parents[2]
plugin = load("playbooks/filter_plugins/cluster_hosts.py")


def facts(address: str | None, hostname: str) -> dict[str, object]:
    default = {"address": address} if address else {}
    return {"ansible_facts": {"hostname": hostname, "default_ipv4": default}}


HOSTVARS = {
    # reached, default route's address
    "b1.example.test": facts("10.0.0.1", "b1"),
    # reached, the inventory sets another NIC's address
    "w1.example.test": {**facts("192.0.2.5", "w1"), "cluster_address": "10.0.0.2"},
    # down this run: no facts
    "w2.example.test": {},
    # down, never reached, but its address is in the inventory
    "w3.example.test": {"cluster_address": "10.0.0.4"},
    # reached, IPv6 only
    "c1.example.test": facts(None, "c1"),
}
RECORD = {
    "w2.example.test": {"cluster_address": "10.0.0.3", "cluster_hostname": "w2"},
    "b1.example.test": {"cluster_address": "10.9.9.9", "cluster_hostname": "old"},
}


def test_reached_hosts_are_those_with_facts() -> None:
    assert plugin.cluster_hosts_reached(list(HOSTVARS), HOSTVARS) == [
        "b1.example.test",
        "w1.example.test",
        "c1.example.test",
    ]


def test_known_addresses_come_from_the_inventory_then_the_facts_then_the_record() -> None:
    known = plugin.cluster_hosts_known(list(HOSTVARS), HOSTVARS, RECORD)
    assert known == {
        # this run's facts win over the record
        "b1.example.test": {"cluster_address": "10.0.0.1", "cluster_hostname": "b1"},
        "w1.example.test": {"cluster_address": "10.0.0.2", "cluster_hostname": "w1"},
        "w2.example.test": {"cluster_address": "10.0.0.3", "cluster_hostname": "w2"},
        "w3.example.test": {"cluster_address": "10.0.0.4", "cluster_hostname": ""},
        "c1.example.test": {"cluster_address": "", "cluster_hostname": "c1"},
    }


def test_a_host_down_and_in_no_record_is_unknown() -> None:
    known = plugin.cluster_hosts_known(["w2.example.test"], HOSTVARS, {})
    assert known == {"w2.example.test": {"cluster_address": "", "cluster_hostname": ""}}


def test_list_options_are_read_from_the_roles_argument_specs() -> None:
    names = plugin.argument_spec_lists(["firewall", "flower"], str(ROOT / "roles"))
    assert {"firewall_allowed_services", "firewall_extra_rules", "flower_allowed_sources"} <= set(names)
    assert "firewall_zone" not in names and "flower_port" not in names
