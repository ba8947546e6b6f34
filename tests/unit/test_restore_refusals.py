"""playbooks/restore.yml refuses a missing or foreign archive before it changes anything on
the controller: no secrets directory is made or moved. Every task of that first play runs on
the controller (the broker is only named, never reached)."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[2]
ANSIBLE_PLAYBOOK = str(Path(sys.executable).parent / "ansible-playbook")


def restore(inventory_dir: Path, archive: Path) -> subprocess.CompletedProcess[str]:
    inventory = {
        "all": {
            "vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable},
            "children": {"brokers": {"hosts": {"b1.example.test": {}}}},
        }
    }
    inventory_dir.mkdir(exist_ok=True)
    (inventory_dir / "hosts.yml").write_text(yaml.safe_dump(inventory))
    playbook = str(ROOT / "playbooks/restore.yml")
    return subprocess.run(
        [
            ANSIBLE_PLAYBOOK,
            "-i",
            str(inventory_dir / "hosts.yml"),
            playbook,
            "-e",
            f"backup_archive={archive}",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )


@pytest.mark.parametrize("kind", ["missing", "foreign"])
def test_a_refused_archive_leaves_the_controller_as_it_was(tmp_path: Path, kind: str) -> None:
    archive = tmp_path / "backup.tar.gz"
    if kind == "foreign":
        (tmp_path / "notes.txt").write_text("not a backup\n")
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(tmp_path / "notes.txt", arcname="notes.txt")
    inventory_dir = tmp_path / "inventory"
    proc = restore(inventory_dir, archive)
    assert proc.returncode != 0
    expected = "no such file" if kind == "missing" else "not an archive of\nplaybooks/backup.yml"
    assert " ".join(expected.split()) in " ".join(proc.stdout.split()), proc.stdout[-3000:]
    assert sorted(p.name for p in inventory_dir.iterdir()) == ["hosts.yml"]
