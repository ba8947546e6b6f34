"""Running one of the project's modules (plugins/modules) as Ansible runs it: its arguments in a
JSON file, its result as JSON on stdout; with stand-in commands first on PATH."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import ansible.module_utils

MODULES = Path(__file__).parents[2] / "plugins/modules"
# The project's own module_utils, found where Ansible puts them for a module run
# (ansible.module_utils.NAME): for the modules loaded in the tests' process, and in theirs.
MODULE_UTILS = str(Path(__file__).parents[2] / "plugins/module_utils")
ansible.module_utils.__path__.append(MODULE_UTILS)
_RUN = (
    "import runpy, sys, ansible.module_utils; ansible.module_utils.__path__.append(sys.argv[1]); "
    "sys.argv = sys.argv[2:]; runpy.run_path(sys.argv[0], run_name='__main__')"
)


# For a stand-in firewall-cmd that holds a layer of the zone in `zone` (a dict of lists, and
# its target) and its arguments in `args`: `--list-all` printed as firewalld prints it.
LIST_ALL = """if args[-1] == "--list-all":
    print("public (active)")
    print("  target: " + zone.get("target", "default"))
    for key, name in (("sources", "sources"), ("services", "services"), ("ports", "ports"),
                      ("protocols", "protocols"), ("source-ports", "source_ports")):
        print("  %s: %s" % (key, " ".join(zone.get(name, []))))
    for key, name in (("forward-ports", "forward_ports"), ("rich rules", "rich_rules")):
        items = zone.get(name, [])
        print("  %s: " % key + ("\\n\\t" if items else "") + "\\n\\t".join(items))
    sys.exit(0)
"""


def stand_in(bindir: Path, name: str, script: str) -> None:
    """SCRIPT as the command NAME in BINDIR."""
    bindir.mkdir(parents=True, exist_ok=True)
    (bindir / name).write_text(script)
    (bindir / name).chmod(0o755)


def run_module(
    module: str,
    workdir: Path,
    params: dict[str, Any],
    *,
    check: bool = False,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """plugins/modules/MODULE.py run with PARAMS (check mode and diff as asked), WORKDIR/bin first
    on PATH and ENV added to the environment; its result."""
    args = workdir / "args.json"
    args.write_text(
        json.dumps({"ANSIBLE_MODULE_ARGS": {**params, "_ansible_check_mode": check, "_ansible_diff": True}})
    )
    environment = {**os.environ, **(env or {}), "PATH": f"{workdir / 'bin'}:{os.environ['PATH']}"}
    proc = subprocess.run(
        [sys.executable, "-c", _RUN, MODULE_UTILS, str(MODULES / f"{module}.py"), str(args)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
    )
    result: dict[str, Any] = json.loads(proc.stdout)
    return result
