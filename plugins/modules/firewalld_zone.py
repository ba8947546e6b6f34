#!/usr/bin/python
"""A firewalld zone's SSH ports, target and services, read once and changed where they differ."""

from __future__ import annotations

from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.celery_firewalld import (
    LAYERS,
    run_firewall_cmd,
    sshd_ports,
    zone_command,
    zone_info,
)

DOCUMENTATION = r"""
module: firewalld_zone
short_description: Keep SSH open, set a firewalld zone's target and exactly its services
description:
  - Reads the zone's target, ports and services with one C(firewall-cmd --list-all) per layer
    (permanent and in force), and changes only what differs, in this order.
  - First the SSH ports (I(ssh_ports) and those sshd listens on, C(sshd -T)) are opened to
    every source in both layers, so that nothing after them can lock the operator out.
  - Then the target, which firewalld keeps in the permanent layer only; the module puts a
    changed target in force with C(firewall-cmd --reload) (every rule of the project's modules
    is permanent too, so the reload drops none of them).
  - Then the services, in both layers, become exactly I(services).
  - Check mode and diff are supported. firewalld must be running.
options:
  zone:
    description: The firewalld zone.
    type: str
    default: public
  target:
    description: What the zone does with traffic that no service, port or rule names.
    type: str
    required: true
  services:
    description: The firewalld services the zone opens; every other service is removed.
    type: list
    elements: str
    required: true
  ssh_ports:
    description: TCP ports kept open besides sshd's own (the port Ansible came in on).
    type: list
    elements: int
    default: []
"""

EXAMPLES = r"""
- name: Keep SSH open, drop the rest, open only ssh
  firewalld_zone:
    zone: public
    target: DROP
    services: [ssh]
    ssh_ports: [22]
"""

RETURN = r"""
ports_added:
  description: The SSH ports (N/tcp) opened, per layer (permanent, runtime).
  returned: always
  type: dict
target:
  description: The zone's target before the run (permanent).
  returned: always
  type: str
services:
  description: The services added and removed, per layer.
  returned: always
  type: dict
"""


def plan(present: list[str], wanted: list[str]) -> tuple[list[str], list[str]]:
    """(to add, to remove) for a layer holding PRESENT that should hold exactly WANTED."""
    return [item for item in wanted if item not in present], [item for item in present if item not in wanted]


def describe(target: str, ports: list[str], services: list[str]) -> str:
    return f"target: {target}\nports: {' '.join(sorted(ports))}\nservices: {' '.join(sorted(services))}\n"


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "zone": {"type": "str", "default": "public"},
            "target": {"type": "str", "required": True},
            "services": {"type": "list", "elements": "str", "required": True},
            "ssh_ports": {"type": "list", "elements": "int", "default": []},
        },
        supports_check_mode=True,
    )
    zone, target = module.params["zone"], module.params["target"]
    services = list(dict.fromkeys(module.params["services"]))
    firewall_cmd = zone_command(module, zone)
    ssh = [f"{port}/tcp" for port in sorted(set(module.params["ssh_ports"]) | sshd_ports(module))]

    listings = {layer: zone_info(firewall_cmd(layer, "--list-all")) for layer in LAYERS}
    had_target = "".join(listings["permanent"].get("target", []))
    result: dict[str, Any] = {
        "changed": False,
        "target": had_target,
        "ports_added": {},
        "services": {},
        "diff": [],
    }
    for layer in LAYERS:
        ports, present = listings[layer].get("ports", []), listings[layer].get("services", [])
        add_ports = [port for port in ssh if port not in ports]
        add, remove = plan(present, services)
        result["ports_added"][layer] = add_ports
        result["services"][layer] = {"added": add, "removed": remove}
        new_target = target if layer == "permanent" else had_target
        if not (add_ports or add or remove) and new_target == had_target:
            continue
        result["changed"] = True
        kept = [service for service in present if service not in remove]
        result["diff"].append(
            {
                "before_header": f"zone {zone} ({layer})",
                "after_header": f"zone {zone} ({layer})",
                "before": describe(had_target, ports, present),
                "after": describe(new_target, ports + add_ports, kept + add),
            }
        )
        if module.check_mode:
            continue
        if add_ports:
            firewall_cmd(layer, *(f"--add-port={port}" for port in add_ports))
        if layer == "permanent" and had_target != target:
            firewall_cmd(layer, f"--set-target={target}")
        if add:
            firewall_cmd(layer, *(f"--add-service={service}" for service in add))
        if remove:
            firewall_cmd(layer, *(f"--remove-service={service}" for service in remove))
    if had_target != target and not module.check_mode:
        run_firewall_cmd(module, "--reload")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
