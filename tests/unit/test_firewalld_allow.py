"""The firewalld_allow module (plugins/modules/firewalld_allow.py): its plan, and the module run
as Ansible runs it, against a stand-in firewall-cmd that keeps the zone's rich rules in files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import module_run
import pytest
from file_module import load
from module_run import stand_in

allow = load("plugins/modules/firewalld_allow.py")

# As firewalld 1.3 (Debian 12) prints them: `firewall-cmd --list-rich-rules`.
PRINTED = [
    'rule family="ipv4" source address="172.30.240.3/32" port port="5671" protocol="tcp" accept',
    'rule family="ipv4" source address="10.0.0.0/8" port port="15671" protocol="tcp" accept',
    'rule family="ipv6" source address="fd00::/64" port port="5671" protocol="tcp" accept',
    'rule family="ipv4" source address="10.0.0.1/32" port port="5671" protocol="udp" accept',
    'rule family="ipv4" source address="10.9.9.9/32" port port="56710" protocol="tcp" accept',
    'rule family="ipv4" source address="10.0.0.2/32" service name="ssh" accept',
]

# firewall-cmd [--permanent] --zone=Z (--list-rich-rules | --add-rich-rule=R... | --remove-rich-rule=R...)
STAND_IN = """#!/usr/bin/env python3
import json, os, sys
args = sys.argv[1:]
layer = "permanent" if "--permanent" in args else "runtime"
path = os.path.join(os.environ["ZONE_DIR"], layer + ".json")
rules = json.load(open(path)) if os.path.exists(path) else []
with open(os.path.join(os.environ["ZONE_DIR"], "calls"), "a") as log:
    log.write(json.dumps(args) + "\\n")
if "--list-rich-rules" in args:
    print("\\n".join(rules))
    sys.exit(0)
for arg in args:
    if arg.startswith("--add-rich-rule="):
        rules.append(arg.split("=", 1)[1])
    elif arg.startswith("--remove-rich-rule="):
        rules.remove(arg.split("=", 1)[1])
json.dump(rules, open(path, "w"))
print("success")
"""


def test_an_address_is_its_one_host_network() -> None:
    rules = [
        {"port": 5671, "sources": ["172.30.240.3", "fd00::/64"]},
        {"port": 15671, "sources": ["10.0.0.0/8"]},
    ]
    add, remove = allow.plan([], rules, True, "present")
    assert add == [PRINTED[0], PRINTED[2], PRINTED[1]]
    assert remove == []


def test_exclusive_removes_the_other_sources_of_the_listed_port_and_protocol_only() -> None:
    add, remove = allow.plan(PRINTED, [{"port": 5671, "sources": ["172.30.240.3/32"]}], True, "present")
    assert add == []
    assert remove == [PRINTED[2]]
    add, remove = allow.plan(PRINTED, [{"port": 5671, "protocol": "udp", "sources": []}], True, "present")
    assert (add, remove) == ([], [PRINTED[3]])


def test_not_exclusive_only_adds_and_absent_only_removes_the_listed_sources() -> None:
    rules = [{"port": 5671, "sources": ["10.1.1.1"]}]
    assert allow.plan(PRINTED, rules, False, "present") == (
        [PRINTED[0].replace("172.30.240.3", "10.1.1.1")],
        [],
    )
    gone = [{"port": 5671, "sources": ["172.30.240.3", "10.1.1.1"]}]
    assert allow.plan(PRINTED, gone, True, "absent") == ([], [PRINTED[0]])


def test_a_source_that_is_no_network_is_named() -> None:
    with pytest.raises(ValueError, match=r"port 5671: '10.0.0.1/24' is not an address or network"):
        allow.plan([], [{"port": 5671, "sources": ["10.0.0.1/24"]}], True, "present")


def run_module(tmp_path: Path, check: bool = False, **params: Any) -> dict[str, Any]:
    stand_in(tmp_path / "bin", "firewall-cmd", STAND_IN)
    return module_run.run_module(
        "firewalld_allow", tmp_path, params, check=check, env={"ZONE_DIR": str(tmp_path)}
    )


def zone(tmp_path: Path, layer: str) -> list[str]:
    path = tmp_path / f"{layer}.json"
    return json.loads(path.read_text()) if path.exists() else []


def test_the_module_changes_both_layers_then_nothing_and_check_mode_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "permanent.json").write_text(json.dumps([PRINTED[0], PRINTED[4]]))
    (tmp_path / "runtime.json").write_text(json.dumps([PRINTED[4]]))
    rules = [{"port": 5671, "sources": ["172.30.240.3", "10.0.0.5"]}, {"port": 56710, "sources": []}]

    dry = run_module(tmp_path, check=True, rules=rules)
    assert dry["changed"] is True
    assert zone(tmp_path, "permanent") == [PRINTED[0], PRINTED[4]]
    assert [d["before_header"] for d in dry["diff"]] == ["zone public (permanent)", "zone public (runtime)"]
    assert "10.0.0.5/32" in dry["diff"][0]["after"] and "56710" not in dry["diff"][0]["after"]

    done = run_module(tmp_path, rules=rules)
    assert done["changed"] is True
    for layer in ("permanent", "runtime"):
        assert sorted(zone(tmp_path, layer)) == sorted(
            [PRINTED[0], PRINTED[0].replace("172.30.240.3", "10.0.0.5")]
        )

    calls = (tmp_path / "calls").read_text().splitlines()
    again = run_module(tmp_path, rules=rules)
    assert again["changed"] is False
    assert again["diff"] == []
    # Only the two reads: no call to firewalld for rules already in place.
    new_calls = (tmp_path / "calls").read_text().splitlines()[len(calls) :]
    assert [json.loads(c)[-1] for c in new_calls] == ["--list-rich-rules", "--list-rich-rules"]


def test_a_failing_firewall_cmd_fails_the_module_with_its_words(tmp_path: Path) -> None:
    (tmp_path / "permanent.json").write_text("not json")
    result = run_module(tmp_path, rules=[{"port": 5671, "sources": []}])
    assert result["failed"] is True
    assert "--list-rich-rules failed (rc 1)" in result["msg"]
