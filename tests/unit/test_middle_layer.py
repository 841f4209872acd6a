"""The middle layer's small pure pieces: health, outcomes, settings, ledger origins, NDJSON names, /proc/stat.

Only files under tmp_path are faked; every other object is the real one.
"""

from __future__ import annotations

import dataclasses
import errno
import gzip
import json
import os
import shutil
import socket
import subprocess
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from src.components.carbon import ndjson_files
from src.components.carbon.accounting import Accountant, Identity
from src.components.carbon.health import (
    STALE_AFTER_INTERVALS,
    DaemonInfo,
    HealthSnapshot,
    SourceStatus,
    build_health,
    is_healthy,
    stale_after_s,
)
from src.components.carbon.intensity import DEFAULT_ELECTRICITYMAPS_URL
from src.components.carbon.ledger import STATE_FILE, Ledger, LedgerLoad, LedgerOrigin, SaveStats
from src.components.carbon.outcome import IntervalOutcome, MeasurementStats, SinkStats
from src.components.carbon.record import ComponentEnergy, EmissionsRecord, Intensity, IntervalEnergy, Totals
from src.components.carbon.sinks.prometheus import PrometheusSink
from src.components.carbon.sources import procstat
from src.orchestration.config import TTAConfig
from src.orchestration.settings import apply_live, component_settings

IDENT = Identity("run-1", "host-a", "proj", "test")
INTENSITY = Intensity(400.0, "fixed", "FRA")
END_WALL = 1_795_000_000.0  # 2026-11-18T11:06:40Z


def make_records(n: int, energy: IntervalEnergy | None = None, end_wall: float = END_WALL) -> list[EmissionsRecord]:
    """n consecutive records (seq 1..n, 15 s apart) from the real accountant."""
    energy = energy or IntervalEnergy(
        {"cpu": ComponentEnergy(3600.0, "rapl"), "ram": ComponentEnergy(360.0, "constant")})
    acct = Accountant(Totals())
    return [acct.account(energy, end_wall=end_wall + i * 15, elapsed_s=15.0, intensity=INTENSITY, identity=IDENT)
            for i in range(n)]


# -- health ---------------------------------------------------------------------------------------

INFO = DaemonInfo(version="1.2.3", project="TTA-Test", env="ci", interval_s=15.0, started_at=1_700_000_000.0)


def snapshot(**changes: Any) -> HealthSnapshot:
    """A healthy snapshot: source up, one fresh measurement at t=1000, nothing pending."""
    base = HealthSnapshot(version="v", project="p", env="e", interval_s=10.0, started_at=900.0,
                          tracker_available=True, last_success_at=1000.0, measurements=1)
    return dataclasses.replace(base, **changes)


def test_stale_after_is_the_shared_number_of_intervals():
    assert STALE_AFTER_INTERVALS == 3  # the alert rules and the docs say 3
    assert stale_after_s(15.0) == 45.0
    assert stale_after_s(2.5) == 7.5


def test_build_health_takes_every_field_from_its_source():
    rec = make_records(2)[-1]  # cpu 240 W (rapl), ram 24 W (constant)
    stats = MeasurementStats(measurements=7, errors=2, last_error="warn: split missing",
                             last_success_at=1_700_000_100.0, last_record=rec)
    totals = Totals(seq=42, energy_j={"cpu": 10.0, "ram": 2.5, "gpu": 0.5},
                    emissions_g={"cpu": 1.0, "ram": 0.25, "gpu": 0.125})
    sinks = SinkStats(written=40, pending=1, dropped=3, write_errors=4, last_error="disk full")
    h = build_health(INFO, SourceStatus("rapl", True, ""), stats, totals, sinks,
                     Intensity(55.5, "country_mix", "FRA"), intensity_error="HTTP 503",
                     output_bytes=1234, log_file_bytes=567)
    assert (h.version, h.project, h.env, h.interval_s, h.started_at) == ("1.2.3", "TTA-Test", "ci", 15.0,
                                                                        1_700_000_000.0)
    assert (h.tracker_available, h.tracker_error, h.energy_source) == (True, "", "rapl")
    assert h.energy_method == {"cpu": "rapl", "ram": "constant"}
    assert h.estimated is True
    assert h.last_power_w == pytest.approx(264.0)
    assert (h.measurements, h.measurement_errors, h.last_measurement_error) == (7, 2, "warn: split missing")
    assert h.last_success_at == 1_700_000_100.0
    assert (h.total_emissions_g, h.total_energy_j, h.seq) == (1.375, 13.0, 42)
    assert (h.records_written, h.records_pending, h.records_dropped) == (40, 1, 3)
    assert (h.write_errors, h.last_write_error) == (4, "disk full")
    assert (h.intensity_g_per_kwh, h.intensity_source, h.intensity_error) == (55.5, "country_mix", "HTTP 503")
    assert (h.output_bytes, h.log_file_bytes) == (1234, 567)
    assert h.as_dict()["energy_method"] == {"cpu": "rapl", "ram": "constant"}
    assert h.as_dict()["seq"] == 42


