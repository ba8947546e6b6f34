#!/usr/bin/python
"""Allow ports of a firewalld zone to listed sources, and (exclusive) to no other source."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.celery_firewalld import LAYERS, rule_port, zone_command

DOCUMENTATION = r"""
module: firewalld_allow
short_description: Allow ports of a firewalld zone to listed sources only
description:
  - Reads the zone's rich rules once (permanent and in force), and adds or removes only the
    rules that differ from the ones wanted, in both at once.
  - One rich rule per source and port, of the form
    C(rule family="ipv4" source address="198.51.100.20/32" port port="5671" protocol="tcp" accept).
  - Sources are addresses or networks, IPv4 or IPv6; an address is written as a one-host network
    (/32, /128), so an address and its /32 are the same source.
  - Check mode and diff are supported. firewalld must be running.
options:
  zone:
    description: The firewalld zone.
    type: str
    default: public
  rules:
    description: The ports, each with its sources.
    type: list
    elements: dict
    required: true
    options:
      port:
        description: Port number.
        type: int
        required: true
      protocol:
        description: tcp or udp.
        type: str
        choices: [tcp, udp]
        default: tcp
      sources:
        description: Addresses or networks allowed to reach the port; with I(exclusive), an empty
          list closes the port.
        type: list
        elements: str
        required: true
  exclusive:
    description:
      - With I(state=present), also remove every other rich rule about a listed port and
        protocol (a source no longer listed).
    type: bool
    default: true
  state:
    description:
      - C(present) adds the listed sources' rules; C(absent) removes them (and nothing else).
    type: str
    choices: [present, absent]
    default: present
  owner:
    description:
      - With I(state=present), the name under which the listed ports are recorded in
        I(owners_dir) (C(OWNER.json), replacing that owner's earlier record), so that
        firewalld_prune leaves the rich rules about them to this owner.
    type: str
  owners_dir:
    description: The directory of the owners' records; required with I(owner).
    type: path
"""

EXAMPLES = r"""
- name: Open AMQP to the cluster's hosts only, and close the plain port
  firewalld_allow:
    zone: public
    rules:
      - {port: 5671, sources: [198.51.100.20, 198.51.100.0/28]}
      - {port: 5672, sources: []}
"""

RETURN = r"""
owned:
  description: The ports recorded for I(owner) (N/PROTOCOL), when an owner is given.
  returned: when owner is given
  type: list
added:
  description: The rich rules added, per layer (permanent, runtime).
  returned: always
  type: dict
removed:
  description: The rich rules removed, per layer (permanent, runtime).
  returned: always
  type: dict
"""

_RULE = re.compile(
    r'^rule family="(?P<family>ipv4|ipv6)" source address="(?P<source>[^"]+)" '
    r'port port="(?P<port>[0-9]+)" protocol="(?P<protocol>tcp|udp)" accept$'
)


def network(source: str) -> str:
    """SOURCE as a network in its canonical form: an address becomes a one-host network.
    Raises ValueError for anything else, or for a network with host bits set."""
    return str(ipaddress.ip_network(source.strip(), strict=True))


def render(key: tuple[str, int, str]) -> str:
    """The rich rule of (network, port, protocol), as firewall-cmd prints it."""
    source, port, protocol = key
    family = "ipv6" if ":" in source else "ipv4"
    return f'rule family="{family}" source address="{source}" port port="{port}" protocol="{protocol}" accept'


def key_of(line: str) -> tuple[str, int, str] | None:
    """(network, port, protocol) of a printed accept rule of this module's form, else None."""
    found = _RULE.match(line.strip())
    if not found:
        return None
    try:
        source = network(found.group("source"))
    except ValueError:
        return None
    return (source, int(found.group("port")), found.group("protocol"))


def wanted_keys(rules: list[dict[str, Any]]) -> list[tuple[str, int, str]]:
    """Every (network, port, protocol) that RULES list, in their order. Raises ValueError
    naming a source that is not an address or network."""
    keys: list[tuple[str, int, str]] = []
    for rule in rules:
        for source in rule["sources"] or []:
            try:
                key = (network(source), int(rule["port"]), rule.get("protocol") or "tcp")
            except ValueError as err:
                raise ValueError(
                    f"port {rule['port']}: {source!r} is not an address or network ({err})"
                ) from err
            if key not in keys:
                keys.append(key)
    return keys


def plan(
    lines: list[str], rules: list[dict[str, Any]], exclusive: bool, state: str
) -> tuple[list[str], list[str]]:
    """The rules to add and the printed LINES to remove so that the zone's rules (LINES, as
    printed) hold what RULES ask for."""
    wanted = wanted_keys(rules)
    present = {key_of(line): line.strip() for line in lines if line.strip()}
    if state == "absent":
        return [], [present[key] for key in wanted if key in present]
    add = [render(key) for key in wanted if key not in present]
    remove = []
    if exclusive:
        ports = {(int(rule["port"]), rule.get("protocol") or "tcp") for rule in rules}
        for line in lines:
            line = line.strip()
            if line and rule_port(line) in ports and key_of(line) not in wanted:
                remove.append(line)
    return add, remove


def about_ports(lines: list[str], rules: list[dict[str, Any]]) -> str:
    ports = {(int(rule["port"]), rule.get("protocol") or "tcp") for rule in rules}
    return "".join(f"{line}\n" for line in sorted(line.strip() for line in lines) if rule_port(line) in ports)


def record(owners_dir: str, owner: str, zone: str, rules: list[dict[str, Any]]) -> tuple[str, str]:
    """The owner's record as it is and as it should be: (before, after) as JSON text."""
    ports = sorted({f"{int(rule['port'])}/{rule.get('protocol') or 'tcp'}" for rule in rules})
    after = json.dumps({"zone": zone, "ports": ports}, indent=1) + "\n"
    path = Path(owners_dir) / f"{owner}.json"
    before = path.read_text() if path.exists() else ""
    return before, after


def write_record(owners_dir: str, owner: str, text: str) -> None:
    """Write the owner's record under a temporary name first, so a reader never sees half."""
    Path(owners_dir).mkdir(mode=0o755, parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=owners_dir, prefix=f".{owner}.")
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.chmod(temp, 0o644)
    os.replace(temp, Path(owners_dir) / f"{owner}.json")


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "zone": {"type": "str", "default": "public"},
            "rules": {
                "type": "list",
                "elements": "dict",
                "required": True,
                "options": {
                    "port": {"type": "int", "required": True},
                    "protocol": {"type": "str", "choices": ["tcp", "udp"], "default": "tcp"},
                    "sources": {"type": "list", "elements": "str", "required": True},
                },
            },
            "exclusive": {"type": "bool", "default": True},
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
            "owner": {"type": "str"},
            "owners_dir": {"type": "path"},
        },
        required_by={"owner": "owners_dir"},
        supports_check_mode=True,
    )
    zone = module.params["zone"]
    rules = module.params["rules"]
    owner = module.params["owner"]
    if owner and not re.fullmatch(r"[A-Za-z0-9_-]+", owner):
        module.fail_json(msg=f"owner {owner!r}: letters, digits, _ and - only")
    firewall_cmd = zone_command(module, zone)

    result: dict[str, Any] = {"changed": False, "added": {}, "removed": {}, "diff": []}
    for layer in LAYERS:
        lines = firewall_cmd(layer, "--list-rich-rules").splitlines()
        try:
            add, remove = plan(lines, rules, module.params["exclusive"], module.params["state"])
        except ValueError as err:
            module.fail_json(msg=str(err))
        result["added"][layer], result["removed"][layer] = add, remove
        if not add and not remove:
            continue
        result["changed"] = True
        after = [line for line in lines if line.strip() not in remove] + add
        result["diff"].append(
            {
                "before_header": f"zone {zone} ({layer})",
                "after_header": f"zone {zone} ({layer})",
                "before": about_ports(lines, rules),
                "after": about_ports(after, rules),
            }
        )
        if module.check_mode:
            continue
        if remove:
            firewall_cmd(layer, *(f"--remove-rich-rule={line}" for line in remove))
        if add:
            firewall_cmd(layer, *(f"--add-rich-rule={line}" for line in add))
    if owner and module.params["state"] == "present":
        before, after = record(module.params["owners_dir"], owner, zone, rules)
        result["owned"] = json.loads(after)["ports"]
        if before != after:
            result["changed"] = True
            header = f"{module.params['owners_dir']}/{owner}.json"
            result["diff"].append(
                {"before_header": header, "after_header": header, "before": before, "after": after}
            )
            if not module.check_mode:
                write_record(module.params["owners_dir"], owner, after)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
