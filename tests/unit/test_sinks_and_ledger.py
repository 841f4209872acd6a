"""NDJSON writer, ledger and accounting on real files (tmpfs-backed tmp dirs)."""

from __future__ import annotations

import json
import os

import pytest

from src.components.carbon.accounting import Accountant, Identity
from src.components.carbon.ledger import STATE_FILE, Ledger
from src.components.carbon.record import ComponentEnergy, Intensity, IntervalEnergy, Totals
from src.components.carbon.sinks.ndjson import NdjsonSink

IDENT = Identity("run-1", "host-a", "proj", "test")
INTENSITY = Intensity(400.0, "fixed", "FRA")


def make_records(n: int, end_wall: float = 1_795_000_000.0):
    acct = Accountant(Totals())
    out = []
    for i in range(n):
        energy = IntervalEnergy({"cpu": ComponentEnergy(3600.0, "rapl"), "ram": ComponentEnergy(360.0, "constant")})
        out.append(acct.account(energy, end_wall=end_wall + i * 15, elapsed_s=15.0, intensity=INTENSITY,
                                identity=IDENT))
    return out


def lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_accounting_figures_and_totals():
    recs = make_records(3)
    r = recs[-1].to_json_dict()
    assert r["seq"] == 3 and r["duration_s"] == 15.0
    assert r["power_w"]["cpu"] == 240.0 and r["energy_kwh"]["cpu"] == 0.001
    assert r["emissions_g"]["cpu"] == pytest.approx(0.4) and r["emissions_g"]["ram"] == pytest.approx(0.04)
    assert r["estimated"] is True and r["energy_method"] == {"cpu": "rapl", "ram": "constant"}
    assert r["totals"]["energy_j"]["total"] == 3 * 3960.0 and r["totals"]["records"] == 3
    assert r["interval_start"] == "2026-11-18T11:06:55.000Z" and r["interval_end"] == "2026-11-18T11:07:10.000Z"


def test_writer_appends_whole_lines_and_follows_rename(tmp_path):
    sink = NdjsonSink(tmp_path)
    recs = make_records(4)
    sink.write(recs[0])
    sink.write(recs[1])
    day_file = tmp_path / "emissions_2026-11-18.json"
    os.rename(day_file, tmp_path / "emissions_2026-11-18.json.1")  # what logrotate does
    sink.write(recs[2])
    day_file.unlink()  # an operator deletes it
    sink.write(recs[3])
    assert [r["seq"] for r in lines(tmp_path / "emissions_2026-11-18.json.1")] == [1, 2]
    assert [r["seq"] for r in lines(day_file)] == [4]
    assert sink.stats.written == 4 and sink.stats.write_errors == 0
    assert oct(day_file.stat().st_mode & 0o777) == "0o644"


def test_writer_recreates_deleted_directory(tmp_path):
    out = tmp_path / "out"
    sink = NdjsonSink(out)
    recs = make_records(2)
    sink.write(recs[0])
    for p in out.iterdir():
        p.unlink()
    out.rmdir()
    assert sink.write(recs[1]) is True
    assert [r["seq"] for r in lines(out / "emissions_2026-11-18.json")] == [2]


def test_writer_buffers_refused_records_in_order_and_counts_drops(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    sink = NdjsonSink(out, max_pending=2)
    recs = make_records(4)
    blocker = out / "emissions_2026-11-18.json"
    blocker.mkdir()  # a directory where the file should be: every open fails, even for root
    assert sink.write(recs[0]) is False
    assert sink.write(recs[1]) is False
    assert sink.write(recs[2]) is False  # buffer holds 2: the oldest is dropped and counted
    assert sink.pending == 2 and sink.stats.dropped == 1 and sink.stats.write_errors == 3
    assert "Is a directory" in sink.stats.last_error
    blocker.rmdir()
    assert sink.write(recs[3]) is True
    assert [r["seq"] for r in lines(blocker)] == [2, 3, 4]
    assert sink.pending == 0 and sink.stats.last_error == ""


def test_ledger_roundtrip_and_corrupt_file_kept(tmp_path):
    ledger = Ledger(tmp_path)
    loaded = ledger.load()
    totals, note = loaded.totals, loaded.note
    assert totals.seq == 0 and "no state file" in note
    totals.seq = 7
    totals.energy_j["cpu"] = 12.5
    ledger.save(totals)
    loaded = Ledger(tmp_path).load()
    again, note = loaded.totals, loaded.note
    assert again.seq == 7 and again.energy_j["cpu"] == 12.5 and "continue" in note
    (tmp_path / STATE_FILE).write_text('{"version": 1, "totals": {"seq": 3, "energy_j": {')  # truncated
    loaded = Ledger(tmp_path).load()
    fresh, note = loaded.totals, loaded.note
    assert fresh.seq == 0 and "damaged" in note and "start at zero" in note
    kept = [p for p in tmp_path.iterdir() if p.name.startswith(f"{STATE_FILE}.corrupt-")]
    assert len(kept) == 1 and kept[0].read_text().startswith('{"version": 1')
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp files left


def test_ledger_rejects_negative_totals(tmp_path):
    (tmp_path / STATE_FILE).write_text(json.dumps(
        {"version": 1, "totals": {"seq": 2, "energy_j": {"cpu": -1}, "emissions_g": {}}}))
    loaded = Ledger(tmp_path).load()
    totals, note = loaded.totals, loaded.note
    assert totals.seq == 0 and "energy_j.cpu must be a number from 0 to 1e+200" in note


def test_ledger_treats_totals_near_the_float_limit_as_damaged(tmp_path):
    """Totals of 1e308 overflowed to inf at the next interval, and every start then crashed."""
    (tmp_path / STATE_FILE).write_text(json.dumps(
        {"version": 1, "totals": {"seq": 2, "energy_j": {"cpu": 1e308}, "emissions_g": {}}}))
    loaded = Ledger(tmp_path).load()
    assert loaded.damaged and loaded.totals.seq == 0
    assert "energy_j.cpu must be a number from 0 to 1e+200, got 1e+308" in loaded.note


def test_two_damaged_state_files_within_one_second_are_both_kept(tmp_path):
    """The copy was named by the second only: a second damage in that second replaced the first copy."""
    first, second = b"\x00damaged one", b"\x00damaged two"
    for content in (first, second):
        (tmp_path / STATE_FILE).write_bytes(content)
        assert Ledger(tmp_path).load().damaged
    kept = sorted(p.read_bytes() for p in tmp_path.glob(f"{STATE_FILE}.corrupt-*"))
    assert kept == sorted([first, second])