def test_build_health_energy_method_is_a_copy_and_estimated_follows_the_record():
    measured = make_records(1, IntervalEnergy({"cpu": ComponentEnergy(1500.0, "rapl"),
                                               "gpu": ComponentEnergy(750.0, "nvml")}))[0]
    h = build_health(INFO, SourceStatus("rapl", True), MeasurementStats(last_record=measured), Totals(),
                     SinkStats(), INTENSITY)
    assert h.estimated is False
    assert h.last_power_w == pytest.approx(150.0)  # 100 W cpu + 50 W gpu (+ 0 W ram)
    assert h.energy_method == {"cpu": "rapl", "gpu": "nvml"}
    assert h.energy_method is not measured.energy_method


def test_build_health_before_any_measurement():
    h = build_health(INFO, SourceStatus("cpu_load_tdp", False, "no RAPL zones"), MeasurementStats(), Totals(),
                     SinkStats(), INTENSITY)
    assert h.energy_method == {}
    assert h.estimated is True  # nothing measured: nothing claims to be measured
    assert h.last_power_w == 0.0
    assert (h.total_emissions_g, h.total_energy_j, h.seq) == (0.0, 0.0, 0)
    assert (h.tracker_available, h.tracker_error, h.energy_source) == (False, "no RAPL zones", "cpu_load_tdp")
    assert (h.output_bytes, h.log_file_bytes, h.intensity_error) == (0, 0, "")


def test_healthy_snapshot():
    assert is_healthy(snapshot(), now=1005.0) is True


@pytest.mark.parametrize("changes", [
    {"tracker_available": False, "tracker_error": "no RAPL zones"},
    {"last_write_error": "state file: No space left on device"},
    {"records_pending": 1},
], ids=["source-unavailable", "write-failing", "records-pending"])
def test_unhealthy_when(changes):
    assert is_healthy(snapshot(**changes), now=1005.0) is False


def test_old_write_errors_alone_do_not_make_it_unhealthy():
    assert is_healthy(snapshot(write_errors=5, records_dropped=2, measurement_errors=3), now=1005.0) is True


def test_stale_after_three_intervals():
    h = snapshot()  # interval 10 s, last success at 1000
    assert is_healthy(h, now=1000.0 + 29.9) is True
    assert is_healthy(h, now=1000.0 + 30.0) is False  # exactly STALE_AFTER_INTERVALS intervals: stale
    assert is_healthy(h, now=1000.0 + 300.0) is False
    assert is_healthy(dataclasses.replace(h, interval_s=100.0), now=1000.0 + 250.0) is True


def test_no_measurement_yet_counts_as_healthy():
    h = snapshot(last_success_at=0.0, measurements=0)
    assert is_healthy(h, now=905.0) is True
    assert is_healthy(dataclasses.replace(h, tracker_available=False), now=905.0) is False
    # once there has been a measurement, "never succeeded" is no longer an excuse
    assert is_healthy(dataclasses.replace(h, measurements=1), now=905.0) is False


def test_status_line():
    h = snapshot(last_power_w=264.04, total_emissions_g=1.23456, seq=17,
                 energy_method={"ram": "constant", "cpu": "rapl"}, measurement_errors=2, write_errors=5)
    assert h.status_line() == ("power 264.0 W, total 1.235 gCO2eq (17 records), method cpu=rapl,ram=constant, "
                               "errors: 2 measure / 5 write")
    assert snapshot().status_line() == ("power 0.0 W, total 0.000 gCO2eq (0 records), method none, "
                                        "errors: 0 measure / 0 write")


# -- outcome --------------------------------------------------------------------------------------


def test_after_a_record_counts_a_measurement_and_clears_the_error():
    rec = make_records(1)[0]
    before = MeasurementStats(measurements=3, errors=2, last_error="OSError: boom", last_success_at=10.0)
    after = before.after(IntervalOutcome(at=55.0, record=rec))
    assert after == MeasurementStats(4, 2, "", 55.0, rec)
    assert before.measurements == 3 and before.last_error == "OSError: boom"  # a new value, not a mutation


def test_after_a_record_with_a_warning_keeps_the_warning():
    rec = make_records(1)[0]
    after = MeasurementStats().after(IntervalOutcome(at=5.0, record=rec, warning="attribution: ENOENT"))
    assert (after.measurements, after.errors, after.last_error) == (1, 0, "attribution: ENOENT")
    assert after.last_record is rec and after.last_success_at == 5.0


def test_after_an_error_counts_it_and_keeps_the_last_record():
    rec = make_records(1)[0]
    before = MeasurementStats(measurements=1, last_success_at=5.0, last_record=rec)
    after = before.after(IntervalOutcome(at=20.0, error="OSError: EIO"))
    assert after == MeasurementStats(1, 1, "OSError: EIO", 5.0, rec)
    assert after.after(IntervalOutcome(at=35.0, error="OSError: again")).errors == 2


def test_after_nothing_measured_and_nothing_failed_is_unchanged():
    before = MeasurementStats(measurements=2, errors=1, last_error="x", last_success_at=7.0)
    assert before.after(IntervalOutcome(at=99.0)) == before


