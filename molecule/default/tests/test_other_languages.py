"""Tasks from other languages over AMQP: the Node.js example (examples/node-client) submits the
tutorial's download from a host of the cluster, with the client hosts' least-privilege user,
over TLS with the cluster's CA, and reads the task's result from its own reply queue.

Node's packages reach the host as Python's do: through the controller (`npm ci` from the
example's lock file there, the installed tree copied over); Node.js itself comes from the
host's Debian packages. On a client host the example reads the app's configuration (as the
operator `deploy`, a member of its group); a scenario without one runs it on its Flower host
with the client user's URL.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile
import tempfile
import uuid
from pathlib import Path

from celerylab import (
    AMQP_PORT,
    BROKERS,
    CA_FILE,
    CLIENTS,
    FLOWERS,
    PROJECT,
    SAMPLE_URL,
    SECRETS,
    WEB,
    WORKERS,
    host,
    inventory_name,
    put_file,
)

EXAMPLE = PROJECT / "examples/node-client"
ON_HOST = "/opt/node-client"


def installed_example() -> bytes:
    """The example with its node_modules, installed on the controller from its lock file, as a
    tar archive."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "node-client"
        work.mkdir()
        for name in ("package.json", "package-lock.json", "submit.js"):
            shutil.copy2(EXAMPLE / name, work / name)
        npm = subprocess.run(
            ["npm", "ci", "--omit=dev", "--no-audit", "--no-fund"],
            cwd=work, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert npm.returncode == 0, npm.stdout + npm.stderr
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w") as tar:
            tar.add(work, arcname="node-client")
        return archive.getvalue()


def install_on(name: str) -> None:
    put_file(name, "/tmp/node-client.tar", installed_example())
    setup = host(name).run(
        "set -e; command -v node >/dev/null || { apt-get update -qq && "
        "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs >/dev/null; }; "
        f"rm -rf {ON_HOST}; mkdir -p /opt; tar -xf /tmp/node-client.tar -C /opt; "
        f"chmod -R a+rX {ON_HOST}; node --version"
    )
    assert setup.rc == 0, setup.stdout + setup.stderr


def client_url() -> str:
    password = (SECRETS / "rabbitmq_client_password").read_text().split()[0]
    return ";".join(f"amqps://downloader-client:{password}@{b}:{AMQP_PORT}/downloader" for b in BROKERS)


def test_the_node_example_submits_a_download_and_reads_its_result() -> None:
    """`node submit.js URL NAME` prints the task's SUCCESS and result; the file is on the worker
    host that the result names, with the bytes the web server serves. Sent with a name that
    the worker refuses (a path out of its directory), the task fails with InvalidFilename
    (exit 1), read from the result too. (Not FileExists for the same name sent again: each
    worker host has a directory of its own, and the second copy may run on another host.)"""
    on = CLIENTS[0] if CLIENTS else FLOWERS[0]
    install_on(on)
    name = f"from-node-{uuid.uuid4().hex[:6]}.bin"
    submit = f"node {ON_HOST}/submit.js %s %s --timeout 60"
    if on in CLIENTS:
        command = f"cd / && sudo -u deploy {submit}"
    else:  # the password in a root-only file, not on a command line
        put_file(on, "/root/node-client.env", f"BROKER_URL='{client_url()}'\nBROKER_CA={CA_FILE}\n".encode())
        command = f"cd / && set -a && . /root/node-client.env && set +a && {submit}"
    sent = host(on).run(command, SAMPLE_URL, name)
    assert sent.rc == 0, sent.stdout + sent.stderr
    outcome = json.loads(sent.stdout.strip().splitlines()[-1])
    assert outcome["state"] == "SUCCESS", outcome
    record = outcome["result"]
    worker = inventory_name(record["host"])
    assert worker in WORKERS, record
    served = host(WEB).check_output("sha256sum /srv/www/sample.bin").split()[0]
    stored = host(worker).check_output("sha256sum %s", record["path"]).split()[0]
    assert stored == served == record["sha256"], (stored, served, record)
    refused = host(on).run(command, SAMPLE_URL, f"../{name}")
    assert refused.rc == 1, refused.stdout + refused.stderr
    failed = json.loads(refused.stdout.strip().splitlines()[-1])
    assert failed["state"] == "FAILURE" and failed["result"]["exc_type"] == "InvalidFilename", failed
