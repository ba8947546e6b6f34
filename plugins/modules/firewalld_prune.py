#!/usr/bin/python
"""Remove from a firewalld zone what no owner asked for and the operator did not keep."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.celery_firewalld import LAYERS, rule_port, sshd_ports, zone_command, zone_info

DOCUMENTATION = r"""
module: firewalld_prune
short_description: Remove from a firewalld zone what no owner asked for
description:
  - Reads the zone's ports, source ports, protocols, forward-ports, sources and rich rules once
    (permanent and in force) and removes, in both layers, every item that is neither kept nor
    owned.
  - Owned are the rich rules about a port that an owner recorded (firewalld_allow's I(owner)
    writes a record of the ports it manages into I(owners_dir)); that owner alone decides which
    sources such a port admits.
  - The ports sshd listens on (C(sshd -T)) and I(ssh_ports) are always kept, so that no run
    locks the operator out.
  - Check mode and diff are supported. firewalld must be running.
options:
  zone:
    description: The firewalld zone.
    type: str
    default: public
  owners_dir:
    description: The directory of the owners' records (C(OWNER.json), written by firewalld_allow).
    type: path
    required: true
  ssh_ports:
    description: TCP ports kept open besides sshd's own (the port Ansible came in on).
    type: list
    elements: int
    default: []
  keep:
    description: What the operator keeps, each item as firewall-cmd prints it.
    type: dict
    default: {}
    options:
      ports: {description: "Ports, e.g. C(8080/tcp).", type: list, elements: str, default: []}
      source_ports: {description: "Source ports, e.g. C(53/udp).", type: list, elements: str, default: []}
      protocols: {description: "Protocols, e.g. C(gre).", type: list, elements: str, default: []}
      forward_ports:
        description: "Forward-ports, e.g. C(port=80:proto=tcp:toport=8080:toaddr=)."
        type: list
        elements: str
        default: []
      sources:
        description: Zone sources (addresses or networks bound to the zone).
        type: list
        elements: str
        default: []
      rich_rules:
        description: Rich rules, as C(firewall-cmd --list-rich-rules) prints them.
        type: list
        elements: str
        default: []
"""

EXAMPLES = r"""
- name: Remove from the zone what no role opened
  firewalld_prune:
    zone: public
    owners_dir: /etc/firewalld/cluster-owners
    ssh_ports: [22]
    keep:
      ports: [8080/tcp]
"""

RETURN = r"""
removed:
  description: What was removed, per layer (permanent, runtime) and kind.
  returned: always
  type: dict
"""

# kind: (its key in `firewall-cmd --list-all`, the option that removes one)
KINDS = {
    "ports": ("ports", "--remove-port"),
    "source_ports": ("source-ports", "--remove-source-port"),
    "protocols": ("protocols", "--remove-protocol"),
    "forward_ports": ("forward-ports", "--remove-forward-port"),
    "sources": ("sources", "--remove-source"),
    "rich_rules": ("rich rules", "--remove-rich-rule"),
}


def port_name(rule: str) -> str | None:
    """The port a rich rule is about, as N/PROTOCOL, if it names one."""
    port = rule_port(rule)
    return f"{port[0]}/{port[1]}" if port else None


def owned_ports(owners_dir: Path, zone: str) -> set[str]:
    """Every port (N/PROTOCOL) that an owner's record for ZONE names."""
    owned: set[str] = set()
    for record in sorted(owners_dir.glob("*.json")) if owners_dir.is_dir() else []:
        data = json.loads(record.read_text())
        if data.get("zone") == zone:
            owned.update(str(port) for port in data.get("ports", []))
    return owned


def plan(present: dict[str, list[str]], keep: dict[str, list[str]], owned: set[str]) -> dict[str, list[str]]:
    """What to remove, per kind, from a layer holding PRESENT."""
    remove: dict[str, list[str]] = {}
    for kind, found in present.items():
        kept = set(keep.get(kind) or [])
        if kind == "rich_rules":
            gone = [r for r in found if r not in kept and port_name(r) not in owned]
        else:
            gone = [item for item in found if item not in kept]
        if gone:
            remove[kind] = gone
    return remove


def main() -> None:
    keep_options = {kind: {"type": "list", "elements": "str", "default": []} for kind in KINDS}
    module = AnsibleModule(
        argument_spec={
            "zone": {"type": "str", "default": "public"},
            "owners_dir": {"type": "path", "required": True},
            "ssh_ports": {"type": "list", "elements": "int", "default": []},
            "keep": {"type": "dict", "default": {}, "options": keep_options},
        },
        supports_check_mode=True,
    )
    zone = module.params["zone"]
    firewall_cmd = zone_command(module, zone)

    keep = {kind: list(values or []) for kind, values in (module.params["keep"] or {}).items()}
    ssh = set(module.params["ssh_ports"]) | sshd_ports(module)
    keep["ports"] = keep.get("ports", []) + [f"{port}/tcp" for port in sorted(ssh)]
    try:
        owned = owned_ports(Path(module.params["owners_dir"]), zone)
    except (OSError, ValueError) as err:
        module.fail_json(msg=f"cannot read the owners' records in {module.params['owners_dir']}: {err}")

    result: dict[str, Any] = {"changed": False, "removed": {}, "diff": []}
    for layer in LAYERS:
        info = zone_info(firewall_cmd(layer, "--list-all"))
        present = {kind: info.get(key, []) for kind, (key, _remove) in KINDS.items()}
        remove = plan(present, keep, owned)
        result["removed"][layer] = remove
        if not remove:
            continue
        result["changed"] = True
        result["diff"].append(
            {
                "before_header": f"zone {zone} ({layer})",
                "after_header": f"zone {zone} ({layer})",
                "before": "".join(f"{kind}: {item}\n" for kind, gone in remove.items() for item in gone),
                "after": "",
            }
        )
        if module.check_mode:
            continue
        for kind, gone in remove.items():
            firewall_cmd(layer, *(f"{KINDS[kind][1]}={item}" for item in gone))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
