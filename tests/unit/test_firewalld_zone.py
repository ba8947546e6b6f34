"""The firewalld_zone module (plugins/modules/firewalld_zone.py), run as Ansible runs it, against a
stand-in firewall-cmd that keeps a zone's target, ports and services in files: SSH stays open
before anything closes, only what differs changes, and check mode changes nothing."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from module_run import LIST_ALL, run_module, stand_in

# The modules' shared code, where module_run puts it for them.
zone_info = importlib.import_module("ansible.module_utils.celery_firewalld").zone_info

# firewall-cmd [--permanent] --zone=Z (--list-all | --set-target=T
# | --(add|remove)-(port|service)=X...) and firewall-cmd --reload, each call logged.
STAND_IN = (
    """#!/usr/bin/env python3
import json, os, sys
args = sys.argv[1:]
zone_dir = os.environ["ZONE_DIR"]
with open(os.path.join(zone_dir, "calls"), "a") as log:
    log.write(json.dumps(args) + "\\n")
def load(layer):
    return json.load(open(os.path.join(zone_dir, layer + ".json")))
if args == ["--reload"]:
    permanent = load("permanent")
    json.dump(permanent, open(os.path.join(zone_dir, "runtime.json"), "w"))
    print("success")
    sys.exit(0)
layer = "permanent" if "--permanent" in args else "runtime"
zone = load(layer)
"""
    + LIST_ALL
    + """for arg in args:
    option, _, value = arg.partition("=")
    if option == "--set-target":
        zone["target"] = value
    if option in ("--list-ports", "--list-services"):
        print(" ".join(zone[option[7:]]))
        sys.exit(0)
    for kind in ("port", "service"):
        if option == "--add-" + kind:
            zone[kind + "s"].append(value)
        if option == "--remove-" + kind:
            zone[kind + "s"].remove(value)
json.dump(zone, open(os.path.join(zone_dir, layer + ".json"), "w"))
print("success")
"""
)

# A fresh Debian host: firewalld's public zone, default target, ssh and dhcpv6-client open.
FRESH = {"target": "default", "ports": [], "services": ["ssh", "dhcpv6-client"]}


def setup_zone(tmp_path: Path, permanent: dict[str, Any], runtime: dict[str, Any]) -> None:
    stand_in(tmp_path / "bin", "firewall-cmd", STAND_IN)
    (tmp_path / "permanent.json").write_text(json.dumps(permanent))
    (tmp_path / "runtime.json").write_text(json.dumps(runtime))


def run(tmp_path: Path, check: bool = False, **params: Any) -> dict[str, Any]:
    return run_module("firewalld_zone", tmp_path, params, check=check, env={"ZONE_DIR": str(tmp_path)})


def zone(tmp_path: Path, layer: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((tmp_path / f"{layer}.json").read_text())
    return data


def calls(tmp_path: Path) -> list[list[str]]:
    return [json.loads(line) for line in (tmp_path / "calls").read_text().splitlines()]


def test_a_fresh_zone_gets_ssh_first_then_its_target_and_services(tmp_path: Path) -> None:
    setup_zone(tmp_path, FRESH, FRESH)
    params = {"target": "DROP", "services": ["ssh"], "ssh_ports": [2222]}

    dry = run(tmp_path, check=True, **params)
    assert dry["changed"] is True and dry["target"] == "default"
    assert zone(tmp_path, "permanent") == zone(tmp_path, "runtime") == FRESH
    assert [d["before_header"] for d in dry["diff"]] == ["zone public (permanent)", "zone public (runtime)"]

    done = run(tmp_path, **params)
    assert done["changed"] is True
    for layer in ("permanent", "runtime"):
        now = zone(tmp_path, layer)
        assert now["target"] == "DROP" and now["services"] == ["ssh"], (layer, now)
        assert "2222/tcp" in now["ports"], (layer, now)
    changes = [call for call in calls(tmp_path) if not any(a.startswith(("--list", "--get")) for a in call)]
    # Each layer's SSH port opens before its target or services change; the reload comes last.
    assert changes[0][0] == "--permanent" and changes[0][2].startswith("--add-port="), changes
    assert changes[1] == ["--permanent", "--zone=public", "--set-target=DROP"], changes
    runtime = [call for call in changes if call[0] != "--permanent"]
    assert runtime[0][1].startswith("--add-port=") and runtime[-1] == ["--reload"], changes

    again = run(tmp_path, **params)
    assert again["changed"] is False, again


def test_a_service_added_by_hand_is_removed_in_both_layers_without_a_reload(tmp_path: Path) -> None:
    setup_zone(tmp_path, FRESH, FRESH)
    params = {"target": "DROP", "services": ["ssh"], "ssh_ports": [22]}
    run(tmp_path, **params)
    for layer in ("permanent", "runtime"):
        drifted = zone(tmp_path, layer)
        drifted["services"].append("http")
        (tmp_path / f"{layer}.json").write_text(json.dumps(drifted))
    (tmp_path / "calls").unlink()

    done = run(tmp_path, **params)
    assert done["services"]["runtime"] == {"added": [], "removed": ["http"]}
    assert zone(tmp_path, "permanent")["services"] == zone(tmp_path, "runtime")["services"] == ["ssh"]
    assert ["--reload"] not in calls(tmp_path)


def test_a_failing_firewall_cmd_is_named(tmp_path: Path) -> None:
    stand_in(tmp_path / "bin", "firewall-cmd", "#!/bin/sh\necho 'FirewallD is not running' >&2\nexit 252\n")
    result = run(tmp_path, target="DROP", services=["ssh"])
    assert result["failed"] is True
    assert "--list-all failed (rc 252): FirewallD is not running" in result["msg"], result


# `firewall-cmd --permanent --zone=public --list-all` on a converged broker of scenario default
# (firewalld 2.3, Debian 13), one forward-port added for the test.
LISTED = "\n".join(
    [
        "public (default)",
        "  target: DROP",
        "  ingress-priority: 0",
        "  egress-priority: 0",
        "  icmp-block-inversion: no",
        "  interfaces: ",
        "  sources: ",
        "  services: ssh",
        "  ports: 22/tcp 2222/tcp",
        "  protocols: ",
        "  forward: yes",
        "  masquerade: no",
        "  forward-ports: ",
        "\tport=8082:proto=tcp:toport=5555:toaddr=",
        "  source-ports: ",
        "  icmp-blocks: ",
        "  rich rules: ",
        '\trule family="ipv4" source address="172.30.237.1/32" port port="5671" protocol="tcp" accept',
        '\trule family="ipv4" source address="172.30.237.41/32" port port="15691" protocol="tcp" accept',
    ]
)


def test_a_zone_listing_is_read_by_key_with_whole_rich_rules() -> None:
    info = zone_info(LISTED)
    assert info["target"] == ["DROP"]
    assert info["services"] == ["ssh"] and info["ports"] == ["22/tcp", "2222/tcp"]
    assert info["sources"] == info["protocols"] == info["source-ports"] == []
    assert info["forward-ports"] == ["port=8082:proto=tcp:toport=5555:toaddr="]
    assert info["rich rules"] == [
        'rule family="ipv4" source address="172.30.237.1/32" port port="5671" protocol="tcp" accept',
        'rule family="ipv4" source address="172.30.237.41/32" port port="15691" protocol="tcp" accept',
    ]
