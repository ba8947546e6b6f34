"""Test web server with slow answers (molecule scenarios, scripts/lab, bench/run's throughput).

    python3 slow_http.py PORT
GET /slow/SECONDS     a body of SECONDS KiB, one KiB per second: byte i of KiB k is k % 256
GET /delay/MS/NAME    waits MS milliseconds, then answers 1 KiB of b"x"
System python3, standard library only. One thread per request, so a delay is latency, not a
queue.
"""

from __future__ import annotations

import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        parts = self.path.strip("/").split("/")
        try:
            if parts[0] == "slow" and len(parts) == 2:
                self._slow(int(parts[1]))
            elif parts[0] == "delay" and len(parts) >= 2:
                self._delay(int(parts[1]))
            else:
                self.send_error(404)
        except ValueError:
            self.send_error(400)

    def _slow(self, seconds: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(seconds * 1024))
        self.end_headers()
        for k in range(seconds):
            self.wfile.write(bytes([k % 256]) * 1024)
            self.wfile.flush()
            time.sleep(1)

    def _delay(self, ms: int) -> None:
        time.sleep(ms / 1000)
        body = b"x" * 1024
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    # The benchmark's worker nodes connect with up to 64 threads each at once; socketserver's
    # default backlog is 5.
    request_queue_size = 1024


if __name__ == "__main__":
    Server(("0.0.0.0", int(sys.argv[1])), Handler).serve_forever()
