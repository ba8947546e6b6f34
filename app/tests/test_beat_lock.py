"""The cluster's scheduler lock (roles/celery_worker/files/celery-beat-lock.py, which the
celery_worker role runs as celery-beat-ID on every worker host of an app with a schedule), with
this app against the real broker: of two copies one runs its command at a time; the holder
stopped, the other starts its command after the grace, never overlapping; a holder whose link
to the broker goes silent kills its command before the broker gives the lock to the other; a
command that ends on its own ends the lock program with its exit code (systemd starts it
again)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from support import FreezingProxy

LOCK_PROGRAM = Path(__file__).resolve().parents[2] / "roles/celery_worker/files/celery-beat-lock.py"
GRACE = 1.0
# The stand-in scheduler: notes its start and its stop (on TERM) in LOG as NAME, and its pid in
# NAME.pid beside LOG.
SCHEDULER = """
import os, signal, sys, time
log, name = sys.argv[1], sys.argv[2]
with open(os.path.join(os.path.dirname(log), name + ".pid"), "w") as pid:
    pid.write(str(os.getpid()))
def note(what):
    with open(log, "a") as out:
        out.write(f"{time.time():.3f} {name} {what}\\n")
def stop(*_):
    note("stop")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
note("start")
while True:
    time.sleep(0.05)
"""


class Copies:
    """Copies of the lock program on one lock queue, each with a stand-in scheduler."""

    def __init__(self, work: Path) -> None:
        self.lock = f"beat-lock-test-{uuid.uuid4().hex[:8]}"
        self.log = work / "schedulers.log"
        self.work = work
        self.running: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, *command: str, broker: str | None = None) -> subprocess.Popen[bytes]:
        """A copy named NAME running COMMAND (the stand-in scheduler by default), connected to
        BROKER (default: the tests' broker, from the configuration file)."""
        scheduler = command or (sys.executable, "-c", SCHEDULER, str(self.log), name)
        options = ["--poll", "0.2", "--lease", "1.5", "--heartbeat", "3", "--stop-timeout", "1"]
        options += ["--grace", str(GRACE)]
        proc = subprocess.Popen(
            [sys.executable, str(LOCK_PROGRAM), "--app", "downloaderApp", "--lock", self.lock,
             *options, "--retry", "0.3", "--", *scheduler],
            env={**os.environ, "DOWNLOADER_BROKER_URL": broker} if broker else None,
            stdout=subprocess.DEVNULL,
            stderr=(self.work / f"{name}.err").open("wb"),
            start_new_session=True,  # its scheduler too goes with the group at the end
        )  # fmt: skip
        self.running.append(proc)
        return proc

    def notes(self) -> list[tuple[float, str, str]]:
        if not self.log.exists():
            return []
        fields = (line.split() for line in self.log.read_text().split("\n") if line)
        return [(float(t), name, what) for t, name, what in fields]

    def wait_for(self, note: tuple[str, str], seconds: float) -> float:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for at, name, what in self.notes():
                if (name, what) == note:
                    return at
            time.sleep(0.1)
        errors = {p.name: p.read_text()[-2000:] for p in self.work.glob("*.err")}
        raise AssertionError(f"no {note} within {seconds} s: {self.notes()} {errors}")


@pytest.fixture
def copies(broker: str, tmp_path: Path) -> Iterator[Copies]:
    made = Copies(tmp_path)
    yield made
    for proc in made.running:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_one_copy_runs_the_scheduler_and_hands_over_when_stopped(copies: Copies) -> None:
    a = copies.start("a")
    copies.wait_for(("a", "start"), 20)
    copies.start("b")
    time.sleep(3)
    assert [(name, what) for _, name, what in copies.notes()] == [("a", "start")]
    a.send_signal(signal.SIGTERM)
    assert a.wait(15) == 0
    stopped = copies.wait_for(("a", "stop"), 1)
    started = copies.wait_for(("b", "start"), 20)
    # b took the lock once a had stopped its scheduler and let it go, then waited the grace.
    assert started - stopped >= GRACE, copies.notes()
    copies.start("c")
    time.sleep(3)
    seen = [(name, what) for _, name, what in copies.notes()]
    assert seen == [("a", "start"), ("a", "stop"), ("b", "start")]


def test_a_scheduler_that_ends_ends_the_lock_program_with_its_code(copies: Copies) -> None:
    proc = copies.start("x", sys.executable, "-c", "import sys; sys.exit(3)")
    assert proc.wait(30) == 3


def test_a_holder_cut_off_from_the_broker_kills_its_scheduler_before_another_starts(
    copies: Copies, broker: str
) -> None:
    """Fencing: the holder's link to the broker goes silent (nothing closed, nothing answered),
    as when its host loses its network. Its watchdog kills the scheduler once the lease is over
    and the lock program exits 75 (systemd starts it again); only after that, when the broker
    has freed the lock on the missed heartbeats, does the other copy start its scheduler."""
    url = urlsplit(broker)
    proxy = FreezingProxy((url.hostname or "localhost", url.port or 5672))
    login, at, _ = url.netloc.rpartition("@")
    via_proxy = urlunsplit(url._replace(netloc=f"{login}{at}127.0.0.1:{proxy.port}"))
    try:
        cut = copies.start("cut", broker=via_proxy)
        copies.wait_for(("cut", "start"), 20)
        copies.start("other")
        time.sleep(2)
        assert [(name, what) for _, name, what in copies.notes()] == [("cut", "start")]
        proxy.freeze()
        assert cut.wait(20) == 75, (copies.work / "cut.err").read_text()[-2000:]
        gone = time.time()
        scheduler = int((copies.work / "cut.pid").read_text())
        with pytest.raises(ProcessLookupError):
            os.kill(scheduler, 0)
        assert "no answer from the broker" in (copies.work / "cut.err").read_text()
        started = copies.wait_for(("other", "start"), 30)
        assert started > gone, copies.notes()
        # Killed, not stopped: the cut-off scheduler never got to note a stop.
        seen = [(name, what) for _, name, what in copies.notes()]
        assert seen == [("cut", "start"), ("other", "start")]
    finally:
        proxy.close()
