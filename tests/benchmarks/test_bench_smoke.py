"""The benchmark harness runs end to end (tiny windows) and prints every table row.

No timing assertions: the numbers from --smoke are meaningless; this only guards
against the harness rotting (flags, log formats, parsers) as the code changes:
every row is there, both of our modes (default and lean) and the peer were measured
where the table says so, and the default handed over to codecarbon's tracker.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

HEADER = "| metric | default | lean | peer | default/peer | lean/peer | target | met? |"

# Row name -> which of default, lean, peer it has a number for (the others show "—").
ROWS = {
    "start-up: exec -> READY=1": "dlp",
    "start-up: exec -> first completed 1 s interval": "dlp",
    "start-up: first record's interval_end - (start + 1 s)": "dlp",
    "start-up: exec -> first record measured by codecarbon's tracker": "d",
    "start-up CPU": "dlp",
    "RSS after start-up": "dlp",
    "steady CPU at 15 s interval": "dlp",
    "steady CPU with the hourly tracker recycle": "dlp",
    "steady RSS at 15 s interval": "dlp",
    "RSS growth per 30 simulated days": "dlp",
    "RSS slope over the wall-clock window": "dlp",
    "/metrics req/s (wrk -t2 -c16) [peer: stock prometheus-client]": "dp",
    "/metrics p50 latency (ms) [peer: stock]": "dp",
    "/metrics p99 latency (ms) [peer: stock]": "dp",
    "/metrics CPU-ms per request [peer: stock]": "dp",
    "/metrics req/s [peer: node-exporter]": "dp",
    "/metrics p99 latency (ms) [peer: node-exporter]": "dp",
    "/metrics CPU-ms per request [peer: node-exporter]": "dp",
    "late intervals during load": "d",
    "worst lateness during load": "d",
    "cadence p99 lateness": "dl",
    "cadence max lateness": "dl",
    "cadence drift": "dl",
}


def is_number(cell: str) -> bool:
    try:
        float(cell.replace(",", ""))
    except ValueError:
        return False
    return True


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
    assert HEADER in proc.stdout
    table = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert len(table) == len(ROWS) + 1  # + header
    for name, measured in ROWS.items():
        rows = [line for line in table if name in line]
        assert len(rows) == 1, f"row {name!r}: {rows}"
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", rows[0].strip()[1:-1])]  # \| is inside a cell
        assert len(cells) == HEADER.count("|") - 1, rows[0]
        for col, cell in zip("dlp", cells[1:4]):
            if col in measured:  # a number (n/a: a parser lost its input)
                assert is_number(cell), f"row {name!r}, column {col}: {cell!r}"
            else:
                assert cell == "—", f"row {name!r}, column {col}: {cell!r}"
    # Each mode ran what it says: the default codecarbon's tracker, the lean mode our estimate.
    assert "Its source here: codecarbon EmissionsTracker" in proc.stdout
    assert "Its source here: CPU-load x TDP estimate (configured)" in proc.stdout
    assert out.read_text().count("\n| ") >= len(ROWS)
