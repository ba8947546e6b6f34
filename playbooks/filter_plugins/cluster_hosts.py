"""Filters of the playbooks: what is known of each cluster host's address and host name, from
this run's facts, the inventory, or the record of the last run that reached the host
(facts.yml); the roles' options of type list (validate.yml)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml


def _facts(hostvars: Mapping[str, Any], host: str) -> Mapping[str, Any]:
    facts = hostvars[host].get("ansible_facts") or {}
    return facts if facts.get("hostname") else {}


def cluster_hosts_reached(hosts: list[str], hostvars: Mapping[str, Any]) -> list[str]:
    """The HOSTS whose facts this run has read."""
    return [host for host in hosts if _facts(hostvars, host)]


def cluster_hosts_known(
    hosts: list[str], hostvars: Mapping[str, Any], record: Mapping[str, Any]
) -> dict[str, dict[str, str]]:
    """For each of HOSTS, its `cluster_address` and `cluster_hostname`: an address set in the
    inventory first, else the default route's IPv4 address in its facts; for a host whose facts
    were not read (down), what RECORD (the last run's result) says; '' where nothing is known."""
    known = {}
    for host in hosts:
        facts = _facts(hostvars, host)
        old = record.get(host) or {}
        if facts:
            address = (facts.get("default_ipv4") or {}).get("address") or ""
            hostname = facts["hostname"]
        else:
            address = old.get("cluster_address") or ""
            hostname = old.get("cluster_hostname") or ""
        known[host] = {
            "cluster_address": str(hostvars[host].get("cluster_address") or address),
            "cluster_hostname": str(hostname),
        }
    return known


def argument_spec_lists(roles: list[str], roles_dir: str) -> list[str]:
    """The options of type list of the `main` entry point of each of ROLES' argument specs
    (ROLES_DIR/ROLE/meta/argument_specs.yml)."""
    names = []
    for role in roles:
        with open(f"{roles_dir}/{role}/meta/argument_specs.yml", encoding="utf-8") as spec_file:
            spec = yaml.safe_load(spec_file) or {}
        options = ((spec.get("argument_specs") or {}).get("main") or {}).get("options") or {}
        names += [name for name, option in options.items() if option.get("type") == "list"]
    return names


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "argument_spec_lists": argument_spec_lists,
            "cluster_hosts_known": cluster_hosts_known,
            "cluster_hosts_reached": cluster_hosts_reached,
        }
