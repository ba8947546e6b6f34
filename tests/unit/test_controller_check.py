"""playbooks/controller.yml, the first play of site.yml: it stops a controller whose ansible-core
is older than the project's minimum, naming both versions; the minimum is the same wherever it
is stated."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).parents[2]
PLAYBOOK = ROOT / "playbooks/controller.yml"
# The ansible-playbook of the venv that runs the tests, whichever PATH they run with.
ANSIBLE_PLAYBOOK = str(Path(sys.executable).parent / "ansible-playbook")


def run(*extra: str) -> tuple[int, str]:
    # On this controller only (localhost, local connection): no host is reached.
    proc = subprocess.run(
        [ANSIBLE_PLAYBOOK, "-i", "localhost,", "-c", "local", str(PLAYBOOK),
         "-e", f"ansible_python_interpreter={sys.executable}", *extra],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return proc.returncode, proc.stdout + proc.stderr


def minimum() -> str:
    play = yaml.safe_load(PLAYBOOK.read_text(encoding="utf-8"))[0]
    return str(play["vars"]["__controller_min_ansible_core"])


def test_the_pinned_controller_passes_the_check() -> None:
    rc, out = run()
    assert rc == 0, out[-3000:]


def test_an_older_ansible_core_is_stopped_with_both_versions_named() -> None:
    import ansible.release

    rc, out = run("-e", "__controller_min_ansible_core=99.0")
    said = " ".join(out.split())
    assert rc != 0, out[-3000:]
    assert "needs ansible-core 99.0 or newer" in said, out[-3000:]
    assert f"this controller runs {ansible.release.__version__}" in said, out[-3000:]


def test_the_minimum_is_the_same_in_the_check_the_requirements_and_the_roles() -> None:
    want = minimum()
    requirements = (ROOT / "requirements-controller.txt").read_text(encoding="utf-8")
    assert re.search(rf"^ansible-core>={re.escape(want)}\s*$", requirements, re.M), requirements
    for meta in sorted((ROOT / "roles").glob("*/meta/main.yml")):
        info = yaml.safe_load(meta.read_text(encoding="utf-8"))["galaxy_info"]
        assert str(info["min_ansible_version"]) == want, f"{meta}: {info['min_ansible_version']}"
