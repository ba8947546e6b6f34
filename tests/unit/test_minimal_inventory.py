"""The first plays of site.yml (facts, pki, validate) accept an inventory that sets only the
three groups (and a second cluster's broker, as during a move to new brokers) and each host's
address: every optional variable (celery_client_sources, the TLS files, the passwords) left to
its default. All on this controller: every host is reached with the local connection, so no
address is ever sent anything."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).parents[2]
ANSIBLE_PLAYBOOK = str(Path(sys.executable).parent / "ansible-playbook")
# Documentation addresses (RFC 5737), written into allow-lists and certificates only.
HOSTS = {
    "brokers": ("b1.example.test", "192.0.2.1"),
    "workers": ("w1.example.test", "192.0.2.2"),
    "flower": ("f1.example.test", "192.0.2.3"),
    "brokers_next": ("b2.example.test", "192.0.2.4"),
}


def ansible_playbook(inventory: Path, *args: str) -> tuple[int, str]:
    """ansible-playbook -i INVENTORY ARGS: its exit code and its output."""
    proc = subprocess.run(
        [ANSIBLE_PLAYBOOK, "-i", str(inventory), *args],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    return proc.returncode, proc.stdout + proc.stderr


def test_a_minimal_inventory_passes_the_checks_before_any_change(tmp_path: Path) -> None:
    inventory = {
        "all": {
            "vars": {
                "ansible_connection": "local",
                "ansible_python_interpreter": sys.executable,
                # Nothing here needs root: the test runs on controllers without sudo too.
                "ansible_become": False,
            },
            "children": {
                group: {"hosts": {name: {"cluster_address": address}}}
                for group, (name, address) in HOSTS.items()
            },
        }
    }
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(inventory))
    plays = [str(ROOT / "playbooks" / p) for p in ("facts.yml", "pki.yml", "validate.yml")]
    rc, out = ansible_playbook(tmp_path / "hosts.yml", *plays)
    assert rc == 0, out[-4000:]
    recap = [line for line in out.splitlines() if " : ok=" in line]
    assert len(recap) == len(HOSTS) * len(plays) and all("failed=0" in line for line in recap), recap
    # What the run made is the controller's, beside the inventory: the CA and each host's files.
    assert sorted(p.name for p in (tmp_path / ".secrets/pki").glob("*.crt")) == sorted(
        ["ca.crt"] + [f"{name}.crt" for name, _ in HOSTS.values()]
    )
    # The same inventory with a version that YAML read as a number (3.10 unquoted is 3.1): the
    # validation play stops the run, saying what to write.
    version = ["-e", '{"rabbitmq_version": 3.10}']
    rc, out = ansible_playbook(tmp_path / "hosts.yml", plays[0], plays[2], *version)
    said = " ".join(out.split())
    assert rc != 0 and 'rabbitmq_version must be a whole upstream version such as "3.10.8"' in said, said[
        -3000:
    ]
    # A second app on the first one's vhost: one app's users would reach the other's queues.
    apps = [
        "-e",
        json.dumps(
            {
                "cluster_apps": [
                    {"id": "downloader"},
                    {
                        "id": "reports",
                        "module": "reportsApp",
                        "source": "/srv/reports",
                        "vhost": "downloader",
                    },
                ]
            }
        ),
    ]
    rc, out = ansible_playbook(tmp_path / "hosts.yml", plays[0], plays[2], *apps)
    said = " ".join(out.split())
    assert rc != 0 and "cluster_apps: two apps have the vhost downloader" in said, said[-3000:]
    # A schedule for an app that no worker host runs.
    scheduled = {"id": "reports", "module": "reportsApp", "source": "/srv/reports"}
    scheduled["beat_schedule"] = {"tick": {"task": "reportsApp.tick", "every": 60}}
    unscheduled = ["-e", json.dumps({"cluster_apps": [{"id": "downloader"}, scheduled]})]
    rc, out = ansible_playbook(tmp_path / "hosts.yml", plays[0], plays[2], *unscheduled)
    said = " ".join(out.split())
    assert rc != 0 and "reports has a beat_schedule, but no host of `workers`" in said, said[-3000:]
    # A worker host of an app that the list does not have.
    rc, out = ansible_playbook(tmp_path / "hosts.yml", plays[0], plays[2], "-e", "cluster_app=reprots")
    said = " ".join(out.split())
    assert rc != 0 and 'w1.example.test: cluster_app is "reprots", which is not the id of an app' in said, (
        said[-3000:]
    )
    # A worker group given a queue its app does not have.
    rc, out = ansible_playbook(
        tmp_path / "hosts.yml",
        plays[0],
        plays[2],
        "-e",
        json.dumps({"celery_worker_queues": ["celery", "selery"]}),
    )
    said = " ".join(out.split())
    assert rc != 0 and "celery_worker_queues names selery, which the app downloader does not have" in said, (
        said[-3000:]
    )
    # The single app's vhost variable of earlier releases: its entry's key now.
    rc, out = ansible_playbook(tmp_path / "hosts.yml", plays[0], plays[2], "-e", "rabbitmq_vhost=tasks")
    said = " ".join(out.split())
    assert rc != 0 and "rabbitmq_vhost is no longer read" in said, said[-3000:]
    # A move to b2 under way (move-brokers.yml's record): site.yml would put the app hosts that
    # switched back on b1, so the validation play stops the run.
    record = {"state": "switching", "from": ["b1.example.test"], "to": ["b2.example.test"]}
    (tmp_path / ".secrets/brokers-move.json").write_text(json.dumps(record))
    rc, out = ansible_playbook(tmp_path / "hosts.yml", plays[0], plays[2])
    said = " ".join(out.split())
    assert rc != 0 and "finish the move with ansible-playbook playbooks/move-brokers.yml" in said, said[
        -3000:
    ]
