"""What the project's firewalld modules (firewalld_allow, firewalld_prune, firewalld_zone) share:
the two layers of a zone, the port a rich rule is about, a zone's listing read, firewall-cmd run
for one zone, and the ports sshd listens on."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

# Permanent first: a failure then leaves the rules in force as they were.
LAYERS = ("permanent", "runtime")
_PORT = re.compile(r'(?:^| )port port="([0-9]+)" protocol="(tcp|udp)"(?: |$)')


def rule_port(rule: str) -> tuple[int, str] | None:
    """The (port, protocol) a printed rich rule is about, if it names one."""
    found = _PORT.search(rule)
    return (int(found.group(1)), found.group(2)) if found else None


def zone_info(listing: str) -> dict[str, list[str]]:
    """`firewall-cmd --list-all` of a zone, as {key: items}: "  services: dhcpv6-client ssh" gives
    services: [dhcpv6-client, ssh]; the items of rich rules and forward-ports (one per line,
    tab-indented below their key) are whole lines. The zone's own line is passed over."""
    info: dict[str, list[str]] = {}
    key = None
    for line in listing.splitlines():
        if line.startswith("\t") and key is not None:
            if line.strip():
                info[key].append(line.strip())
            continue
        name, colon, value = line.strip().partition(":")
        if not line.startswith(" ") or not colon:
            key = None
            continue
        key = name
        value = value.strip()
        info[key] = ([value] if value else []) if key == "rich rules" else value.split()
    return info


def run_firewall_cmd(module: Any, *args: str) -> str:
    """firewall-cmd with ARGS: its output. The module fails, naming the command, when
    firewall-cmd does."""
    argv = [module.get_bin_path("firewall-cmd", required=True), *args]
    rc, out, err = module.run_command(argv)
    if rc != 0:
        module.fail_json(msg=f"{' '.join(argv)} failed (rc {rc}): {(err or out).strip()}")
    return str(out)


def zone_command(module: Any, zone: str) -> Callable[..., str]:
    """firewall-cmd for ZONE, called with a layer and its arguments (run_firewall_cmd)."""

    def firewall_cmd(layer: str, *args: str) -> str:
        permanent = ["--permanent"] if layer == "permanent" else []
        return run_firewall_cmd(module, *permanent, f"--zone={zone}", *args)

    return firewall_cmd


def sshd_ports(module: Any) -> set[int]:
    """The TCP ports this host's sshd listens on (`sshd -T`); none when it cannot say."""
    sshd = module.get_bin_path("sshd", opt_dirs=["/usr/sbin"])
    if not sshd:
        return set()
    rc, out, _err = module.run_command([sshd, "-T"])
    if rc != 0:
        return set()
    return {int(line.split()[1]) for line in out.splitlines() if line.startswith("port ")}