def test_after_sample_error_is_shown_but_not_counted():
    rec = make_records(1)[0]
    before = MeasurementStats(measurements=2, errors=1, last_error="", last_success_at=7.0, last_record=rec)
    after = before.after_sample_error("PermissionError: /proc/stat")
    assert after == MeasurementStats(2, 1, "PermissionError: /proc/stat", 7.0, rec)
    assert after.after(IntervalOutcome(at=9.0, record=rec)).last_error == ""  # the next measurement clears it


@pytest.mark.parametrize("value, name", [
    (MeasurementStats(), "measurements"),
    (SinkStats(), "written"),
    (IntervalOutcome(at=1.0), "error"),
])
def test_outcome_dataclasses_are_frozen(value, name):
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(value, name, 1)


# -- settings -------------------------------------------------------------------------------------


def load_config(tmp_path: Path, **values: Any) -> TTAConfig:
    return TTAConfig.load({"config_file": "/dev/null", "env_file": "/dev/null",
                           "output_dir": str(tmp_path / "out"), "state_dir": str(tmp_path / "st"),
                           "country_iso_code": "FRA", **values}, environ={})


def write_profile(path: Path, base: float) -> Path:
    path.write_text("hour,g_per_kwh\n" + "".join(f"{h},{base + h}\n" for h in range(24)))
    return path


def test_apply_live_takes_live_settings_and_lists_the_others(tmp_path):
    running = load_config(tmp_path, project_name="Old", intensity_g_per_kwh=100.0, measurement_interval=15.0)
    new = load_config(tmp_path, project_name="New", intensity_g_per_kwh=250.0, measurement_interval=30.0,
                      metrics_port=9999, output_dir=str(tmp_path / "elsewhere"))
    effective, needs_restart = apply_live(running, new)
    assert effective.project_name == "New"
    assert effective.intensity_g_per_kwh == 250.0
    assert effective.measurement_interval == 15.0  # not live: the running value until a restart
    assert effective.metrics_port == running.metrics_port
    assert effective.output_dir == tmp_path / "out"
    # sorted by name (output_dir is declared before measurement_interval)
    assert needs_restart == ["measurement_interval", "metrics_port", "output_dir"]
    assert running.project_name == "Old" and running.intensity_g_per_kwh == 100.0  # running is left alone


def test_apply_live_without_changes_needs_no_restart(tmp_path):
    running = load_config(tmp_path, project_name="Same")
    effective, needs_restart = apply_live(running, load_config(tmp_path, project_name="Same"))
    assert needs_restart == []
    assert effective.model_dump() == running.model_dump()


def test_apply_live_carries_the_new_profile(tmp_path):
    a = write_profile(tmp_path / "a.csv", 100.0)
    b = write_profile(tmp_path / "b.csv", 500.0)
    running = load_config(tmp_path, intensity_profile_file=str(a))
    new = load_config(tmp_path, intensity_profile_file=str(b))
    assert running.intensity_profile.values[0] == 100.0  # the two profiles differ
    effective, needs_restart = apply_live(running, new)
    assert needs_restart == []
    assert effective.intensity_profile_file == b
    assert effective.intensity_profile == new.intensity_profile
    assert effective.intensity_profile.values == tuple(500.0 + h for h in range(24))
    assert running.intensity_profile.values[0] == 100.0  # the running config keeps its own

    dropped, _ = apply_live(running, load_config(tmp_path))
    assert dropped.intensity_profile_file is None and dropped.intensity_profile is None


def test_component_settings_mirror_the_config(tmp_path):
    config = load_config(tmp_path, project_name="Proj", env="prod", measurement_interval=20.0,
                         energy_source="cpu_load_tdp", cpu_tdp_watts=65.0, ram_watts=6.0, gpu="off",
                         powercap_root=str(tmp_path / "powercap"), log_file=str(tmp_path / "carbon.log"),
                         region="idf", intensity_g_per_kwh=52.0,
                         attribution_enabled=False, cgroup_root=str(tmp_path / "cg"),
                         proc_root=str(tmp_path / "proc"), attribution_include=["a.slice/*.service"],
                         attribution_exclude=["a.slice/skip.service"], attribution_top_n=5,
                         metrics_unit_grace=45.0, metrics_address="127.0.0.2", metrics_port=9777)
    s = component_settings(config)
    assert (s.output_dir, s.state_dir, s.log_file) == (tmp_path / "out", tmp_path / "st", tmp_path / "carbon.log")
    assert s.interval_s == 20.0
    assert (s.records.host, s.records.project, s.records.env) == (socket.gethostname(), "Proj", "prod")

    src = s.sources
    assert (src.energy_source, src.powercap_root, src.country_iso_code, src.project_name) == (
        "cpu_load_tdp", tmp_path / "powercap", "FRA", "Proj")
    assert (src.codecarbon_dir, src.cpu_tdp_watts, src.ram_watts, src.gpu) == (tmp_path / "out", 65.0, 6.0, "off")

    i = s.intensity
    assert (i.country_iso_code, i.region, i.fixed_g_per_kwh, i.profile, i.online) == ("FRA", "idf", 52.0, None, None)
    assert i.location == "FRA/idf"

    a = s.attribution
    assert (a.enabled, a.cgroup_root, a.proc_root) == (False, tmp_path / "cg", tmp_path / "proc")
    assert (a.include, a.exclude, a.top_n) == (("a.slice/*.service",), ("a.slice/skip.service",), 5)
    assert a.metrics_grace_s == 45.0

    assert (s.http.address, s.http.port, s.http.web) == ("127.0.0.2", 9777, config.web_config)


