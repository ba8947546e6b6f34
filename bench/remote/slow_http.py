"""HTTP server for the throughput benchmark: every GET is answered after a fixed delay.

Runs on the lab's web host (system python3, standard library only), started and stopped by
bench/run. One thread per request, so the delay is latency, not a queue:
    python3 slow_http.py --port 8100 --delay 0.1 --size 1024
"""

from __future__ import annotations

import argparse
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Server(ThreadingHTTPServer):
    daemon_threads = True
    # Up to 64 threads per worker node connect at once; socketserver's default backlog is 5.
    request_queue_size = 1024


def make_handler(delay: float, body: bytes) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            time.sleep(delay)
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--delay", type=float, default=0.1)
    parser.add_argument("--size", type=int, default=1024)
    args = parser.parse_args()
    server = Server(("0.0.0.0", args.port), make_handler(args.delay, b"x" * args.size))
    server.serve_forever()


if __name__ == "__main__":
    main()
