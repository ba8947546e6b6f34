"""celery-beat-lock: run an app's scheduler (`celery beat`) on one host of the cluster at a time.

Every worker host of an app with a beat_schedule runs this under systemd (the unit
celery-beat-ID, roles/celery_worker) with the app's venv and configuration. Each copy tries to
declare the app vhost's exclusive queue LOCK: the broker lets one connection at a time hold it,
cluster-wide, and deletes it when that connection closes or stops answering its heartbeats. The
holder waits GRACE seconds, starts COMMAND (the scheduler) and asks the broker about its queue
every POLL seconds. Its scheduler is stopped before the lock is given up (TERM, then KILL after
STOP_TIMEOUT), and killed when the broker has not answered for LEASE seconds, also while it is
being stopped (a hung host or a lost network): a scheduler never outlives its holder's last
answer by more than about LEASE. The broker frees the lock no sooner than HEARTBEAT after the
holder's last word, and another host waits GRACE more before it starts its own: with
STOP_TIMEOUT < LEASE < HEARTBEAT two schedulers never run at once. The others retry every
RETRY seconds. (The lock is held on the broker node the holder is connected to: see the
README, "Periodic tasks", on brokers cut off from each other.)

Usage: python celery-beat-lock.py --app MODULE --lock QUEUE [options] -- COMMAND [ARG...]
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from amqp.exceptions import AMQPError, ResourceLocked
from celery.app.utils import find_app
from kombu.exceptions import KombuError

LOG = logging.getLogger("celery-beat-lock")
# The exit code when the broker stopped answering: systemd starts the unit again.
LOST = 75


class Lease:
    """The time of the broker's last answer; expired LEASE seconds after it."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.clock = clock
        self.last = clock()

    def renew(self) -> None:
        self.last = self.clock()

    def expired(self) -> bool:
        return self.clock() - self.last > self.seconds


def stop(child: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """TERM, then KILL after TIMEOUT seconds: the scheduler saves its state on TERM."""
    if child is None or child.poll() is not None:
        return
    child.terminate()
    try:
        child.wait(timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


class Runner:
    def __init__(self, app: Any, options: argparse.Namespace) -> None:
        self.app = app
        self.options = options
        # Set by the signal handler: a plain flag, which a handler may set at any moment.
        self.stopping = False
        self.child: subprocess.Popen[bytes] | None = None
        self.told_held = False

    def pause(self, seconds: float) -> None:
        """Sleep SECONDS, or less once stopping."""
        end = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < end:
            time.sleep(min(0.2, max(0.0, end - time.monotonic())))

    def run(self) -> int:
        """Until TERM: hold the lock and run the scheduler, or wait for the lock. The exit code
        of a scheduler that ended on its own (1 when that was 0: the unit must start again),
        else 0."""
        while not self.stopping:
            try:
                code = self.attempt()
            except (OSError, AMQPError, KombuError) as exc:
                LOG.warning("broker: %s; trying again in %s s", exc, self.options.retry)
                code = None
            if code is not None:
                return code
            self.pause(self.options.retry)
        return 0

    def attempt(self) -> int | None:
        """One connection: the lock asked for every RETRY seconds, then held until TERM, a lost
        broker or the scheduler's end (its exit code)."""
        with self.app.connection_for_write(heartbeat=self.options.heartbeat) as conn:
            conn.ensure_connection(max_retries=2)
            # A channel the broker closes (the lock is held) is opened again by py-amqp.
            channel = conn.channel()
            while not self.stopping:
                try:
                    channel.queue_declare(
                        queue=self.options.lock,
                        exclusive=True,
                        auto_delete=True,
                        arguments={"x-queue-type": "classic"},
                    )
                except ResourceLocked:
                    if not self.told_held:
                        LOG.info("another host runs the scheduler (holds %s); waiting", self.options.lock)
                        self.told_held = True
                    self.pause(self.options.retry)
                    continue
                self.told_held = False
                return self.lead(channel)
            return None

    def lead(self, channel: Any) -> int | None:
        options = self.options
        lease = Lease(options.lease)
        leading = threading.Event()
        leading.set()
        threading.Thread(target=self.watch, args=(lease, leading), daemon=True).start()
        start = time.monotonic() + options.grace
        LOG.info("holding %s: the scheduler starts in %s s", options.lock, options.grace)
        try:
            while not self.stopping:
                channel.queue_declare(queue=options.lock, passive=True)
                lease.renew()
                if self.child is None and time.monotonic() >= start:
                    self.child = subprocess.Popen(options.command)
                    LOG.info("scheduler started (pid %s)", self.child.pid)
                if self.child is not None and self.child.poll() is not None:
                    LOG.error("the scheduler exited with %s", self.child.returncode)
                    return self.child.returncode or 1
                self.pause(options.poll)
            return None
        finally:
            # Before the connection, and with it the lock, goes; the watchdog still on.
            stop(self.child, options.stop_timeout)
            self.child = None
            leading.clear()

    def watch(self, lease: Lease, leading: threading.Event) -> None:
        """Fencing: no answer from the broker within the lease, no scheduler here."""
        while leading.is_set():
            if lease.expired():
                LOG.error("no answer from the broker for %s s: stopping the scheduler", lease.seconds)
                child = self.child
                if child is not None and child.poll() is None:
                    child.kill()
                    child.wait()
                os._exit(LOST)
            time.sleep(0.5)


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="celery-beat-lock", description=__doc__.split("\n\n")[0])
    parser.add_argument("--app", required=True, help="the Celery app (celery -A MODULE)")
    parser.add_argument("--lock", required=True, help="the lock queue (exclusive, on the app's vhost)")

    def seconds(flag: str, default: float, meaning: str) -> None:
        parser.add_argument(flag, type=float, default=default, metavar="SECONDS", help=meaning)

    seconds("--poll", 2.0, "between questions to the broker")
    seconds("--lease", 8.0, "without an answer: the scheduler is killed")
    parser.add_argument("--heartbeat", type=int, default=10, help="AMQP heartbeat, seconds (> lease)")
    seconds("--grace", 15.0, "a new holder waits before it starts")
    seconds("--retry", 5.0, "between attempts to take the lock")
    seconds("--stop-timeout", 5.0, "the scheduler gets to stop (< lease)")
    parser.add_argument("command", nargs="+", help="the scheduler's command line (after --)")
    options = parser.parse_args(argv)
    if not (options.poll < options.lease < options.heartbeat and options.stop_timeout < options.lease):
        parser.error("need poll < lease < heartbeat and stop-timeout < lease")
    return options


def main(argv: Sequence[str] | None = None) -> int:
    options = parse(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    runner = Runner(find_app(options.app), options)

    def on_signal(signum: int, _frame: object) -> None:
        runner.stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return runner.run()


if __name__ == "__main__":
    sys.exit(main())