def test_component_settings_online_zone_is_derived_from_the_country(tmp_path):
    config = load_config(tmp_path, offline=False, electricitymaps_token="tok-123",
                         electricitymaps_refresh_interval=600.0, electricitymaps_timeout=2.5)
    online = component_settings(config).intensity.online
    assert online is not None
    assert online.zone == "FR"  # FRA is a single-zone country
    assert online.token.get_secret_value() == "tok-123"
    assert (online.url, online.refresh_s, online.timeout_s) == (DEFAULT_ELECTRICITYMAPS_URL, 600.0, 2.5)

    explicit = load_config(tmp_path, offline=False, electricitymaps_token="tok", electricitymaps_zone="FR-COR")
    assert component_settings(explicit).intensity.online.zone == "FR-COR"
    offline = load_config(tmp_path, offline=True, electricitymaps_token="tok")
    assert component_settings(offline).intensity.online is None  # a token alone does not go online


def test_component_settings_profile_and_no_hostname(tmp_path):
    profile = write_profile(tmp_path / "p.csv", 10.0)
    config = load_config(tmp_path, record_hostname=False, intensity_profile_file=str(profile))
    s = component_settings(config)
    assert s.records.host is None
    assert s.intensity.profile is config.intensity_profile
    assert s.intensity.profile.values[23] == 33.0
    assert s.intensity.fixed_g_per_kwh is None


# -- ledger ---------------------------------------------------------------------------------------


def write_ndjson(path: Path, records: list[EmissionsRecord]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r.to_json_dict()) + "\n" for r in records))
    return path


def live_path(records_dir: Path, rec: EmissionsRecord) -> Path:
    return records_dir / ndjson_files.file_name(rec.interval_end[:10])


def test_ledger_fresh(tmp_path):
    load = Ledger(tmp_path / "st", tmp_path / "out").load()
    assert load.origin is LedgerOrigin.FRESH
    assert load.totals == Totals() and load.where == "" and not load.damaged
    assert load.note == "no state file; totals start at zero"


def test_ledger_state(tmp_path):
    state_dir = tmp_path / "st"
    state_dir.mkdir()
    recs = make_records(3)
    write_ndjson(live_path(tmp_path / "out", recs[0]), recs)  # the records are not ahead of the state
    ledger = Ledger(state_dir, tmp_path / "out")
    assert ledger.save(recs[2].totals) is True
    load = Ledger(state_dir, tmp_path / "out").load()
    assert load.origin is LedgerOrigin.STATE
    assert load.totals == recs[2].totals
    assert load.where == str(state_dir / STATE_FILE)
    assert load.note == f"totals continue from {state_dir / STATE_FILE} (seq 3)"


def test_ledger_record_ahead(tmp_path):
    state_dir = tmp_path / "st"
    state_dir.mkdir()
    recs = make_records(3)
    newest = write_ndjson(live_path(tmp_path / "out", recs[0]), recs)
    Ledger(state_dir).save(recs[1].totals)  # killed after appending record 3, before saving its state
    load = Ledger(state_dir, tmp_path / "out").load()
    assert load.origin is LedgerOrigin.RECORD_AHEAD
    assert load.totals == recs[2].totals
    assert load.where == newest.name
    assert load.note == f"totals continue from {newest.name} (seq 3; state file was one record behind)"


def test_ledger_records_ahead_by_many_win_so_no_seq_is_reused(tmp_path):
    """Saves refused for a while, appends not: the state file fell behind by several records. Trusting
    it (as when this test read "two records ahead is not trusted") reissued seq 2 and 3 and lost their energy."""
    state_dir = tmp_path / "st"
    state_dir.mkdir()
    recs = make_records(3)
    write_ndjson(live_path(tmp_path / "out", recs[0]), recs)
    Ledger(state_dir).save(recs[0].totals)
    load = Ledger(state_dir, tmp_path / "out").load()
    assert load.origin is LedgerOrigin.RECORD_AHEAD and load.totals == recs[2].totals
    assert load.note.endswith("(seq 3; state file was 2 records behind)")


def test_ledger_without_a_state_file_continues_from_the_records(tmp_path):
    state_dir, out = tmp_path / "st", tmp_path / "out"
    state_dir.mkdir()
    recs = make_records(3)
    write_ndjson(live_path(out, recs[0]), recs)
    load = Ledger(state_dir, out).load()
    assert load.origin is LedgerOrigin.RECORDS_ONLY and load.totals == recs[2].totals
    assert load.note.startswith("no state file; totals continue from the record with the highest seq (3, ")


