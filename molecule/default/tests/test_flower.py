"""Flower's REST API as the tutorial calls it (curl to async-apply), over HTTPS with credentials."""

from __future__ import annotations

import json
import uuid

from celerylab import (
    FLOWER_URL,
    SAMPLE_URL,
    WORKERS,
    flower_async_apply_download,
    flower_credentials,
    flower_task_state,
    host,
    http,
)


def test_flower_api_with_credentials_runs_the_task(sample_sha256: str) -> None:
    allowed = WORKERS[0]  # of the cluster hosts, the scenario allows worker1 only
    name = f"flower-{uuid.uuid4().hex[:8]}.bin"
    task_id = flower_async_apply_download(allowed, name)
    state, body = flower_task_state(allowed, task_id)
    assert state == "SUCCESS", body
    holders = [w for w in WORKERS if host(w).file(f"/var/lib/downloader/files/{name}").exists]
    assert len(holders) == 1
    assert host(holders[0]).file(f"/var/lib/downloader/files/{name}").sha256sum == sample_sha256


def test_flower_refuses_missing_or_wrong_credentials() -> None:
    url = f"{FLOWER_URL}/api/task/async-apply/downloaderApp.download"
    body = json.dumps({"args": [SAMPLE_URL, "never.bin"]})
    assert http(WORKERS[0], "POST", url, "", body)[0] == 401
    user = flower_credentials().split(":", 1)[0]
    assert http(WORKERS[0], "POST", url, f"{user}:wrong-password", body)[0] == 401
    assert not any(host(w).file("/var/lib/downloader/files/never.bin").exists for w in WORKERS)


def test_flower_healthcheck_answers() -> None:
    status, body = http(WORKERS[0], "GET", f"{FLOWER_URL}/healthcheck")
    assert (status, body.strip()) == (200, "OK")
