"""The benchmark harness runs end to end (tiny windows) and prints every table row.

No timing assertions: the numbers from --smoke are meaningless; this only guards
against the harness rotting (flags, log formats, parsers) as the code changes.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

ROWS = [
    "start-up: exec -> READY=1",
    "start-up: exec -> first completed 1 s interval",
    "start-up CPU",
    "RSS after start-up",
    "steady CPU at 15 s interval",
    "steady RSS at 15 s interval",
    "RSS growth per 30 simulated days",
    "RSS slope over the wall-clock window",
    "/metrics req/s (wrk -t2 -c16) [peer: stock prometheus-client]",
    "/metrics p50 latency (ms) [peer: stock]",
    "/metrics p99 latency (ms) [peer: stock]",
    "/metrics CPU-ms per request [peer: stock]",
    "/metrics req/s [peer: node-exporter]",
    "/metrics p99 latency (ms) [peer: node-exporter]",
    "/metrics CPU-ms per request [peer: node-exporter]",
    "late intervals during load",
    "worst lateness during load",
    "cadence p99 lateness",
    "cadence max lateness",
    "cadence drift",
]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk not installed")
@pytest.mark.skipif(not Path("/usr/bin/prometheus-node-exporter").exists(), reason="node-exporter not installed")
def test_benchmark_smoke_prints_full_table(tmp_path):
    out = tmp_path / "smoke.md"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "run.py"), "--smoke", "--output", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "| metric | ours | peer | ratio | target | met? |" in proc.stdout
    table = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    for name in ROWS:
        assert any(name in line for line in table), f"missing row {name!r}"
    assert len(table) == len(ROWS) + 1  # + header
    assert out.read_text().count("\n| ") >= len(ROWS)