def test_ledger_reads_only_the_tail_of_a_large_day_file(tmp_path, monkeypatch):
    from src.components.carbon import ndjson_files

    state_dir, out = tmp_path / "st", tmp_path / "out"
    state_dir.mkdir()
    recs = make_records(3)
    live = live_path(out, recs[0])
    write_ndjson(live, recs)
    with open(live, "r+b") as fh:  # 50 MB of older lines before the newest records
        body = fh.read()
        fh.seek(0)
        fh.write(b'{"old": 1}\n' * 5_000_000 + body)
    monkeypatch.setattr(ndjson_files, "read_lines", lambda path: pytest.fail(f"read whole: {path}"))
    load = Ledger(state_dir, out).load()
    assert load.totals == recs[2].totals


def test_ledger_rebuilt_from_the_highest_seq_when_damaged(tmp_path):
    state_dir, out = tmp_path / "st", tmp_path / "out"
    state_dir.mkdir()
    (state_dir / STATE_FILE).write_bytes(b"{not json")
    recs = make_records(4)
    live = live_path(out, recs[0])
    write_ndjson(live.with_name(live.name + ".1"), recs[2:])  # the rotated copy holds the highest seq
    write_ndjson(live, recs[:2])
    load = Ledger(state_dir, out).load()
    assert load.origin is LedgerOrigin.REBUILT
    assert load.totals == recs[3].totals
    assert load.where == live.name + ".1"
    assert load.damaged and load.damage.startswith(f"state file {state_dir / STATE_FILE} is damaged (")
    assert load.note == f"{load.damage}; totals rebuilt from the record with the highest seq (4, {load.where})"
    kept = [p for p in state_dir.iterdir() if p.name.startswith(f"{STATE_FILE}.corrupt-")]
    assert len(kept) == 1 and kept[0].read_bytes() == b"{not json"  # kept aside, never deleted
    assert load.damage.endswith(f"kept as {kept[0].name}")
    assert not (state_dir / STATE_FILE).exists()


def test_ledger_zero_after_damage_without_records(tmp_path):
    state_dir, out = tmp_path / "st", tmp_path / "out"
    state_dir.mkdir()
    out.mkdir()
    (out / "notes.txt").write_text('{"seq": 9}\n')  # not a records file
    (state_dir / STATE_FILE).write_text(json.dumps({"version": 99, "totals": Totals().to_dict()}))
    load = Ledger(state_dir, out).load()
    assert load.origin is LedgerOrigin.ZERO_AFTER_DAMAGE
    assert load.totals == Totals() and load.where == ""
    assert "unsupported state version 99" in load.damage
    assert load.note == f"{load.damage}; no readable records; totals start at zero"


def test_ledger_note_for_every_origin_is_one_distinct_line():
    t = Totals(seq=5)
    notes = {o: LedgerLoad(t, o, "f.json", "state file s is damaged (x); kept as y").note for o in LedgerOrigin}
    assert all(n and "\n" not in n for n in notes.values())
    assert len(set(notes.values())) == len(LedgerOrigin)


# -- unmeasured time between runs (issue 13, item 11c) ---------------------------------------


def _with_unmeasured(recs: list[EmissionsRecord], unmeasured_s: float) -> list[EmissionsRecord]:
    out = []
    for r in recs:
        totals = r.totals.copy()
        totals.unmeasured_s = unmeasured_s
        out.append(dataclasses.replace(r, totals=totals))
    return out


def test_ledger_knows_the_last_record_and_counts_the_gap_to_the_first_interval(tmp_path):
    state_dir, out = tmp_path / "st", tmp_path / "out"
    state_dir.mkdir()
    recs = _with_unmeasured(make_records(3), 7.5)
    write_ndjson(live_path(out, recs[0]), recs)
    assert Ledger(state_dir, out).save(recs[2].totals, recs[2]) is True
    saved = json.loads((state_dir / STATE_FILE).read_text())
    assert saved["totals"]["unmeasured_s"] == 7.5
    assert saved["last"] == {"interval_end": recs[2].interval_end, "final": False}
    load = Ledger(state_dir, out).load()
    assert load.origin is LedgerOrigin.STATE and load.totals.unmeasured_s == 7.5  # restored like the totals
    end = END_WALL + 2 * 15
    # Killed (no final record): the gap is named however short, with the previous run's fate.
    gapped = load.with_gap(end + 3.25, interval_s=15.0)
    assert gapped.gap_s == pytest.approx(3.25) and gapped.gap_notable
    assert gapped.note == (f"totals continue from {state_dir / STATE_FILE} (seq 3); 3.2s unmeasured since the last "
                           f"record ({recs[2].interval_end}): the previous run ended without a final record "
                           "(killed: watchdog, SIGKILL, power loss); unmeasured_s now 10.8")
    assert load.with_gap(end - 60, 15.0).gap_s == 0.0  # the clock stepped back: nothing counted, nothing negative


def test_ledger_gap_after_a_clean_stop_is_counted_and_named_only_when_long(tmp_path):
    state_dir = tmp_path / "st"
    state_dir.mkdir()
    recs = make_records(2)
    final = dataclasses.replace(recs[1], final=True)
    Ledger(state_dir).save(final.totals, final)
    load = Ledger(state_dir).load()
    end = END_WALL + 15
    restart = load.with_gap(end + 2.0, interval_s=15.0)  # systemctl restart: a couple of seconds
    assert restart.gap_s == pytest.approx(2.0) and not restart.gap_notable
    assert restart.note == load.note
    long = load.with_gap(end + 23.0, interval_s=15.0)  # more than 1.5 intervals
    assert long.gap_notable and "23.0s unmeasured" in long.note and "stopped cleanly (final record)" in long.note


