"""Count, per host, the task results that ran (ok, as the recap counts them, and failed), by
action, and whether the action ran on the host or only on the controller: what bounds a
no-change re-run. Writes JSON to the file named by BENCH_MODULE_RUNS when the playbook ends."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from typing import Any

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = r"""
name: module_runs
type: aggregate
short_description: Per-host counts of task results by action (bench/)
description:
  - Enabled by bench/bench.py; writes nothing unless BENCH_MODULE_RUNS names a file.
"""

# Actions that run on the controller alone: they start no Python on the host.
CONTROLLER_ONLY = {
    "assert",
    "debug",
    "fail",
    "set_fact",
    "include_vars",
    "validate_argument_spec",
    "meta",
    "add_host",
    "group_by",
    "set_stats",
    "include_tasks",
    "include_role",
}


def short(action: str) -> str:
    return action.rsplit(".", 1)[-1]


class CallbackModule(CallbackBase):  # type: ignore[misc]
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "module_runs"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))

    def _count(self, result: Any) -> None:
        task = result._task
        host = result._host.get_name()
        action = short(task.action)
        delegated = task.delegate_to or ""
        where = (
            "controller" if action in CONTROLLER_ONLY or delegated in ("localhost", "127.0.0.1") else "host"
        )
        self.counts[host][f"{where}:{action}"] += 1

    def v2_runner_on_ok(self, result: Any) -> None:
        self._count(result)

    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        self._count(result)

    def v2_playbook_on_stats(self, stats: Any) -> None:
        path = os.environ.get("BENCH_MODULE_RUNS")
        if not path:
            return
        out = {}
        for host, by_action in sorted(self.counts.items()):
            on_host = sum(n for k, n in by_action.items() if k.startswith("host:"))
            out[host] = {
                "total": sum(by_action.values()),
                "on_host": on_host,
                "on_controller": sum(by_action.values()) - on_host,
                "by_action": dict(sorted(by_action.items(), key=lambda kv: -kv[1])),
            }
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(out, handle, indent=1)
