"""Data integrity: torn lines, kill -9 of the real daemon, damaged state files."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.reliability.conftest import FULL, read_lines, wait_until
from tests.support.daemon import REPO

DRIVER = Path(__file__).with_name("ndjson_writer_driver.py")
COMPONENTS = ("cpu", "ram", "gpu")


def test_ndjson_never_torn_under_sigkill(tmp_path, figures):
    """NDJSON writer SIGKILLed at random moments (>= 200 kills): after the next writer opens the file, every line is one whole, valid record.

    A SIGKILL can end a write(2) at a page boundary (the kernel checks for fatal signals between pages), so a
    kill can leave half a line; the sink cuts such a tail when it next opens the file. A driver process writes records through the real NdjsonSink in a tight loop; the test kills it with
    SIGKILL after a random 0-40 ms, 200 times (1000 with TTA_FULL_SOAK=1), all into the same directory.
    """
    rng = random.Random(1234)
    kills = 1000 if FULL else 200
    out = tmp_path / "out"
    torn_seen = 0
    out.mkdir()
    zygote = subprocess.Popen([sys.executable, str(DRIVER), str(out)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        for i in range(kills):
            for f in out.glob("emissions_*.json"):  # what the last kill left, before the next writer repairs it
                with open(f, "rb") as fh:
                    fh.seek(0, 2)
                    if fh.tell():
                        fh.seek(-1, 2)
                        torn_seen += fh.read(1) != b"\n"
            zygote.stdin.write(f"go r{i}\n")
            zygote.stdin.flush()
            pid = int(zygote.stdout.readline())
            time.sleep(rng.uniform(0.002, 0.03))
            os.kill(pid, signal.SIGKILL)
            assert int(zygote.stdout.readline()) == -signal.SIGKILL
    finally:
        zygote.stdin.close()
        zygote.wait(10)
    # The daemon's next start appends through the same sink, which repairs a torn tail first.
    from src.components.carbon.sinks.ndjson import NdjsonSink
    sink = NdjsonSink(out)
    sink.flush()
    for f in out.glob("emissions_*.json"):
        sink._open(f)
    sink.close()
    files = sorted(out.glob("emissions_*.json"))
    lines = read_lines(files)
    per_run: dict[str, list[int]] = {}
    for raw in lines:
        rec = json.loads(raw)  # raises on a torn line
        assert rec["energy_j"]["cpu"] == 1.5 and len(rec["devices_j"]) == 40
        per_run.setdefault(rec["env"], []).append(rec["seq"])
    for seqs in per_run.values():  # within each run the records that made it are contiguous from 1
        assert seqs == list(range(1, len(seqs) + 1))
    assert len(per_run) >= kills * 0.9  # almost every run got records out before its kill
    figures.update(kills=kills, lines_checked=len(lines), torn_writes_left_by_kills=torn_seen,
                   torn_lines_after_repair=0)