def test_ledger_gap_reference_comes_from_the_records_when_the_state_file_cannot_say(tmp_path):
    state_dir, out = tmp_path / "st", tmp_path / "out"
    state_dir.mkdir()
    recs = _with_unmeasured(make_records(3), 4.0)
    write_ndjson(live_path(out, recs[0]), recs)
    # A state file from before this change: no "last", no unmeasured_s.
    (state_dir / STATE_FILE).write_text(json.dumps({"version": 1, "totals": {
        k: v for k, v in recs[2].totals.to_dict().items() if k != "unmeasured_s"}}))
    load = Ledger(state_dir, out).load()
    assert load.origin is LedgerOrigin.STATE and load.totals.unmeasured_s == 0.0
    assert load.last is not None and load.last.interval_end == recs[2].interval_end
    # Killed between appending record 3 and saving its state: the record's totals (its unmeasured_s) win.
    Ledger(state_dir).save(recs[1].totals, recs[1])
    load = Ledger(state_dir, out).load()
    assert load.origin is LedgerOrigin.RECORD_AHEAD and load.totals.unmeasured_s == 4.0
    assert load.last is not None and load.last.interval_end == recs[2].interval_end
    # State file damaged: rebuilt from the records, unmeasured_s included.
    (state_dir / STATE_FILE).write_bytes(b"{not json")
    load = Ledger(state_dir, out).load()
    assert load.origin is LedgerOrigin.REBUILT and load.totals.unmeasured_s == 4.0
    assert load.last is not None and load.last.interval_end == recs[2].interval_end
    # No reference at all (fresh): no gap, no note.
    fresh = Ledger(tmp_path / "none", tmp_path / "none-out").load().with_gap(END_WALL, 15.0)
    assert fresh.gap_s is None and fresh.note == "no state file; totals start at zero"


def test_ledger_gap_reference_is_the_later_of_state_file_and_records(tmp_path):
    state_dir, out = tmp_path / "st", tmp_path / "out"
    state_dir.mkdir()
    old = make_records(5)  # left over from before the operator removed the state file
    write_ndjson(live_path(out, old[0]), old)
    new = make_records(2, end_wall=END_WALL + 600)  # a state file saved later, at a lower seq
    Ledger(state_dir).save(new[1].totals, new[1])
    load = Ledger(state_dir, out).load()
    # The records' seq wins (none is ever reissued); the gap runs from the later measured moment.
    assert load.origin is LedgerOrigin.RECORD_AHEAD and load.totals == old[4].totals and load.last is not None
    assert load.last.interval_end == new[1].interval_end
    # Saves failing for a while: the state file's "last" is older than the newest record, which wins.
    Ledger(state_dir).save(old[1].totals, old[1])
    load = Ledger(state_dir, out).load()
    assert load.last is not None and load.last.interval_end == old[4].interval_end


def test_record_and_metrics_carry_unmeasured_seconds():
    recs = _with_unmeasured(make_records(2), 12.5)
    assert recs[0].to_json_dict()["totals"]["unmeasured_s"] == 12.5
    with pytest.raises(ValueError, match="unmeasured_s must be a number from 0 to 1e[+]200"):
        Totals.from_dict({**Totals().to_dict(), "unmeasured_s": -1})
    sink = PrometheusSink()
    health = build_health(DaemonInfo("v", "p", "e", 15.0, 900.0), SourceStatus("rapl", True), MeasurementStats(),
                          recs[0].totals, SinkStats(), INTENSITY)
    assert health.as_dict()["unmeasured_s"] == 12.5  # /healthz
    sink.restore(recs[0].totals)  # at start, before the first record
    sink.update(health, None)
    page = sink.page().decode()
    assert "# TYPE tta_carbon_unmeasured_seconds_total counter" in page
    assert "\ntta_carbon_unmeasured_seconds_total 12.5\n" in page
    sink.update(health, recs[1])
    assert "\ntta_carbon_unmeasured_seconds_total 12.5\n" in sink.page().decode()
    if shutil.which("promtool"):
        res = subprocess.run(["promtool", "check", "metrics"], check=False, input=sink.page().decode(),
                             capture_output=True, text=True)
        assert res.returncode == 0, res.stdout + res.stderr


def test_ledger_save_failure_is_counted_then_recovers(tmp_path):
    state_dir = tmp_path / "st"
    state_dir.write_text("a regular file where the directory should be")  # fails even for root
    ledger = Ledger(state_dir)
    totals = Totals(seq=2, energy_j={"cpu": 1.0, "ram": 0.0, "gpu": 0.0, "remainder": 0.0})
    assert ledger.save(totals) is False
    assert ledger.stats.errors == 1
    assert ledger.stats.last_error == f"state file {state_dir / STATE_FILE}: {os.strerror(errno.ENOTDIR)}"
    assert ledger.save(totals) is False
    assert ledger.stats.errors == 2

    state_dir.unlink()
    state_dir.mkdir()
    assert ledger.save(totals) is True
    assert ledger.stats == SaveStats(errors=2, last_error="")  # the counter keeps the history
    load = Ledger(state_dir).load()
    assert load.origin is LedgerOrigin.STATE and load.totals == totals
    assert [p.name for p in state_dir.iterdir()] == [STATE_FILE]  # no temp file left behind


