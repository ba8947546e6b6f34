"""The README's "An app of your own in a few lines" is what the default scenario deploys: its
inventory blocks are the scenario's (the source path aside, which is where the scenario's
prepare step writes the app), the app it writes out is a Python project whose module is the
entry's `module`, with a lock pinning its dependencies, and cluster_apps' own validation accepts
the README's entry. (The scenario's converge builds and installs it.)"""

from __future__ import annotations

import re
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from file_module import load

ROOT = Path(__file__).parents[2]
SCENARIO = ROOT / "molecule/default/molecule.yml"


readme_app = load("molecule/shared/tests/readme_app.py")
apps_filters = load("roles/cluster/filter_plugins/cluster_apps.py")
README = (ROOT / "README.md").read_text()


@cache
def scenario() -> dict[str, Any]:
    # Molecule fills ${...} in from its environment; the values do not matter here.
    text = re.sub(r"\$\{(\w+)[^}]*\}", r"/\1", SCENARIO.read_text())
    found: dict[str, Any] = yaml.safe_load(text)
    return found


def test_the_scenario_deploys_the_readme_entry_from_the_written_source() -> None:
    readme_apps = readme_app.inventory(README)["group_vars/all.yml"]["cluster_apps"]
    inventory = scenario()["provisioner"]["inventory"]
    scenario_apps = {app["id"]: app for app in inventory["group_vars"]["all"]["cluster_apps"]}
    for app in readme_apps:
        if app["id"] == "greeter":
            assert app["source"] == "/srv/src/greeter-app"
            app = {**app, "source": "/MOLECULE_EPHEMERAL_DIRECTORY/greeter-app"}
        assert scenario_apps[app["id"]] == app, app["id"]
    assert "greeter" in scenario_apps, "the scenario does not deploy the README's app"


def test_the_scenario_group_is_the_readme_group() -> None:
    """Its variables are the README's, those that `workers` also sets (concurrency) in the
    group's host's host_vars (molecule's groups sit side by side)."""
    readme_group = readme_app.inventory(README)["group_vars/greeter_workers.yml"]
    inventory = scenario()["provisioner"]["inventory"]
    hosts = [p["name"] for p in scenario()["platforms"] if "greeter_workers" in p.get("groups", [])]
    assert hosts, "no host in greeter_workers"
    for name in hosts:
        given = {**inventory["group_vars"]["greeter_workers"], **inventory["host_vars"][name]}
        given.pop("ansible_host")
        assert given == readme_group, name
        assert "workers" in next(p["groups"] for p in scenario()["platforms"] if p["name"] == name)


def test_the_readme_entry_passes_validation() -> None:
    apps = readme_app.inventory(README)["group_vars/all.yml"]["cluster_apps"]
    assert apps_filters.cluster_apps_problems(apps, "celery-cluster.beat-lock") == []


def test_the_written_app_is_a_project_with_its_module_and_lock(tmp_path: Path) -> None:
    root, changed = readme_app.write_app(tmp_path, README)
    assert changed
    assert sorted(p.name for p in root.iterdir()) == ["greeterApp.py", "pyproject.toml", "requirements.lock"]
    project = tomllib.loads((root / "pyproject.toml").read_text())
    (entry,) = [
        a for a in readme_app.inventory(README)["group_vars/all.yml"]["cluster_apps"] if a["id"] == "greeter"
    ]
    assert project["tool"]["setuptools"]["py-modules"] == [entry["module"]]
    source = (root / f"{entry['module']}.py").read_text()
    assert 'config_from_envvar("CELERY_CONFIG_MODULE")' in source
    compile(source, f"{entry['module']}.py", "exec")
    lock = (root / "requirements.lock").read_text()
    pins = dict(re.findall(r"^([\w.-]+)==(\S+)", lock, re.M))
    for requirement in project["project"]["dependencies"]:
        name, version = requirement.split("==")
        assert pins[name] == version, f"the lock does not pin {requirement}"
    # A second write of the same README writes nothing (prepare reports no change).
    assert readme_app.write_app(tmp_path, README) == (root, False)


def test_the_command_calls_the_app_with_its_configuration() -> None:
    command = readme_app.command(README)
    assert "CELERY_CONFIG_MODULE=celeryconfig PYTHONPATH=/etc/greeter /opt/greeter/venv/bin/python" in command
    assert "greeterApp.greet.delay" in command and "\\" not in command
