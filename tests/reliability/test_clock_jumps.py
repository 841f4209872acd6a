"""Wall-clock steps (NTP slews, an operator's `date -s`) must neither skip nor double a measurement.

The host clock is never touched: libfaketime (Debian package `faketime`) shifts CLOCK_REALTIME
for the daemon process only, from an offset file the test rewrites while it runs, and leaves
CLOCK_MONOTONIC alone, exactly as a real clock step does.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import pytest

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")


def wait_count(d, n: int, timeout: float = 20) -> list[dict]:
    return d.wait_for_records(n, timeout)


@pytest.mark.skipif(not LIBFAKETIME.exists(), reason="needs libfaketime (apt-get install faketime)")
def test_forward_and_backward_clock_steps(daemon_factory, tmp_path, figures):
    """Wall clock stepped +1 h then -3 h under the running daemon (libfaketime): one record per real second, seq contiguous, labels follow the clock."""
    offset = tmp_path / "faketime-offset"
    offset.write_text("+0\n")
    d = daemon_factory(env={
        "LD_PRELOAD": str(LIBFAKETIME), "FAKETIME_TIMESTAMP_FILE": str(offset), "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    })
    d.start()
    started = time.monotonic()
    wait_count(d, 2)
    offset.write_text("+3600\n")  # one hour forwards
    wait_count(d, 5)
    offset.write_text("-7200\n")  # three hours backwards: from +1 h to -2 h
    wait_count(d, 8)
    assert d.stop() == 0
    elapsed = time.monotonic() - started
    # By seq: a +1 h step near midnight UTC puts some records in the next day's file.
    records = sorted(d.records(), key=lambda r: r["seq"])
    seqs = [r["seq"] for r in records]
    assert seqs == list(range(1, len(records) + 1))  # nothing lost, nothing doubled
    regular = records[:-1]  # the last one is the final tail
    assert all(0.5 < r["duration_s"] < 1.6 for r in regular), [r["duration_s"] for r in regular]
    # One record per real second: the steps neither added nor removed intervals.
    assert abs(len(regular) - elapsed) <= 1.5, (len(regular), elapsed)
    ends = [datetime.fromisoformat(r["interval_end"].replace("Z", "+00:00")).timestamp() for r in records]
    steps = [b - a for a, b in zip(ends, ends[1:])]
    assert any(3000 < s < 4000 for s in steps), steps  # labels follow the wall clock forwards ...
    assert any(-10900 < s < -10700 for s in steps), steps  # ... and backwards
    total = sum(r["energy_j"]["total"] for r in records)
    assert records[-1]["totals"]["energy_j"]["total"] == pytest.approx(total, rel=1e-12)
    figures.update(records=len(records), elapsed_s=round(elapsed, 2), steps_s=[3600, -10800],
                   duration_s_min=min(r["duration_s"] for r in regular),
                   duration_s_max=max(r["duration_s"] for r in regular), seq_gaps=0, duplicates=0)
