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

from tests.reliability.conftest import FULL, read_lines

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


def _events(d) -> list[dict]:
    return [json.loads(x) for x in d.log_file.read_text().splitlines() if x.startswith("{")]


def _check_continuity(records: list[dict]) -> None:
    """seq 1..N with no gap and no duplicate across all runs; totals == running sum where a run continues."""
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    for prev, r in zip(records, records[1:]):
        for c in COMPONENTS:
            assert r["totals"]["energy_j"][c] == pytest.approx(prev["totals"]["energy_j"][c] + r["energy_j"][c],
                                                               rel=1e-9, abs=1e-9)
            assert r["totals"]["emissions_g"][c] == pytest.approx(
                prev["totals"]["emissions_g"][c] + r["emissions_g"][c], rel=1e-9, abs=1e-12)


def _iso(ts: str) -> float:
    from datetime import datetime
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def test_kill9_restart_totals_continue(daemon_factory, figures):
    """Real daemon kill -9'd at random points, restarted each time: seq and totals continue, at most one interval lost.

    Interval 1 s; 3 kills (20 with TTA_FULL_SOAK=1) at a random 0.3-2.8 s after READY. 'Lost' is the wall time
    between the last record a killed run persisted and the kill: energy in it is never recorded.
    """
    rng = random.Random(99)
    kills = 20 if FULL else 3
    lost = []
    runs = []
    seen_runs: set[str] = set()
    for i in range(kills):
        d = daemon_factory("a").start()
        ready_at = time.time()
        time.sleep(rng.uniform(0.3, 2.8))
        killed_at = time.time()
        d.proc.send_signal(signal.SIGKILL)
        assert d.stop() == -signal.SIGKILL
        runs.append(killed_at)
        recs = d.records() if d.output_dir.exists() else []
        mine = [r for r in recs if r["run_id"] not in seen_runs]
        seen_runs |= {r["run_id"] for r in recs}
        # unrecorded: from the end of the run's last persisted interval (or READY, if none) to the kill
        covered_to = max([_iso(r["interval_end"]) for r in mine] + [ready_at])
        lost.append(killed_at - covered_to)
    d = daemon_factory("a").start()
    d.wait_for_records(len(d.records()) + 2)
    assert d.stop() == 0
    records = d.records()
    assert records[-1]["final"] is True
    _check_continuity(records)
    events = _events(d)
    started = [e for e in events if e.get("event") == "started"]
    assert len(started) == kills + 1
    assert all("totals" in e["ledger"] for e in started)
    # lost tail: from the last persisted interval end to the kill (wall clock, same host)
    # The interval in progress is lost: one interval, plus however late the loop woke under load.
    assert max(lost) < 2 * 1.0, lost
    mean_power = sum(r["power_w"]["total"] for r in records) / len(records)
    figures.update(kills=kills, records=len(records), seq_gaps=0, duplicate_seqs=0,
                   lost_s_max=round(max(lost), 3), lost_s_mean=round(sum(lost) / len(lost), 3),
                   lost_energy_j_max=round(max(lost) * mean_power, 3), interval_s=1.0,
                   state_one_behind_recovered=sum("one record behind" in e["ledger"] for e in started))


def test_corrupt_state_file_rebuilt_from_records(daemon_factory, figures):
    """Truncated state file: clear error logged, damaged copy kept, totals rebuilt from the NDJSON records."""
    d = daemon_factory("a").start()
    d.wait_for_records(2)
    assert d.stop() == 0
    before = d.records()
    state = d.state_dir / "carbon_state.json"
    good = state.read_bytes()
    state.write_bytes(good[: len(good) // 2])
    d2 = daemon_factory("a").start()
    d2.wait_for_records(len(before) + 1)
    assert d2.stop() == 0
    records = d2.records()
    _check_continuity(records)
    assert records[len(before)]["seq"] == before[-1]["seq"] + 1
    damaged = [e for e in _events(d2) if e.get("event") == "state_file_damaged"]
    assert len(damaged) == 1 and damaged[0]["level"] == "error"
    assert "rebuilt from the record with the highest seq" in damaged[0]["error"]
    kept = list(d.state_dir.glob("carbon_state.json.corrupt-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == good[: len(good) // 2]
    figures.update(rebuilt_seq=before[-1]["seq"], energy_lost_j=0.0, note=damaged[0]["error"].split("; ", 1)[1])


@pytest.mark.parametrize("damage", ["garbage", "empty", "negative", "wrong-version"])
def test_damaged_state_without_records_starts_at_zero(tmp_path, damage, figures):
    """Damaged state file and no records to rebuild from: copy kept, totals start at zero, and the note says so."""
    from src.components.carbon.ledger import STATE_FILE, Ledger

    content = {"garbage": b"\x00\xff{{", "empty": b"",
               "negative": b'{"version":1,"totals":{"seq":3,"energy_j":{"cpu":-1},"emissions_g":{}}}',
               "wrong-version": b'{"version":9,"totals":{}}'}[damage]
    (tmp_path / "out").mkdir()
    (tmp_path / STATE_FILE).write_bytes(content)
    loaded = Ledger(tmp_path, tmp_path / "out").load()
    totals, note = loaded.totals, loaded.note
    assert totals.seq == 0 and sum(totals.energy_j.values()) == 0
    assert "is damaged" in note and "totals start at zero" in note
    kept = list(tmp_path.glob(f"{STATE_FILE}.corrupt-*"))
    assert [k.read_bytes() for k in kept] == [content]
    figures.update(damage=damage, start="zero")
