#!/usr/bin/python
"""Whether a systemd unit's main process started after its configuration files last changed:
a handler restarts a service only when it runs an older configuration than the one on disk."""

from __future__ import annotations

import os
import time
from typing import Any

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: systemd_started_after
short_description: Whether a unit's main process started after its files last changed
description:
  - Reads the unit's C(ExecMainStartTimestampMonotonic) from systemd and the newest change time
    (of the content or of the inode, owner and mode included) of the listed files and directories,
    and of everything below the directories. A
    directory's time changes when an entry is added, replaced or removed, so a file written
    by a rename or deleted counts as a change too.
  - C(started_after) is true only when the main process is running and started after the
    newest change (a node that booted with the configuration now on disk need not restart).
  - Reads only; check mode is supported.
options:
  unit:
    description: The systemd unit.
    type: str
    required: true
  paths:
    description: Files and directories the service reads at start; missing ones are skipped.
    type: list
    elements: path
    required: true
"""

RETURN = r"""
started_after:
  description: Whether the main process runs and started after the newest change.
  type: bool
started_at:
  description: When the main process started (seconds since the epoch), 0 when it does not run.
  type: float
changed_at:
  description: The newest change time among the paths (seconds since the epoch).
  type: float
"""


def changed(stat: os.stat_result) -> float:
    # The content's time, or the inode's: a new owner or mode (a key made readable to the
    # service) moves only the latter, and needs a restart too.
    return max(stat.st_mtime, stat.st_ctime)


def newest_change(paths: list[str]) -> float:
    newest = 0.0
    for path in paths:
        if not os.path.lexists(path):
            continue
        newest = max(newest, changed(os.lstat(path)))
        if os.path.isdir(path):
            for root, dirs, files in os.walk(path):
                for name in dirs + files:
                    newest = max(newest, changed(os.lstat(os.path.join(root, name))))
    return newest


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "unit": {"type": "str", "required": True},
            "paths": {"type": "list", "elements": "path", "required": True},
        },
        supports_check_mode=True,
    )
    systemctl = module.get_bin_path("systemctl", required=True)
    argv = [systemctl, "show", "--property=MainPID,ExecMainStartTimestampMonotonic", module.params["unit"]]
    rc, out, err = module.run_command(argv)
    if rc != 0:
        module.fail_json(msg=f"{' '.join(argv)} failed (rc {rc}): {(err or out).strip()}")
    shown = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    main_pid = int(shown.get("MainPID") or 0)
    started_mono = int(shown.get("ExecMainStartTimestampMonotonic") or 0) / 1e6
    started_at = 0.0
    if main_pid and started_mono:
        # The monotonic start time, on the wall clock that file times are kept in.
        started_at = time.time() - (time.clock_gettime(time.CLOCK_MONOTONIC) - started_mono)
    changed_at = newest_change(module.params["paths"])
    result: dict[str, Any] = {
        "changed": False,
        "started_after": bool(started_at) and started_at > changed_at,
        "started_at": round(started_at, 6),
        "changed_at": round(changed_at, 6),
    }
    module.exit_json(**result)


if __name__ == "__main__":
    main()
