"""A small, bounded HTTP/1.1 server for /metrics.

prometheus-client's stock server renders the registry on every request with a
thread per connection. Our page changes once per interval, so we serve cached
bytes from one asyncio thread, with hard limits on connections, header size
and slow clients: a scrape storm or a slowloris cannot starve the measurement
loop or grow memory.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass

from src.components.carbon.sinks.web_config import BasicAuth, WebConfig

MAX_CONNECTIONS = 256
MAX_HEADER_BYTES = 8192
HEADER_TIMEOUT_S = 5.0
IDLE_TIMEOUT_S = 30.0

_REASONS = {
    200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
    408: "Request Timeout", 431: "Request Header Fields Too Large", 503: "Service Unavailable",
}
_INDEX = (
    b"<html><head><title>tta-staging-carbon</title></head><body><h1>tta-staging-carbon</h1>"
    b'<p><a href="/metrics">Metrics</a> &middot; <a href="/healthz">Health</a></p></body></html>\n'
)


@dataclass(frozen=True, slots=True)
class HttpSettings:
    address: str = "127.0.0.1"
    port: int = 9880
    web: WebConfig = WebConfig()  # TLS and basic auth (docs/security.md); empty: plain HTTP, no auth


@dataclass(frozen=True)
class Routes:
    metrics: Callable[[], bytes]
    metrics_content_type: str
    health: Callable[[], tuple[bool, bytes]]


class MetricsServer:
    """Binds synchronously (so a taken port fails start-up), then serves on its own thread."""

    def __init__(
        self,
        address: str,
        port: int,
        routes: Routes,
        max_connections: int = MAX_CONNECTIONS,
        ssl_context: ssl.SSLContext | None = None,
        auth: BasicAuth | None = None,
    ) -> None:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._sock.bind((address, port))
            self._sock.listen(128)
        except OSError:
            self._sock.close()
            raise
        self._sock.setblocking(False)
        self.port = self._sock.getsockname()[1]
        self._routes = routes
        self._ssl = ssl_context
        self._auth = auth
        self._max_connections = max_connections
        self._open = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        self._thread = threading.Thread(target=self._run, name="metrics-http", daemon=True)
        self._ready = threading.Event()

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(
            self._handle, sock=self._sock, limit=MAX_HEADER_BYTES, ssl=self._ssl,
            ssl_handshake_timeout=HEADER_TIMEOUT_S if self._ssl else None,
        ))
        self._ready.set()
        self._loop.run_forever()

    def stop(self) -> None:
        if not self._thread.is_alive():
            self._sock.close()
            return

        async def _shutdown() -> None:
            if self._server is not None:
                self._server.close()
            current = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not current]
            for task in tasks:
                task.cancel()
            # Let open connections (Prometheus keeps one alive) unwind before the loop stops.
            await asyncio.gather(*tasks, return_exceptions=True)
            self._loop.stop()

        asyncio.run_coroutine_threadsafe(_shutdown(), self._loop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._open >= self._max_connections:
            writer.close()  # over the bound: refuse at once rather than queue
            return
        self._open += 1
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError, ssl.SSLError):
            pass
        finally:
            self._open -= 1
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = True
        while True:
            try:
                head = await asyncio.wait_for(
                    reader.readuntil(b"\r\n\r\n"), HEADER_TIMEOUT_S if first else IDLE_TIMEOUT_S
                )
            except TimeoutError:
                if first:
                    await self._respond(writer, 408, b"request timeout\n", close=True)
                return
            except asyncio.LimitOverrunError:
                await self._respond(writer, 431, b"request headers too large\n", close=True)
                return
            first = False
            keep_alive = await self._dispatch(head, writer)
            if not keep_alive:
                return

    async def _dispatch(self, head: bytes, writer: asyncio.StreamWriter) -> bool:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            await self._respond(writer, 400, b"malformed request line\n", close=True)
            return False
        method, target, version = parts
        headers = {}
        for raw in lines[1:]:
            if not raw:
                continue
            name, sep, value = raw.partition(b":")
            if not sep or not name or name != name.strip():
                await self._respond(writer, 400, b"malformed header\n", close=True)
                return False
            headers[name.lower()] = value.strip()
        if b"content-length" in headers or b"transfer-encoding" in headers:
            # We take no request bodies; refusing keeps the connection state simple and safe.
            await self._respond(writer, 400, b"request bodies are not accepted\n", close=True)
            return False
        connection = headers.get(b"connection", b"").lower()
        close = connection == b"close" or (version == b"HTTP/1.0" and connection != b"keep-alive")
        if method not in (b"GET", b"HEAD"):
            await self._respond(writer, 405, b"only GET and HEAD\n", close=close, extra=b"Allow: GET, HEAD\r\n")
            return not close
        path = target.split(b"?", 1)[0]
        head_only = method == b"HEAD"
        # /healthz stays open: it carries no secrets, and local runbooks probe it without credentials.
        if self._auth is not None and path not in (b"/healthz", b"/-/healthy"):
            header = headers.get(b"authorization")
            allowed = self._auth.cached(header)
            if allowed is None:  # bcrypt is slow by design: keep it off the event loop
                allowed = await asyncio.to_thread(self._auth.check, header)
            if not allowed:
                await self._respond(writer, 401, b"unauthorized\n", close=close,
                                    extra=b'WWW-Authenticate: Basic realm="tta-carbon"\r\n')
                return not close
        if path == b"/metrics":
            body, ctype, status = self._routes.metrics(), self._routes.metrics_content_type, 200
        elif path in (b"/healthz", b"/-/healthy"):
            ok, body = self._routes.health()
            ctype, status = "application/json", 200 if ok else 503
        elif path == b"/":
            body, ctype, status = _INDEX, "text/html; charset=utf-8", 200
        else:
            body, ctype, status = b"not found; try /metrics\n", "text/plain; charset=utf-8", 404
        await self._respond(writer, status, body, close=close, ctype=ctype, head_only=head_only)
        return not close

    @staticmethod
    async def _respond(
        writer: asyncio.StreamWriter,
        status: int,
        body: bytes,
        *,
        close: bool,
        ctype: str = "text/plain; charset=utf-8",
        extra: bytes = b"",
        head_only: bool = False,
    ) -> None:
        header = (
            f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\n{'Connection: close' if close else 'Connection: keep-alive'}\r\n"
        ).encode() + extra + b"\r\n"
        writer.write(header if head_only else header + body)
        await writer.drain()
