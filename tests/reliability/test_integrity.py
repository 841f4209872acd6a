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


def test_state_file_left_behind_by_refused_saves_is_reconciled_with_the_records(daemon_factory, figures):
    """State dir refusing writes for several intervals (chattr +i) while records go on, then stop and start: totals continue from the newest record, no seq is reissued (before: seq 4 and up issued again, totals fell by half)."""
    from tests.reliability.conftest import wait_until

    d = daemon_factory().start()
    d.wait_for_records(2)
    state = d.state_dir / "carbon_state.json"
    wait_until(lambda: state.exists(), what="the state file")
    subprocess.run(["chattr", "+i", str(d.state_dir)], check=True)
    try:
        n = len(d.records())
        wait_until(lambda: len(d.records()) >= n + 5, what="five records while the state dir refuses saves")
        assert d.stop() == 0
    finally:
        subprocess.run(["chattr", "-i", str(d.state_dir)], check=True)
    saved = json.loads(state.read_text())["totals"]
    before = d.records()
    behind = before[-1]["seq"] - saved["seq"]
    assert behind >= 5, (saved["seq"], before[-1]["seq"])
    d2 = daemon_factory().start()  # the same work dir: the same output and state directories
    d2.wait_for_records(len(before) + 1)
    assert d2.stop() == 0
    after = d2.records()
    seqs = [r["seq"] for r in after]
    assert seqs == list(range(1, len(seqs) + 1)), seqs  # contiguous: nothing reissued, nothing skipped
    resumed = after[len(before)]
    assert resumed["totals"]["energy_j"]["total"] >= before[-1]["totals"]["energy_j"]["total"]
    figures.update(state_behind=behind, records=len(after), seq_reused=0,
                   energy_j_before=round(before[-1]["totals"]["energy_j"]["total"], 3),
                   energy_j_resumed=round(resumed["totals"]["energy_j"]["total"], 3))


def test_report_on_hostile_files_skips_and_counts_and_never_crashes(tmp_path, figures):
    """`tta-carbon report` on hostile files: a `.gz` that is not gzip and a truncated one (crashed the report), `"seq":1e400` and a 400-digit number (crashed it), a line reported skipped but counted, NaN (bare `NaN` in --json), a unit name with ESC/CR (printed raw): each skipped and counted, totals exactly the good lines'."""
    import gzip

    from tests.support.daemon import REPO, TTA_CARBON, clean_env

    def rec(seq: int, joules: float, **extra) -> dict:
        return {"run_id": "r1", "seq": seq, "interval_end": "2026-11-30T10:00:00Z",
                "energy_j": {"cpu": joules, "ram": 1.0, "gpu": 0.0},
                "emissions_g": {"cpu": joules / 100, "ram": 0.01, "gpu": 0.0}, **extra}

    good = [rec(1, 10.0), rec(2, 20.0, units={"web\x1b[2J\r.service": {"energy_j": 5.0, "emissions_g": 0.05,
                                                                          "cpu_s": 1.0}})]
    lines = [json.dumps(r) for r in good]
    lines.append(json.dumps(rec(3, 30.0)).replace('"seq": 3', '"seq": 1e400'))
    lines.append(json.dumps(rec(4, 40.0)).replace("40.0", "4" * 400, 1))
    lines.append(json.dumps(rec(5, 50.0, units={"bad": "not a mapping"})))  # was counted, then "skipped"
    lines.append(json.dumps(rec(6, 60.0)).replace("60.0", "NaN", 1))
    (tmp_path / "emissions_2026-11-30.json").write_text("\n".join(lines) + "\n")
    (tmp_path / "emissions_2026-11-29.json.1.gz").write_bytes(b"this is not gzip\n")
    whole = gzip.compress((json.dumps(rec(7, 70.0) | {"run_id": "r0"}) + "\n").encode() * 50)
    (tmp_path / "emissions_2026-11-28.json.2.gz").write_bytes(whole[: len(whole) // 2])
    out = {}
    for args in (["--json"], ["--by", "unit"]):
        proc = subprocess.run([*TTA_CARBON, "report", "--dir", str(tmp_path), *args], cwd=REPO, env=clean_env(),
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        out[args[-1]] = proc
    report = json.loads(out["--json"].stdout, parse_constant=lambda c: pytest.fail(f"bare {c} in --json"))
    assert report["invalid_lines"] == 4, report
    assert len(report["unreadable_files"]) == 2 and any("not a gzipped file" in u.lower() for u in report["unreadable_files"])
    truncated_ok = report["overall"]["records"] - 2  # lines of the cut .gz read before the cut count once each
    assert report["overall"]["energy_j"]["cpu"] == 30.0 + 70.0 * truncated_ok, report["overall"]
    by_unit = out["unit"].stdout
    assert "\x1b" not in by_unit and "\r" not in by_unit and "web\\x1b[2J\\r.service" in by_unit, by_unit
    figures.update(invalid_lines=4, unreadable_files=2, records=report["overall"]["records"],
                   raw_control_chars_printed=0)


def test_state_totals_near_the_float_limit_are_damage_not_a_crash(daemon_factory, figures):
    """State totals of 1e308 (a damaged file, or one written by hand): the daemon starts, keeps the copy and rebuilds from the records (before: the next interval overflowed to inf and every start crashed)."""
    d = daemon_factory().start()
    d.wait_for_records(2)
    assert d.stop() == 0
    before = d.records()
    state = d.state_dir / "carbon_state.json"
    doc = json.loads(state.read_text())
    doc["totals"]["energy_j"]["cpu"] = 1e308
    state.write_text(json.dumps(doc))
    d2 = daemon_factory().start()
    d2.wait_for_records(len(before) + 1)
    assert d2.stop() == 0
    records = d2.records()
    _check_continuity(records)
    total = records[-1]["totals"]["energy_j"]["total"]
    assert total < 1e6 and total == total, total  # finite, rebuilt from the records
    damaged = [e for e in _events(d2) if e.get("event") == "state_file_damaged"]
    assert len(damaged) == 1 and "1e+308" in damaged[0]["error"], damaged
    figures.update(planted=1e308, resumed_total_j=round(total, 3), exit=0)
