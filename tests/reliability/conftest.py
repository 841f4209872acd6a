"""Shared pieces of the fault suite.

Every test here takes the ``figures`` fixture: a dict the test fills with what it
measured (lost seconds, p99 latency, RSS growth...). When ``TTA_RELIABILITY_OUT``
names a directory, each test's figures and docstring land there as one JSON file,
and ``scripts/reliability_report.py`` renders them (with pytest's junit XML for the
outcome) into docs/reliability.md. Without the variable the figures are just dropped.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

FULL = os.environ.get("TTA_FULL_SOAK") == "1"


@pytest.fixture
def figures(request):
    data: dict[str, Any] = {}
    yield data
    out = os.environ.get("TTA_RELIABILITY_OUT")
    if not out:
        return
    doc = (request.function.__doc__ or "").strip().split("\n\n")[0]
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid)
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / f"{name}.json").write_text(json.dumps(
        {"nodeid": request.node.nodeid, "doc": " ".join(doc.split()), "figures": data, "full": FULL}, indent=1))


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def metrics(d) -> dict[str, float]:
    """Unlabelled samples by name, labelled ones as name{k=v,...}."""
    status, body = http_get(d.url("/metrics"))
    assert status == 200
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            key = s.name if not s.labels else s.name + "{" + ",".join(f"{k}={v}" for k, v in sorted(s.labels.items())) + "}"
            out[key] = s.value
    return out


def health(d) -> tuple[int, dict]:
    status, body = http_get(d.url("/healthz"))
    return status, json.loads(body)


def wait_until(pred, timeout: float = 20.0, what: str = "condition", step: float = 0.1):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last={last!r}")


def read_lines(paths) -> list[bytes]:
    lines = []
    for p in paths:
        data = Path(p).read_bytes()
        if data:
            assert data.endswith(b"\n"), f"{p} ends without a newline: torn tail {data[-80:]!r}"
        lines += data.splitlines()
    return lines


def thread_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def lateness(records: list[dict], interval: float) -> dict[str, float]:
    """How far each interval ended from its slot on the monotonic grid, from cumulative duration_s.

    The daemon schedules on ``base + k * interval``; record k ends at base + sum(duration_s[:k]).
    'late' = more than 10% of the interval behind its slot; 'missed' = a slot with no record.
    """
    recs = [r for r in records if not r.get("final")]
    cum, worst, late, missed = 0.0, 0.0, 0, 0
    first = recs[0]["duration_s"] if recs else 0.0
    for k, r in enumerate(recs):
        cum += r["duration_s"]
        delay = (cum - first) - k * interval  # relative to the first slot, so start-up jitter is excluded
        worst = max(worst, abs(delay))
        if delay > 0.1 * interval:
            late += 1
        if r["duration_s"] > 1.5 * interval:
            missed += 1
    return {"intervals": len(recs), "late": late, "missed": missed, "worst_offset_s": round(worst, 4)}