# -- ndjson_files ---------------------------------------------------------------------------------


def test_file_names():
    assert ndjson_files.file_name("2026-11-28") == "emissions_2026-11-28.json"
    assert ndjson_files.file_name_at(END_WALL) == "emissions_2026-11-18.json"
    assert ndjson_files.file_name_at(1_798_761_599.0) == "emissions_2026-12-31.json"  # 23:59:59 UTC
    assert ndjson_files.file_name_at(1_798_761_600.0) == "emissions_2027-01-01.json"  # midnight UTC


@pytest.mark.parametrize("name, records, live", [
    ("emissions_2026-11-28.json", True, True),
    ("emissions_2026-11-28.json.1", True, False),
    ("emissions_2026-11-28.json.2.gz", True, False),
    ("emissions_2026-11-28.json-20261128", True, False),
    ("emissions_2026-11-28.json.gz", True, False),
    ("emissions_2026-11-28.json.tmp", False, False),
    ("emissions_2026-11-28.json.1.bak", False, False),
    ("emissions_2026-11-28.ndjson", False, False),
    ("emissions_26-11-28.json", False, False),
    ("xemissions_2026-11-28.json", False, False),
    ("carbon_state.json", False, False),
    (".emissions_2026-11-28.json.swp", False, False),
])
def test_records_file_names(name, records, live):
    assert ndjson_files.is_records_file(name) is records
    assert ndjson_files.is_live(name) is live


def test_day_of():
    assert ndjson_files.day_of("emissions_2026-11-28.json") == date(2026, 11, 28)
    assert ndjson_files.day_of("emissions_2026-11-28.json.2.gz") == date(2026, 11, 28)
    assert ndjson_files.day_of("emissions_2026-11-28.json-20261201") == date(2026, 11, 28)
    assert ndjson_files.day_of("emissions_2026-02-30.json") is None
    assert ndjson_files.day_of("emissions_2026-13-01.json") is None
    assert ndjson_files.day_of("x") is None


def test_list_files_and_newest_live_file(tmp_path):
    names = ["emissions_2026-11-28.json.1", "emissions_2026-11-29.json", "emissions_2026-11-27.json.2.gz",
             "emissions_2026-11-28.json"]
    for n in names:
        (tmp_path / n).write_text("{}\n")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "emissions_2026-11-30.json.tmp").write_text("x")
    (tmp_path / "emissions_2026-12-01.json").mkdir()  # a directory with a records name
    assert [p.name for p in ndjson_files.list_files(tmp_path)] == sorted(names)
    assert ndjson_files.list_files(tmp_path)[0].parent == tmp_path
    assert ndjson_files.newest_live_file(tmp_path) == tmp_path / "emissions_2026-11-29.json"


def test_newest_live_file_ignores_rotated_copies(tmp_path):
    assert ndjson_files.newest_live_file(tmp_path) is None
    (tmp_path / "emissions_2026-11-30.json.1").write_text("{}\n")
    assert ndjson_files.newest_live_file(tmp_path) is None
    (tmp_path / "emissions_2026-11-01.json").write_text("{}\n")
    assert ndjson_files.newest_live_file(tmp_path) == tmp_path / "emissions_2026-11-01.json"


def test_list_files_raises_oserror_for_a_missing_directory(tmp_path):
    with pytest.raises(OSError):
        ndjson_files.list_files(tmp_path / "missing")


def test_read_lines_plain_and_gzip(tmp_path):
    body = b'{"seq":1}\n{"seq":2}\n'
    plain = tmp_path / "emissions_2026-11-28.json"
    plain.write_bytes(body)
    packed = tmp_path / "emissions_2026-11-27.json.1.gz"
    packed.write_bytes(gzip.compress(body))
    assert [x for x in ndjson_files.read_lines(plain) if x] == [b'{"seq":1}', b'{"seq":2}']
    assert ndjson_files.read_lines(packed) == ndjson_files.read_lines(plain)
    (tmp_path / "emissions_2026-11-26.json.gz").write_bytes(body)  # not gzip: an OSError, as promised
    with pytest.raises(OSError):
        ndjson_files.read_lines(tmp_path / "emissions_2026-11-26.json.gz")
    (tmp_path / "emissions_2026-11-25.json.gz").write_bytes(gzip.compress(body)[:-12])  # truncated
    with pytest.raises(EOFError):
        ndjson_files.read_lines(tmp_path / "emissions_2026-11-25.json.gz")


