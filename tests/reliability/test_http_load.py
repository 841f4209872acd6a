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
