"""Filters of the firewall role (tasks/allow.yml): the rich rules an allow-list wants, in the
exact form `firewall-cmd --list-rich-rules` prints them, and the printed rules of given ports,
so that the rules to add and to remove are found by comparing strings."""

from __future__ import annotations

import re
from typing import Any


def _tail(rule: dict[str, Any]) -> str:
    return f'port port="{int(rule["port"])}" protocol="{rule.get("protocol") or "tcp"}"'


def firewall_rich_rules(rules: list[dict[str, Any]]) -> list[str]:
    """One accept rule per source of each {port, protocol (default tcp), sources} of RULES;
    a source with a colon is IPv6."""
    return [
        f'rule family="{"ipv6" if ":" in source else "ipv4"}" source address="{source}" {_tail(rule)} accept'
        for rule in rules
        for source in rule.get("sources") or []
    ]


def firewall_rules_of_ports(lines: list[str], rules: list[dict[str, Any]]) -> list[str]:
    """The LINES (printed rich rules) about the port and protocol of one of RULES."""
    tails = [re.escape(_tail(rule)) for rule in rules]
    if not tails:
        return []
    pattern = re.compile(rf"(?:^| )(?:{'|'.join(tails)})(?: |$)")
    return [line for line in lines if pattern.search(line)]


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "firewall_rich_rules": firewall_rich_rules,
            "firewall_rules_of_ports": firewall_rules_of_ports,
        }
