"""The metrics endpoint under abuse and load: it keeps answering, threads stay constant, the loop keeps its cadence."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time

import pytest

from tests.reliability.conftest import FULL, http_get, lateness, thread_count


def _raw(port: int, payload: bytes, timeout: float = 10.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(payload)
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except (TimeoutError, ConnectionResetError):
            pass
    return b"".join(chunks)


BAD = {
    "garbage": (b"\x00\xff\xfe garbage\r\n\r\n", b"400"),
    "no-version": (b"GET /metrics\r\n\r\n", b"400"),
    "bad-header": (b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n", b"400"),
    "body": (b"POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", b"400"),
    "chunked": (b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", b"400"),
    "huge-header": (b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n", b"431"),
    "unknown-path": (b"GET /../../etc/passwd HTTP/1.1\r\nConnection: close\r\n\r\n", b"404"),
    "unknown-method": (b"BREW /metrics HTTP/1.1\r\nConnection: close\r\n\r\n", b"405"),
    "delete": (b"DELETE /metrics HTTP/1.1\r\nConnection: close\r\n\r\n", b"405"),
}


def test_malformed_requests_and_slowloris(daemon_factory, figures):
    """Malformed requests, 70 KB headers, unknown paths/methods, 50 slowloris clients: answers stay correct, thread count constant, no late or missed interval."""
    d = daemon_factory().start()
    d.wait_for_codecarbon()  # its tracker's threads are up: the count is the steady one
    threads0 = thread_count(d.proc.pid)
    for name, (payload, want) in BAD.items():
        resp = _raw(d.port, payload)
        assert resp.split(b" ", 2)[1] == want, (name, resp[:200])
    slow = []
    for _ in range(50):  # slowloris: an unfinished request head, one byte now and then
        s = socket.create_connection(("127.0.0.1", d.port))
        s.sendall(b"GET /metrics HTTP/1.1\r\nX-a: ")
        slow.append(s)
    answered = 0
    max_threads = threads0
    t_end = time.monotonic() + 3.0
    while time.monotonic() < t_end:
        for s in slow:
            try:
                s.sendall(b"a")
            except OSError:
                pass
        status, _ = http_get(d.url("/metrics"))
        answered += status == 200
        max_threads = max(max_threads, thread_count(d.proc.pid))
        time.sleep(0.2)
    timed_out = 0
    for s in slow:  # the server's 5 s header deadline ends every one of them
        s.settimeout(10)
        try:
            data = s.recv(100)
        except OSError:
            data = b""
        timed_out += data.startswith(b"HTTP/1.1 408")
        s.close()
    assert timed_out == 50
    assert thread_count(d.proc.pid) == threads0 and max_threads == threads0
    n = len(d.records())
    d.wait_for_records(n + 1)
    assert d.stop() == 0
    lat = lateness(d.records(), 1.0)
    assert lat["late"] == 0 and lat["missed"] == 0, lat
    figures.update(malformed_cases=len(BAD), slowloris_clients=50, slowloris_408=timed_out,
                   scrapes_answered_during=answered, threads=threads0, **lat)


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk not installed")
def test_wrk_load_keeps_cadence(daemon_factory, figures):
    """wrk, 64 connections on /metrics (5 s; 30 s with TTA_FULL_SOAK=1) while measuring at 1 s: zero errors, no late or missed interval."""
    secs = 30 if FULL else 5
    d = daemon_factory().start()
    d.wait_for_codecarbon()  # its tracker's threads are up: the count is the steady one
    threads0 = thread_count(d.proc.pid)
    n0 = len(d.records())
    out = subprocess.run(["wrk", "-t2", "-c64", f"-d{secs}s", "--latency", d.url("/metrics")],
                         capture_output=True, text=True, timeout=secs + 30).stdout
    assert thread_count(d.proc.pid) == threads0
    assert "Non-2xx" not in out and "Socket errors" not in out, out
    reqs = int(re.search(r"(\d+) requests in", out).group(1))
    p50 = re.search(r"50%\s+(\S+)", out).group(1)
    p99 = re.search(r"99%\s+(\S+)", out).group(1)
    rps = float(re.search(r"Requests/sec:\s+(\S+)", out).group(1))
    d.wait_for_records(len(d.records()) + 1)
    assert d.stop() == 0
    recs = d.records()
    during = recs[max(0, n0 - 1):]
    lat = lateness(during, 1.0)
    assert lat["late"] == 0 and lat["missed"] == 0, (lat, [r["duration_s"] for r in during])
    figures.update(duration_s=secs, connections=64, requests=reqs, req_per_s=rps, errors=0, p50=p50, p99=p99,
                   threads=threads0, **lat)


def _server(max_connections: int, ssl_context=None):
    from src.components.carbon.sinks.http_server import MetricsServer, Routes

    page = b"# HELP x y\n" + b"x 1\n" * 1000  # 4 KB, like our page
    server = MetricsServer("127.0.0.1", 0, Routes(lambda: page, "text/plain", lambda _auth: (True, b"{}\n")),
                           max_connections=max_connections, ssl_context=ssl_context)
    server.start()
    return server


def test_clients_that_never_read_give_their_slots_back(monkeypatch, figures):
    """Clients that pipeline requests and never read their responses (held every slot for as long as they liked: drain() had no deadline): each is cut off after the write deadline and /metrics answers again."""
    from src.components.carbon.sinks import http_server

    monkeypatch.setattr(http_server, "WRITE_TIMEOUT_S", 1.0)
    server = _server(max_connections=4)
    hogs = []
    try:
        for _ in range(4):
            s = socket.create_connection(("127.0.0.1", server.port))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.settimeout(2)
            hogs.append(s)
            try:
                s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 3000)  # ~12 MB of answers, never read
            except TimeoutError:
                pass  # the server stopped reading: its answers back up, which is the point
        time.sleep(0.5)
        refused = _raw(server.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", timeout=2)
        t0 = time.monotonic()
        answered = b""
        while time.monotonic() - t0 < 10 and not answered.startswith(b"HTTP/1.1 200"):
            answered = _raw(server.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", timeout=2)
            time.sleep(0.2)
        freed_after = time.monotonic() - t0
    finally:
        for s in hogs:
            s.close()
        server.stop()
    assert not refused.startswith(b"HTTP/1.1 200"), "the hogs did not hold the slots"
    assert answered.startswith(b"HTTP/1.1 200"), answered[:80]
    figures.update(hogs=4, slots=4, write_deadline_s=1.0, answered_after_s=round(freed_after, 2))


def test_tls_handshakes_count_against_the_connection_cap(tmp_path, figures):
    """Idle TLS connections (no ClientHello) were not counted until their handshake finished: 8,000 of them exhausted the fds. Now they count from accept, extra ones are closed at once, and an idle handshake ends after its deadline."""
    import ssl

    if shutil.which("openssl") is None:
        pytest.skip("needs openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = _server(max_connections=4, ssl_context=context)
    idle = []
    try:
        for _ in range(12):
            idle.append(socket.create_connection(("127.0.0.1", server.port)))
        time.sleep(0.5)
        closed_at_once = 0
        for s in idle:
            s.settimeout(0.3)
            try:
                closed_at_once += s.recv(1) == b""
            except (TimeoutError, ConnectionResetError):
                pass
        held = server._open
        t0 = time.monotonic()
        s = idle[0]
        s.settimeout(10)
        try:
            gone = s.recv(1) == b""
        except ConnectionResetError:
            gone = True
        handshake_closed_after = time.monotonic() - t0
    finally:
        for s in idle:
            s.close()
        server.stop()
    assert held <= 4 and closed_at_once >= 8, (held, closed_at_once)
    assert gone and handshake_closed_after < 8, handshake_closed_after
    figures.update(idle_tls_connections=12, cap=4, counted=held, closed_at_once=closed_at_once,
                   handshake_deadline_s=5.0)
