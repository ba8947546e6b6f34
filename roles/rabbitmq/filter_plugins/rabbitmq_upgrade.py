"""Filters of the rabbitmq role for playbooks/upgrade-brokers.yml: whether a broker may go from
its installed RabbitMQ version to the one asked for in place, and which versions its package
sources offer.

RabbitMQ supports an in-place (rolling) upgrade from one minor series to the next one only,
with every stable feature flag enabled before it, and never a downgrade
(https://www.rabbitmq.com/docs/upgrade). A release later than the last series below is refused
until the table knows it.
"""

from __future__ import annotations

import re
from typing import Any

SERIES = ["3.8", "3.9", "3.10", "3.11", "3.12", "3.13", "4.0", "4.1", "4.2"]
VERSION = re.compile(r"^([0-9]+)\.([0-9]+)\.([0-9]+)$")


def _parse(version: str) -> tuple[int, int, int] | None:
    found = VERSION.match(str(version).strip())
    return (int(found.group(1)), int(found.group(2)), int(found.group(3))) if found else None


def _path(installed: str, wanted: str) -> list[str]:
    """The series from INSTALLED's to WANTED's, both in SERIES, first to last."""
    start, end = SERIES.index(installed), SERIES.index(wanted)
    return SERIES[start : end + 1]


def rabbitmq_upgrade_step(installed: str, wanted: str) -> dict[str, Any]:
    """What to do on a broker that runs INSTALLED when WANTED is asked for: {action: none |
    upgrade | refuse, why: a sentence}."""
    have, want = _parse(installed), _parse(wanted)
    if have is None or want is None:
        bad = wanted if want is None else installed
        return {"action": "refuse", "why": f"{bad!r} is not a RabbitMQ version of the form X.Y.Z"}
    if have == want:
        return {"action": "none", "why": f"already runs RabbitMQ {installed}"}
    head = f"RabbitMQ {installed} to {wanted} is not a supported upgrade"
    if want < have:
        return {
            "action": "refuse",
            "why": f"{head}: it is a downgrade, which RabbitMQ does not do in place. Rebuild the "
            f"brokers at {wanted} and restore a backup of their definitions (playbooks/restore.yml)",
        }
    have_series, want_series = f"{have[0]}.{have[1]}", f"{want[0]}.{want[1]}"
    if have_series == want_series:
        return {"action": "upgrade", "why": f"a patch release of RabbitMQ {have_series}"}
    unknown = [s for s in (have_series, want_series) if s not in SERIES]
    if unknown:
        return {
            "action": "refuse",
            "why": f"{head}: this project knows the upgrade paths between {SERIES[0]} and "
            f"{SERIES[-1]} only, not {' or '.join(unknown)}",
        }
    path = _path(have_series, want_series)
    if len(path) == 2:
        return {"action": "upgrade", "why": f"the next minor series, {have_series} to {want_series}"}
    return {
        "action": "refuse",
        "why": f"{head}: RabbitMQ goes up one minor series at a time ({' -> '.join(path)}). Upgrade "
        f"to the last {path[1]}.x first, if the OS repositories carry it, then on; or move the "
        f"cluster to new brokers that run {wanted} (README, Operations)",
    }


def rabbitmq_package_versions(listing: str) -> list[str]:
    """The upstream versions (X.Y.Z) in LISTING, sorted: the `Version:` lines of `apt-cache show`
    (3.10.8 of `Version: 1:3.10.8-1.1`), or the lines of `dnf repoquery --queryformat
    '%{version}'` (one version each). Anything else is passed over."""
    found = set()
    for line in str(listing).splitlines():
        text = line.strip()
        if text.startswith("Version:"):
            text = re.sub(r"-[^-]*$", "", re.sub(r"^[0-9]+:", "", text.split(":", 1)[1].strip()))
        parsed = _parse(text)
        if parsed:
            found.add(parsed)
    return [".".join(str(part) for part in version) for version in sorted(found)]


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "rabbitmq_upgrade_step": rabbitmq_upgrade_step,
            "rabbitmq_package_versions": rabbitmq_package_versions,
        }
