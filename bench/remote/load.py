"""Load client of the throughput benchmark, run on a lab host inside the test network with the
app's venv (/opt/downloader/venv/bin/python) and configuration (/etc/downloader, as root).

    load.py nodes --expect N [--timeout S]      wait until N worker nodes answer; print their pools
    load.py download --count C --url URL --prefix P [--timeout S] [--senders K]
    load.py noop --count C [--timeout S] [--senders K]

K sender processes (default 1), each a fresh interpreter with its own connection, producer and
reply queue, send C/K tasks each through one producer (the app's configuration: publisher
confirms on, so each send waits for the broker's confirm), then collect their own results
through the app's result backend (rpc://). They start together once each has warmed up.
Prints one JSON object: counts, seconds and tasks per second, timed from the first send of
any sender to the last result of any. Bounded: at most --timeout seconds per phase.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from typing import Any

from celery.exceptions import TimeoutError as CeleryTimeoutError
from downloaderApp import app, download


def nodes(expect: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    stats: dict[str, Any] = {}
    while time.monotonic() < deadline:
        stats = app.control.inspect(timeout=2.0).stats() or {}
        if len(stats) >= expect:
            break
        time.sleep(1.0)
    pools = {
        name: {
            "implementation": node.get("pool", {}).get("implementation"),
            "max-concurrency": node.get("pool", {}).get("max-concurrency"),
        }
        for name, node in sorted(stats.items())
    }
    return {"expected": expect, "answered": len(stats), "nodes": pools}


def run(kind: str, count: int, timeout: float, url: str = "", prefix: str = "") -> dict[str, Any]:
    """Send COUNT tasks through one producer, then collect their results (one sender's share)."""

    def send(i: int, producer: Any) -> Any:
        if kind == "download":
            return download.apply_async(
                (f"{url}{prefix}-{i}", f"{prefix}-{i:06d}.bin"), {"overwrite": True}, producer=producer
            )
        # A built-in task of every Celery app: returns its arguments, does nothing else.
        return app.send_task("celery.accumulate", args=(i,), producer=producer)

    deadline = time.monotonic() + timeout
    results = []
    with app.producer_or_acquire() as producer:
        start = time.monotonic()
        for i in range(count):
            results.append(send(i, producer))
            if time.monotonic() > deadline:
                break
        sent = time.monotonic()
    succeeded = failed = 0
    errors: dict[str, int] = {}
    timed_out = False
    last = sent
    for result in results:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            timed_out = True
            break
        try:
            result.get(timeout=remaining, propagate=False)
        except CeleryTimeoutError:
            timed_out = True
            break
        last = time.monotonic()
        if result.successful():
            succeeded += 1
        else:
            failed += 1
            key = type(result.result).__name__
            errors[key] = errors.get(key, 0) + 1
    # Raw figures of this sender: load() sums them over every sender and derives the rates.
    return {
        "start": start,
        "sent_at": sent,
        "last": last,
        "sent": len(results),
        "succeeded": succeeded,
        "failed": failed,
        "errors": errors,
        "timed_out": timed_out,
    }


def sender(
    kind: str, count: int, timeout: float, kw: dict[str, str], warmup: int, barrier: Barrier, out: Queue
) -> None:
    """One sender process: warm up, wait for the others, then send and collect its share."""
    if warmup:
        # Connections, queues and the reply consumer set up before the clock starts.
        warm = {**kw, "prefix": kw["prefix"] + "-warmup"} if kw else {}
        run(kind, warmup, min(timeout, 60), **warm)
    barrier.wait(timeout=120)
    out.put(run(kind, count, timeout, **kw))


def load(
    kind: str, count: int, timeout: float, kw: dict[str, str], warmup: int, senders: int
) -> dict[str, Any]:
    """COUNT tasks over SENDERS processes; their figures summed, timed over all of them."""
    ctx = multiprocessing.get_context("spawn")  # no connection or reply queue shared by a fork
    barrier, out = ctx.Barrier(senders), ctx.Queue()
    shares = [count // senders + (1 if k < count % senders else 0) for k in range(senders)]
    procs = []
    for k, share in enumerate(shares):
        own = {**kw, "prefix": f"{kw['prefix']}-s{k}"} if kw else {}
        procs.append(ctx.Process(target=sender, args=(kind, share, timeout, own, warmup, barrier, out)))
    for proc in procs:
        proc.start()
    parts = []
    deadline = time.monotonic() + timeout + 180  # warm-up, barrier and the phase itself
    for _ in procs:
        parts.append(out.get(timeout=max(1.0, deadline - time.monotonic())))
    for proc in procs:
        proc.join(timeout=10)
    start = min(p["start"] for p in parts)
    sent_at = max(p["sent_at"] for p in parts)
    last = max(p["last"] for p in parts)
    sent = sum(p["sent"] for p in parts)
    succeeded = sum(p["succeeded"] for p in parts)
    errors: dict[str, int] = {}
    for part in parts:
        for key, n in part["errors"].items():
            errors[key] = errors.get(key, 0) + n
    elapsed = last - start
    return {
        "kind": kind,
        "senders": senders,
        "requested": count,
        "sent": sent,
        "succeeded": succeeded,
        "failed": sum(p["failed"] for p in parts),
        "errors": errors,
        "timed_out": any(p["timed_out"] for p in parts),
        "send_seconds": round(sent_at - start, 3),
        "seconds": round(elapsed, 3),
        "send_per_second": round(sent / (sent_at - start), 1) if sent_at > start else None,
        "per_second": round(succeeded / elapsed, 1) if elapsed > 0 else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_nodes = sub.add_parser("nodes")
    p_nodes.add_argument("--expect", type=int, required=True)
    p_nodes.add_argument("--timeout", type=float, default=120)
    for name in ("download", "noop"):
        p = sub.add_parser(name)
        p.add_argument("--count", type=int, required=True)
        p.add_argument("--timeout", type=float, default=300)
        p.add_argument("--warmup", type=int, default=20)
        p.add_argument("--senders", type=int, default=1)
        if name == "download":
            p.add_argument("--url", required=True)
            p.add_argument("--prefix", required=True)
    args = parser.parse_args()
    if args.cmd == "nodes":
        out = nodes(args.expect, args.timeout)
    else:
        kw = {"url": args.url, "prefix": args.prefix} if args.cmd == "download" else {}
        if args.senders < 1 or args.count < args.senders:
            parser.error("--senders must be at least 1 and at most --count")
        out = load(args.cmd, args.count, args.timeout, kw, args.warmup, args.senders)
    json.dump(out, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
