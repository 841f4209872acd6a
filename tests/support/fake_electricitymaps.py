"""A local stand-in for the Electricity Maps API: a real HTTP server on 127.0.0.1.

Tests change ``value``, ``status``, ``body`` or ``delay_s`` between requests and read
``requests`` (path + headers of every request received) to see what the daemon sent.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PATH = "/v3/carbon-intensity/latest"


class FakeElectricityMaps:
    def __init__(self, value: float = 123.5) -> None:
        self.value = value
        self.status = 200
        self.body: bytes | None = None  # raw body instead of the JSON answer
        self.headers_out: dict[str, str] = {}
        self.delay_s = 0.0
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                with fake._lock:
                    fake.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}})
                if fake.delay_s:
                    time.sleep(fake.delay_s)
                zone = self.path.partition("zone=")[2]
                body = fake.body if fake.body is not None else json.dumps({
                    "zone": zone, "carbonIntensity": fake.value, "datetime": "2026-01-01T00:00:00.000Z",
                    "updatedAt": "2026-01-01T00:00:00.000Z", "emissionFactorType": "lifecycle",
                    "isEstimated": False}).encode()
                try:
                    self.send_response(fake.status)
                    for k, v in fake.headers_out.items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:  # the client gave up (timeout test)
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        self.running = True

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{PATH}"

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def stop(self) -> None:
        """Stop listening: later connections are refused."""
        if self.running:
            self._server.shutdown()
            self._server.server_close()
            self.running = False
