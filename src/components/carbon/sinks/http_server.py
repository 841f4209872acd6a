"""A small, bounded HTTP/1.1 server for /metrics.

prometheus-client's stock server renders the registry on every request with a
thread per connection. Our page changes once per interval, so we serve cached
bytes from one asyncio thread, with hard limits on connections, header size
and slow clients: a scrape storm or a slowloris cannot starve the measurement
loop or grow memory.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass

from src.components.carbon.sinks.web_config import BasicAuth, WebConfig

_log = logging.getLogger("tta.http")

MAX_CONNECTIONS = 256
MAX_HEADER_BYTES = 8192
HEADER_TIMEOUT_S = 5.0  # also the TLS handshake's deadline
IDLE_TIMEOUT_S = 30.0
WRITE_TIMEOUT_S = 10.0  # a client that stops reading gives its slot back after this
ACCEPT_ERROR_LOG_EVERY_S = 60.0  # asyncio logs each failed accept (EMFILE): at most one line a minute

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
    health: Callable[[bool], tuple[bool, bytes]]  # (authenticated) -> (healthy, body)


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
        self._last_loop_error = float("-inf")
        self._loop_errors_muted = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        self._thread = threading.Thread(target=self._run, name="metrics-http", daemon=True)
        self._ready = threading.Event()

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.set_exception_handler(self._on_loop_error)
        # TLS starts inside _handle, after the connection is counted: handshakes done by the
        # server before _handle ran bypassed the cap (8,000 idle handshakes exhausted the fds).
        self._server = self._loop.run_until_complete(asyncio.start_server(
            self._handle, sock=self._sock, limit=MAX_HEADER_BYTES,
        ))
        self._ready.set()
        self._loop.run_forever()

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict) -> None:
        """One line a minute at most: asyncio reports every failed accept() (EMFILE when the fds
        run out), with a traceback, and retries each second: 115 MB of log an hour was seen."""
        now = loop.time()
        if now - self._last_loop_error < ACCEPT_ERROR_LOG_EVERY_S:
            self._loop_errors_muted += 1
            return
        exc = context.get("exception")
        detail = f": {getattr(exc, 'strerror', None) or exc}" if exc is not None else ""
        muted = f" ({self._loop_errors_muted} more in the last minute not logged)" if self._loop_errors_muted else ""
        _log.warning("metrics server: %s%s%s", context.get("message", "error"), detail, muted)
        self._last_loop_error, self._loop_errors_muted = now, 0

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
            if self._ssl is not None:
                await writer.start_tls(self._ssl, ssl_handshake_timeout=HEADER_TIMEOUT_S)
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError, ssl.SSLError, TimeoutError):
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
        health_path = path in (b"/healthz", b"/-/healthy")
        authenticated = True
        if self._auth is not None:
            header = headers.get(b"authorization")
            # /healthz stays open for runbooks and load balancers, but without credentials its error
            # texts are withheld (HealthSnapshot.public_dict): they quote upstream APIs and files.
            if health_path and header is None:
                authenticated = False
            else:
                authenticated = self._auth.cached(header)
                if authenticated is None:  # bcrypt is slow by design: keep it off the event loop
                    authenticated = await asyncio.to_thread(self._auth.check, header)
            if not authenticated and not health_path:
                await self._respond(writer, 401, b"unauthorized\n", close=close,
                                    extra=b'WWW-Authenticate: Basic realm="tta-carbon"\r\n')
                return not close
        if path == b"/metrics":
            body, ctype, status = self._routes.metrics(), self._routes.metrics_content_type, 200
        elif health_path:
            ok, body = self._routes.health(authenticated)
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
        try:
            # A client that pipelines requests and never reads would block here for good, holding
            # its slot: 260 such clients held all 256 and /metrics was refused to everyone else.
            await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT_S)
        except TimeoutError:
            writer.transport.abort()
            raise ConnectionAbortedError("client did not read its response") from None
