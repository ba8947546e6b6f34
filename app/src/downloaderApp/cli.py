"""The ``downloader`` command: submit downloads, list files, check the workers.

Exit status: 0 success; 1 the task failed; 2 usage or configuration error; 3 timed out
waiting for the task; 4 no worker answered; 5 the broker cannot be reached; 6 the configuration
file cannot be read by this user (permission denied); 7 the broker refused the request (this
host's broker user has no right to it, or the task queue does not exist yet).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from typing import Any

from downloaderApp.config import Settings, get_settings, mask_url_passwords
from downloaderApp.errors import ConfigError, ConfigUnreadable
from downloaderApp.version import __version__

__all__ = ["main"]

EXIT_OK = 0
EXIT_TASK_FAILED = 1
EXIT_USAGE = 2
EXIT_TIMEOUT = 3
EXIT_NO_WORKERS = 4
EXIT_BROKER = 5
EXIT_CONFIG_UNREADABLE = 6
EXIT_REFUSED = 7

STATUS_TIMEOUT = 1.0


def _err(message: str) -> None:
    print(f"downloader: {message}", file=sys.stderr)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


def _integer(minimum: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum} or more")
        return value

    return parse


_count = _integer(1)


def _human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover


def _cmd_submit(args: argparse.Namespace, settings: Settings) -> int:
    from celery.exceptions import TimeoutError as CeleryTimeoutError

    from downloaderApp.tasks import download

    kwargs = {"overwrite": True} if args.overwrite else {}
    # Without --wait nobody will read the result: with the rpc:// backend it could only be
    # delivered to this process, so do not make the worker send it (no reply queue is left).
    result = download.apply_async(
        args=(args.url, args.name), kwargs=kwargs, ignore_result=args.wait is None
    )
    if args.wait is None:
        if args.json:
            _print_json({"task_id": result.id, "state": "PENDING"})
        else:
            print(f"submitted task {result.id}")
        return EXIT_OK
    try:
        result.get(timeout=args.wait, propagate=False)
    except CeleryTimeoutError:
        state = result.state
        if args.json:
            _print_json({"task_id": result.id, "state": state, "error": "timeout"})
        _err(f"task {result.id} did not finish within {args.wait:g} s (state {state})")
        return EXIT_TIMEOUT
    if result.successful():
        value = result.result
        if args.json:
            _print_json({"task_id": result.id, "state": "SUCCESS", "result": value})
        else:
            print(
                f"downloaded {value['url']} to {value['host']}:{value['path']} "
                f"({value['bytes']} bytes, sha256 {value['sha256']})"
            )
        return EXIT_OK
    error = result.result
    error_type = type(error).__name__
    if args.json:
        _print_json(
            {
                "task_id": result.id,
                "state": result.state,
                "error": {"type": error_type, "message": str(error)},
            }
        )
    _err(f"task {result.id} failed: {error_type}: {error}")
    return EXIT_TASK_FAILED


def _cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    from downloaderApp.celery_app import app
    from downloaderApp.listing import collect_page

    timeout = args.timeout if args.timeout is not None else settings.list_timeout
    records, nodes, total, before = collect_page(
        app, settings, include_local=False, timeout=timeout, after=args.after, limit=args.limit
    )
    if not nodes:
        if args.json:
            _print_json([])
        _err(f"no worker answered within {timeout:g} s")
        return EXIT_NO_WORKERS
    if args.json:
        _print_json(records)
    elif not records:
        print(f"no files ({len(nodes)} worker(s) answered)")
    else:
        width = max(len(r["host"]) for r in records)
        for record in records:
            print(
                f"{record['host']:<{width}}  {_human_size(record['bytes']):>10}  {record['name']}"
            )
    shown_end = before + len(records)
    if records and (before > 0 or shown_end < total):
        last = shlex.quote(records[-1]["name"])
        more = f"; next: downloader list --after {last}" if shown_end < total else ""
        _err(f"files {before + 1}-{shown_end} of {total}{more}")
    return EXIT_OK


def _cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from downloaderApp.celery_app import app

    timeout = args.timeout if args.timeout is not None else STATUS_TIMEOUT
    replies = app.control.ping(timeout=timeout) or []
    workers = sorted(str(node) for reply in replies for node in reply)
    if args.json:
        _print_json({"workers": workers, "count": len(workers)})
    if not workers:
        _err(f"no worker answered a ping within {timeout:g} s")
        return EXIT_NO_WORKERS
    if not args.json:
        for worker in workers:
            print(f"{worker}: OK")
        print(f"{len(workers)} worker(s) online")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="downloader",
        description="Submit downloads to the downloader workers and inspect them.",
        epilog="Configuration: $DOWNLOADER_CONFIG (default /etc/downloader/downloader.conf) "
        "and DOWNLOADER_<KEY> environment variables.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    submit = commands.add_parser("submit", help="queue the download of URL as NAME")
    submit.add_argument("url", metavar="URL")
    submit.add_argument("name", metavar="NAME")
    submit.add_argument(
        "--overwrite", action="store_true", help="replace NAME if it exists already"
    )
    submit.add_argument(
        "--wait",
        type=_positive,
        metavar="SECONDS",
        help="wait up to SECONDS for the result (exit 1 if the task fails, 3 on timeout)",
    )
    submit.add_argument("--json", action="store_true", help="print JSON")
    submit.set_defaults(func=_cmd_submit)

    list_ = commands.add_parser("list", help="list the downloaded files of all workers")
    list_.add_argument("--json", action="store_true", help="print JSON")
    list_.add_argument(
        "--timeout", type=_positive, metavar="SECONDS", help="wait for replies (list_timeout)"
    )
    list_.add_argument("--after", metavar="NAME", help="the files whose names come after NAME")
    list_.add_argument(
        "--limit", type=_count, metavar="N", help="files per page (list_limit, and at most that)"
    )
    list_.set_defaults(func=_cmd_list)

    status = commands.add_parser("status", help="ping the workers")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.add_argument(
        "--timeout", type=_positive, metavar="SECONDS", help="wait for replies (default 1)"
    )
    status.set_defaults(func=_cmd_status)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = get_settings()
    except ConfigUnreadable as exc:
        _err(str(exc))
        return EXIT_CONFIG_UNREADABLE
    except ConfigError as exc:
        _err(f"configuration error: {exc}")
        return EXIT_USAGE

    from amqp.exceptions import AccessRefused, NotFound
    from kombu.exceptions import OperationalError

    try:
        code: int = args.func(args, settings)
    except OperationalError as exc:
        _err(mask_url_passwords(f"cannot reach the broker: {exc}"))
        return EXIT_BROKER
    except AccessRefused as exc:
        _err(mask_url_passwords(f"the broker refused this host's broker user: {exc}"))
        if args.command in ("status", "list"):
            _err(
                f"`downloader {args.command}` asks the workers directly (remote control), which "
                "only a worker's or Flower's broker user may: run it on a worker or Flower host; "
                "from here, the tutorial's list.delay().get() lists the files"
            )
        return EXIT_REFUSED
    except NotFound as exc:
        _err(
            mask_url_passwords(
                f"the broker has no such queue: {exc} (the workers create the task queue "
                "when they first start: has any started?)"
            )
        )
        return EXIT_REFUSED
    except KeyboardInterrupt:
        return 130
    return code
