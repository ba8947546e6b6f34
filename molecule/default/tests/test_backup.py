"""Backup and restore: playbooks/backup.yml writes one archive of the brokers' definitions and
the controller's secrets; after the broker was wiped and the controller lost its secrets,
playbooks/restore.yml from that archive brings back the same credentials, CA and definitions,
and the tutorial's client code works again as it did.

This module runs first in the scenario: every test after it runs against the restored cluster.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import stat
import tarfile
import uuid
from pathlib import Path

from celerylab import (
    BROKERS,
    FLOWERS,
    INVENTORY,
    SECRETS,
    WORKERS,
    flower_async_apply_download,
    flower_task_state,
    host,
    run_playbook,
    tutorial_download,
)


def digests(directory: Path) -> dict[str, str]:
    """Every file under DIRECTORY (relative name) with the SHA-256 of its bytes."""
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def vhosts(broker: str) -> set[str]:
    out = host(broker).check_output("rabbitmqctl list_vhosts --formatter json")
    return {entry["name"] for entry in json.loads(out)}


def test_a_wiped_broker_and_a_lost_controller_are_restored_from_a_backup() -> None:
    """A vhost of the operator's own (ops-extra) is added, backup.yml writes its archive (mode
    0600 in a directory of mode 0700, with definitions.json naming both vhosts and the app's
    users, and secrets/ equal to the controller's). Then the broker's data directory is
    wiped and the controller's secrets moved away; restore.yml from the archive, limited to the
    brokers and Flower, puts the same secrets back byte for byte, and the broker has the app's
    vhost and the operator's again; the tutorial's download.delay() from the Flower host,
    whose configuration no run changed, completes on a worker; and Flower, which the broker
    refused for minutes and the restore restarted, reports a task submitted
    through its API as done within 30 s."""
    broker = BROKERS[0]
    host(broker).check_output("rabbitmqctl add_vhost ops-extra")
    secrets_before = digests(SECRETS)
    out = run_playbook("playbooks/backup.yml", "-i", INVENTORY)
    found = re.search(r"Backup written: (\S+\.tar\.gz)", out)
    assert found, out[-3000:]
    archive = Path(found.group(1))
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600, oct(archive.stat().st_mode)
    assert stat.S_IMODE(archive.parent.stat().st_mode) == 0o700
    with tarfile.open(archive) as tar:
        definitions = json.load(tar.extractfile("definitions.json"))  # type: ignore[arg-type]
        archived = {
            member.name.removeprefix("secrets/"): hashlib.sha256(tar.extractfile(member).read()).hexdigest()  # type: ignore[union-attr]
            for member in tar.getmembers()
            if member.isfile() and member.name.startswith("secrets/")
        }
    assert {"downloader", "ops-extra"} <= {v["name"] for v in definitions["vhosts"]}
    assert {"downloader", "downloader-flower", "downloader-client"} <= {
        u["name"] for u in definitions["users"]
    }
    assert archived == secrets_before

    lost = SECRETS.with_name(f".secrets-lost-{uuid.uuid4().hex[:6]}")
    try:
        wipe = "systemctl stop rabbitmq-server && rm -rf /var/lib/rabbitmq/mnesia"
        host(broker).check_output(f"{wipe} && systemctl start rabbitmq-server")
        assert "downloader" not in vhosts(broker), "the broker was not wiped"
        SECRETS.rename(lost)
        # Only the broker was wiped: the restore converges the brokers, and Flower, which it
        # restarts; the other hosts keep the configuration that the same secrets made.
        restore = ("playbooks/restore.yml", "-i", INVENTORY, "-e", f"backup_archive={archive}")
        run_playbook(*restore, "--limit", "brokers:flower")
    finally:
        if not SECRETS.exists():  # a failed restore: the later tests need the secrets
            lost.rename(SECRETS)
    assert digests(SECRETS) == secrets_before
    assert {"downloader", "ops-extra"} <= vhosts(broker)
    record = tutorial_download(FLOWERS[0], f"restored-{uuid.uuid4().hex[:6]}.bin")
    assert record["host"] in WORKERS, record
    # Flower, refused by the wiped broker for minutes, sees the tasks again at once.
    task_id = flower_async_apply_download(WORKERS[0], f"restored-{uuid.uuid4().hex[:6]}.bin")
    state, body = flower_task_state(WORKERS[0], task_id, timeout=30)
    assert state == "SUCCESS", body
    host(broker).check_output("rabbitmqctl delete_vhost ops-extra")
    shutil.rmtree(lost, ignore_errors=True)
