"""The firewalld_prune module (plugins/modules/firewalld_prune.py) and the owners' records that
firewalld_allow writes for it, run as Ansible runs them, against a stand-in firewall-cmd that
keeps a zone's ports, source ports, protocols, forward-ports, sources and rich rules in files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from module_run import LIST_ALL, run_module, stand_in

# firewall-cmd [--permanent] --zone=Z (--list-all | --list-KIND | --remove-KIND=ITEM...
# | --add-rich-rule=R...)
STAND_IN = (
    """#!/usr/bin/env python3
import json, os, sys
KINDS = {"port": "ports", "source-port": "source_ports", "protocol": "protocols",
         "forward-port": "forward_ports", "source": "sources", "rich-rule": "rich_rules"}
PER_LINE = {"forward_ports", "rich_rules"}
args = sys.argv[1:]
layer = "permanent" if "--permanent" in args else "runtime"
path = os.path.join(os.environ["ZONE_DIR"], layer + ".json")
zone = json.load(open(path)) if os.path.exists(path) else {}
with open(os.path.join(os.environ["ZONE_DIR"], "calls"), "a") as log:
    log.write(json.dumps(args) + "\\n")
"""
    + LIST_ALL
    + """for arg in args:
    option, _, value = arg.partition("=")
    verb, _, kind = option[2:].partition("-")
    if verb == "list" and kind.rstrip("s") in KINDS:
        name = KINDS[kind.rstrip("s")]
        print(("\\n" if name in PER_LINE else " ").join(zone.get(name, [])))
        sys.exit(0)
    if verb in ("add", "remove") and kind in KINDS:
        items = zone.setdefault(KINDS[kind], [])
        if verb == "add":
            items.append(value)
        elif value in items:
            items.remove(value)
        else:
            print("Error: NOT_ENABLED: " + value, file=sys.stderr)
            sys.exit(2)
json.dump(zone, open(path, "w"))
print("success")
"""
)

OWNED = 'rule family="ipv4" source address="10.0.0.5/32" port port="5671" protocol="tcp" accept'
FOREIGN = 'rule family="ipv4" source address="10.0.0.5/32" port port="8080" protocol="tcp" accept'
NO_PORT = 'rule family="ipv4" source address="10.0.0.6/32" accept'
ZONE = {
    "ports": ["22/tcp", "2222/tcp", "8081/tcp", "8084/tcp"],
    "source_ports": ["53/udp"],
    "protocols": ["gre"],
    "forward_ports": ["port=8082:proto=tcp:toport=5555:toaddr="],
    "sources": ["192.0.2.0/24"],
    "rich_rules": [OWNED, FOREIGN, NO_PORT],
}


def run(tmp_path: Path, module: str, check: bool = False, **params: Any) -> dict[str, Any]:
    stand_in(tmp_path / "bin", "firewall-cmd", STAND_IN)
    # An sshd of this machine, if any, adds its ports to the kept ones (port 22 is among them).
    return run_module(module, tmp_path, params, check=check, env={"ZONE_DIR": str(tmp_path)})


def layer(tmp_path: Path, name: str) -> dict[str, list[str]]:
    data: dict[str, list[str]] = json.loads((tmp_path / f"{name}.json").read_text())
    return data


def test_allow_records_its_owners_ports_once_and_check_mode_writes_no_record(tmp_path: Path) -> None:
    owners = tmp_path / "owners"
    rules = [{"port": 5671, "sources": ["10.0.0.5"]}, {"port": 5672, "sources": []}]
    dry = run(tmp_path, "firewalld_allow", check=True, rules=rules, owner="rabbitmq", owners_dir=str(owners))
    assert dry["changed"] is True and not owners.exists()
    done = run(tmp_path, "firewalld_allow", rules=rules, owner="rabbitmq", owners_dir=str(owners))
    assert done["owned"] == ["5671/tcp", "5672/tcp"]
    assert json.loads((owners / "rabbitmq.json").read_text()) == {
        "zone": "public",
        "ports": ["5671/tcp", "5672/tcp"],
    }
    again = run(tmp_path, "firewalld_allow", rules=rules, owner="rabbitmq", owners_dir=str(owners))
    assert again["changed"] is False, again
    bad = run(tmp_path, "firewalld_allow", rules=rules, owner="../x", owners_dir=str(owners))
    assert bad["failed"] is True and "letters, digits" in bad["msg"]


def test_prune_removes_what_no_owner_recorded_and_keeps_ssh_owned_and_kept(tmp_path: Path) -> None:
    owners = tmp_path / "owners"
    owners.mkdir()
    (owners / "rabbitmq.json").write_text(json.dumps({"zone": "public", "ports": ["5671/tcp"]}))
    # A record for another zone owns nothing here.
    (owners / "other.json").write_text(json.dumps({"zone": "internal", "ports": ["8080/tcp"]}))
    for name in ("permanent", "runtime"):
        (tmp_path / f"{name}.json").write_text(json.dumps(ZONE))
    params: dict[str, Any] = {
        "owners_dir": str(owners),
        "ssh_ports": [22, 2222],
        "keep": {"ports": ["8084/tcp"]},
    }

    dry = run(tmp_path, "firewalld_prune", check=True, **params)
    assert dry["changed"] is True
    assert layer(tmp_path, "permanent") == ZONE
    assert [d["before_header"] for d in dry["diff"]] == ["zone public (permanent)", "zone public (runtime)"]

    done = run(tmp_path, "firewalld_prune", **params)
    assert done["changed"] is True
    expected = {
        "ports": ["22/tcp", "2222/tcp", "8084/tcp"],
        "source_ports": [],
        "protocols": [],
        "forward_ports": [],
        "sources": [],
        "rich_rules": [OWNED],
    }
    assert layer(tmp_path, "permanent") == layer(tmp_path, "runtime") == expected
    assert done["removed"]["runtime"]["rich_rules"] == [FOREIGN, NO_PORT]

    made = len((tmp_path / "calls").read_text().splitlines())
    again = run(tmp_path, "firewalld_prune", **params)
    assert again["changed"] is False, again
    calls = (tmp_path / "calls").read_text().splitlines()[made:]
    # One listing per layer, and nothing else.
    assert [json.loads(call)[-1] for call in calls] == ["--list-all", "--list-all"], calls


def test_prune_keeps_what_the_operator_lists(tmp_path: Path) -> None:
    for name in ("permanent", "runtime"):
        (tmp_path / f"{name}.json").write_text(json.dumps(ZONE))
    keep = {
        "ports": ["8081/tcp", "8084/tcp"],
        "source_ports": ["53/udp"],
        "protocols": ["gre"],
        "forward_ports": ZONE["forward_ports"],
        "sources": ["192.0.2.0/24"],
        "rich_rules": [FOREIGN, NO_PORT],
    }
    # No owners' records at all (a host before its first run): the kept items alone stay.
    result = run(
        tmp_path, "firewalld_prune", owners_dir=str(tmp_path / "none"), ssh_ports=[22, 2222], keep=keep
    )
    assert result["removed"]["permanent"] == {"rich_rules": [OWNED]}
    assert layer(tmp_path, "runtime")["ports"] == ZONE["ports"]


def test_a_failing_firewall_cmd_fails_the_prune(tmp_path: Path) -> None:
    (tmp_path / "permanent.json").write_text(json.dumps({"ports": ["9999/tcp"]}))
    (tmp_path / "runtime.json").write_text("not json")  # the stand-in crashes on this layer
    result = run(tmp_path, "firewalld_prune", owners_dir=str(tmp_path / "owners"), ssh_ports=[22])
    assert result.get("failed") is True and "failed (rc" in result["msg"], result
