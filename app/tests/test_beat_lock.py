"""The cluster's scheduler lock (roles/celery_worker/files/celery-beat-lock.py, which the
celery_worker role runs as celery-beat-ID on every worker host of an app with a schedule), with
this app against the real broker: of two copies one runs its command at a time; the holder
stopped, the other starts its command after the grace, never overlapping; a command that ends
on its own ends the lock program with its exit code (systemd starts it again)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

LOCK_PROGRAM = Path(__file__).resolve().parents[2] / "roles/celery_worker/files/celery-beat-lock.py"
GRACE = 1.0
# The stand-in scheduler: notes its start and its stop (on TERM) in LOG as NAME.
SCHEDULER = """
import signal, sys, time
log, name = sys.argv[1], sys.argv[2]
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

    def start(self, name: str, *command: str) -> subprocess.Popen[bytes]:
        scheduler = command or (sys.executable, "-c", SCHEDULER, str(self.log), name)
        options = ["--poll", "0.2", "--lease", "1.5", "--heartbeat", "3", "--stop-timeout", "1"]
        options += ["--grace", str(GRACE)]
        proc = subprocess.Popen(
            [sys.executable, str(LOCK_PROGRAM), "--app", "downloaderApp", "--lock", self.lock,
             *options, "--retry", "0.3", "--", *scheduler],
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