def test_total_bytes(tmp_path):
    (tmp_path / "emissions_2026-11-28.json").write_bytes(b"x" * 100)
    (tmp_path / "emissions_2026-11-27.json.1.gz").write_bytes(b"y" * 20)
    (tmp_path / "other.json").write_bytes(b"z" * 1000)
    (tmp_path / "emissions_2026-11-26.json").mkdir()
    outside = tmp_path.parent / f"{tmp_path.name}-big"
    outside.write_bytes(b"w" * 5000)
    (tmp_path / "emissions_2026-11-25.json").symlink_to(outside)  # not followed
    assert ndjson_files.total_bytes(tmp_path) == 120
    assert ndjson_files.total_bytes(tmp_path / "missing") == 0


# -- procstat -------------------------------------------------------------------------------------


def write_stat(proc: Path, text: str) -> Path:
    proc.mkdir(exist_ok=True)
    (proc / "stat").write_text(text)
    return proc


def test_read_cpu_ticks(tmp_path):
    proc = write_stat(tmp_path / "proc", "cpu  100 20 30 400 50 6 7 8 90 10\n"
                                         "cpu0 50 10 15 200 25 3 3 4 45 5\nintr 12345\n")
    ticks = procstat.read_cpu_ticks(proc)
    assert ticks.total == 621  # user..steal; guest and guest_nice are already in user and nice
    assert ticks.busy == 171  # everything but idle (400) and iowait (50)
    assert procstat.USER_HZ == os.sysconf("SC_CLK_TCK")
    assert ticks.total_ns == 621 * 1_000_000_000 // procstat.USER_HZ
    assert procstat.CpuTicks(busy=0, total=procstat.USER_HZ).total_ns == 1_000_000_000


@pytest.mark.parametrize("text", ["cpu0 1 2 3 4 5 6 7 8\n", "intr 1 2 3\ncpu 1 2 3 4 5 6 7 8\n", "", "\n"])
def test_read_cpu_ticks_needs_a_leading_cpu_line(tmp_path, text):
    proc = write_stat(tmp_path / "proc", text)
    with pytest.raises(ValueError, match="does not start with a cpu line"):
        procstat.read_cpu_ticks(proc)


def test_read_cpu_ticks_missing_file_is_an_oserror(tmp_path):
    with pytest.raises(OSError):
        procstat.read_cpu_ticks(tmp_path / "no-proc")


def test_cpu_tick_reader_keeps_the_file_open_and_reads_fresh_figures(tmp_path):
    proc = write_stat(tmp_path / "proc", "cpu  100 20 30 400 50 6 7 8 90 10\nintr 1\n")
    reader = procstat.CpuTickReader(proc)
    assert reader.read() == procstat.read_cpu_ticks(proc)
    fd = reader._fd
    (proc / "stat").write_text("cpu  200 20 30 500 50 6 7 8 0 0\n")  # same inode, new figures
    assert reader.read() == procstat.CpuTicks(busy=271, total=821)
    assert reader._fd == fd  # one descriptor for every sample
    long_line = "cpu  " + " ".join(["12345678901234567890"] * 30) + "\n"  # past the 512-byte first read
    (proc / "stat").write_text(long_line)
    assert reader.read() == procstat.read_cpu_ticks(proc)
    (proc / "stat").write_text("intr 1\n")
    with pytest.raises(ValueError, match="does not start with a cpu line"):
        reader.read()
    reader.close()
    assert reader._fd is None
    reader.close()  # idempotent


def test_cpu_tick_reader_unreadable_is_an_oserror(tmp_path):
    reader = procstat.CpuTickReader(tmp_path / "no-proc")
    with pytest.raises(OSError):
        reader.read()
    assert reader._fd is None


def test_healthz_bodies_are_encoded_when_fetched_not_every_interval(tmp_path, monkeypatch):
    """Each interval builds a snapshot; its two JSON bodies are encoded on the first GET /healthz
    (before, both were encoded at start and at every interval: 14 times here, for pages nobody fetched)."""
    import urllib.request

    from src.components.carbon_component import CarbonComponent
    from tests.support.daemon import free_port

    encoded: list[str] = []
    for name in ("as_dict", "public_dict"):
        real = getattr(HealthSnapshot, name)
        monkeypatch.setattr(HealthSnapshot, name,
                            lambda self, _real=real, _name=name: encoded.append(_name) or _real(self))
    cfg = load_config(tmp_path, energy_source="cpu_load_tdp", cpu_tdp_watts="100", intensity_g_per_kwh="400",
                      metrics_address="127.0.0.1", metrics_port=str(free_port()), log_file="")
    comp = CarbonComponent(cfg)
    comp.start()
    try:
        for _ in range(5):
            assert comp.measure_once().record is not None
        assert encoded == []
        url = f"http://127.0.0.1:{comp.metrics_port}/healthz"
        bodies = [json.loads(urllib.request.urlopen(url, timeout=5).read()) for _ in range(3)]
        assert encoded == ["as_dict"]  # no credentials configured: every client gets the full body, encoded once
        assert bodies[0] == bodies[2] and bodies[0]["measurements"] == 5
        comp.measure_once()
        assert json.loads(urllib.request.urlopen(url, timeout=5).read())["measurements"] == 6
        assert encoded == ["as_dict", "as_dict"]
        public = json.loads(comp._health_route(False)[1])  # what a client without credentials gets
        assert public["measurements"] == 6 and encoded[-1] == "public_dict"
    finally:
        comp.stop()
