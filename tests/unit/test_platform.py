"""Platform meters: integration per interval, failures and coverage, hwmon discovery, the remainder, the fit."""

from __future__ import annotations

import logging
import math
import time

import pytest

from src.components.carbon.accounting import Accountant, Identity
from src.components.carbon.calibration import PlatformFit
from src.components.carbon.record import (
    ComponentEnergy,
    CpuTimeDelta,
    Intensity,
    IntervalEnergy,
    SourceUnavailable,
    Totals,
)
from src.components.carbon.sources.hwmon import HwmonMeter, platform_meters
from src.components.carbon.sources.platform import MeterError, MeterReading, PlatformSource, platform_device
from tests.fixtures.fake_hwmon import FakeHwmon
from tests.fixtures.power_profile import PowerProfile


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class ScriptedMeter:
    """Readings from a list; an Exception item is raised as MeterError."""

    method = "hwmon"
    blocking_ok = True
    default_period_s = 1.0

    def __init__(self, readings: list) -> None:
        self.readings = list(readings)
        self.device = platform_device("scripted")

    def read(self, timeout_s: float) -> MeterReading:
        item = self.readings.pop(0)
        if isinstance(item, Exception):
            raise MeterError(str(item))
        return item if isinstance(item, MeterReading) else MeterReading(watts=item)

    def close(self) -> None:
        pass


def _source(readings: list, **kwargs) -> tuple[PlatformSource, Clock]:
    clock = Clock()
    src = PlatformSource(ScriptedMeter(readings), clock=clock, **kwargs)
    src.open()
    return src, clock


def _platform_j(energy: IntervalEnergy) -> float | None:
    c = energy.components.get("platform")
    return None if c is None else c.joules


def test_each_reading_covers_the_time_since_the_previous_one():
    src, clock = _source([100.0, 120.0, 150.0, 150.0])  # open, sample, sample, boundary
    clock.t += 1.0
    src.sample()  # 120 W for [0, 1]
    clock.t += 1.0
    src.sample()  # 150 W for [1, 2]
    clock.t += 0.5
    assert _platform_j(src.read_interval()) == pytest.approx(120 + 150 + 75)


def test_the_boundary_holds_the_last_power_and_nothing_is_counted_twice():
    # A background meter is not read at the boundary: the time since its last reading is held.
    src, clock = _source([100.0, 200.0, 200.0], period_s=1.0)
    src.meter.blocking_ok = False
    src._stop.set()  # no thread in this test: readings come from the calls below
    clock.t += 1.0
    src._take_reading()  # 200 W for [0, 1]
    clock.t += 0.5
    first = _platform_j(src._end_interval())  # [1, 1.5] held at 200 W
    clock.t += 0.5
    src._take_reading()  # 200 W for [1.5, 2] only
    clock.t += 0.0
    second = _platform_j(src._end_interval())
    assert first == pytest.approx(300.0)
    assert second == pytest.approx(100.0)


def test_a_late_read_without_failures_covers_the_whole_gap():
    """The loop was busy for 5 s (codecarbon's hardware probing holds the GIL): not a meter failure."""
    src, clock = _source([100.0, 120.0, 120.0], period_s=0.2)
    clock.t += 5.0
    src.sample()
    clock.t += 0.2
    assert _platform_j(src.read_interval()) == pytest.approx(120.0 * 5.2)


def test_an_energy_counter_is_read_as_a_counter():
    src, clock = _source([MeterReading(energy_j=5000.0), MeterReading(energy_j=5123.25),
                          MeterReading(energy_j=5200.0)])
    clock.t += 1.0
    src.sample()
    clock.t += 1.0
    assert _platform_j(src.read_interval()) == pytest.approx(200.0)


def test_a_failure_holds_the_last_power_for_hold_s_then_the_interval_has_no_platform(caplog):
    caplog.set_level(logging.WARNING, "tta.sources")
    src, clock = _source([100.0] + [RuntimeError("hwmon x: cannot read: I/O error")] * 20, hold_s=3.0)
    for _ in range(2):
        clock.t += 1.0
        src.sample()
    clock.t += 1.0
    held = src.read_interval()  # 3 s, all within hold_s: counted at 100 W
    assert _platform_j(held) == pytest.approx(300.0)
    for _ in range(4):
        clock.t += 1.0
        src.sample()
    clock.t += 1.0
    gap = src.read_interval()
    assert _platform_j(gap) is None
    assert "no reading for 5.0 s of 5.0 s" in gap.assumptions["platform"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "I/O error" in warnings[0].getMessage()  # one line, not one per read
    assert src.platform_meter.error and src.platform_meter.failures == 8  # 2 + 1 + 4 + 1 reads


@pytest.mark.parametrize("bad", [-5.0, 1e9, math.nan, math.inf])
def test_absurd_readings_are_refused_and_the_last_good_power_held(bad, caplog):
    caplog.set_level(logging.WARNING, "tta.sources")
    src, clock = _source([250.0, bad, 250.0, 250.0])
    clock.t += 1.0
    src.sample()
    assert "absurd" in src.platform_meter.error
    clock.t += 1.0
    src.sample()
    assert src.platform_meter.error == ""
    clock.t += 1.0
    assert _platform_j(src.read_interval()) == pytest.approx(750.0)
    assert [r.getMessage() for r in caplog.records][0].count("\n") == 0


def test_a_local_meter_unreadable_at_open_is_unavailable():
    with pytest.raises(SourceUnavailable, match="cannot read"):
        PlatformSource(ScriptedMeter([RuntimeError("hwmon y: cannot read: EIO")])).open()


def test_hwmon_discovery_takes_power_meters_only_and_prefers_an_energy_counter(tmp_path):
    profile = PowerProfile([(0, 180.0)])
    FakeHwmon(tmp_path / "hwmon", profile)
    (tmp_path / "hwmon" / "hwmon2").mkdir()
    (tmp_path / "hwmon" / "hwmon2" / "name").write_text("amdgpu\n")
    (tmp_path / "hwmon" / "hwmon2" / "power1_average").write_text("50000000\n")  # a GPU board: not the platform
    found = platform_meters(tmp_path / "hwmon")
    assert [(c.name, c.path.name, c.attribute.name) for c in found] == [("power_meter", "hwmon1", "power1_average")]
    assert HwmonMeter(found[0]).read(1.0).watts == pytest.approx(180.0)
    assert [c.path.name for c in platform_meters(tmp_path / "hwmon", "amdgpu")] == ["hwmon2"]  # named: taken
    FakeHwmon(tmp_path / "counter", profile, energy_counter=True)
    (counter,) = platform_meters(tmp_path / "counter")
    assert counter.attribute.name == "energy1_input" and counter.kind == "energy"


def test_hwmon_garbage_is_one_line_naming_the_device(tmp_path):
    fake = FakeHwmon(tmp_path, PowerProfile([(0, 180.0)]))
    (fake.device / "power1_average").write_text("ERR\n")
    with pytest.raises(MeterError, match=r"^hwmon power_meter \(hwmon1, power1_average\): not a number: 'ERR'$"):
        HwmonMeter(platform_meters(tmp_path)[0]).read(1.0)


def test_hwmon_follows_a_live_profile_within_one_percent(tmp_path):
    profile = PowerProfile([(0, 150.0), (1.0, 150.0), (1.0, 260.0), (2.0, 260.0), (3.0, 200.0)])
    with FakeHwmon(tmp_path, profile, average_interval_s=0.2):
        src = PlatformSource(HwmonMeter(platform_meters(tmp_path)[0]), period_s=0.2)
        src.open()
        t0 = time.time()
        deadline = time.monotonic() + 4.0
        while time.monotonic() < deadline:
            time.sleep(0.2)
            src.sample()
        got = _platform_j(src.read_interval())
        t1 = time.time()
    # The meter's window lags its publication by up to one averaging window: allow it at both ends.
    assert got == pytest.approx(profile.energy_j(t0, t1), rel=0.01, abs=0.2 * 110)


def _account(energy: IntervalEnergy, cpu_time: CpuTimeDelta | None = None, accountant: Accountant | None = None):
    accountant = accountant or Accountant(Totals())
    record = accountant.account(energy, end_wall=1_800_000_000.0, elapsed_s=10.0,
                                intensity=Intensity(400.0, "fixed", ""), identity=Identity("r", "h", "p", "e"),
                                cpu_time=cpu_time)
    return accountant, record


def test_the_platform_total_is_components_plus_a_remainder_and_emissions_follow_it():
    energy = IntervalEnergy({"cpu": ComponentEnergy(600.0, "rapl"), "ram": ComponentEnergy(100.0, "rapl"),
                             "platform": ComponentEnergy(1500.0, "hwmon")})
    accountant, record = _account(energy)
    line = record.to_json_dict()
    assert line["energy_j"] == {"cpu": 600.0, "ram": 100.0, "gpu": 0.0, "remainder": 800.0, "platform": 1500.0,
                                "total": 1500.0}
    assert line["power_w"]["platform"] == pytest.approx(150.0) and line["power_w"]["total"] == pytest.approx(150.0)
    assert line["emissions_g"]["total"] == pytest.approx(1500.0 / 3.6e6 * 400.0)
    assert line["energy_method"]["platform"] == "hwmon" and line["estimated"] is False
    assert line["totals"]["platform_j"] == 1500.0 and line["totals"]["energy_j"]["remainder"] == 800.0


def test_components_above_the_meter_are_kept_and_the_remainder_is_zero():
    energy = IntervalEnergy({"cpu": ComponentEnergy(900.0, "cpu_load_tdp"), "platform": ComponentEnergy(800.0, "hwmon")})
    _, record = _account(energy)
    line = record.to_json_dict()
    assert line["energy_j"]["remainder"] == 0.0 and line["energy_j"]["total"] == 900.0


def test_without_a_platform_meter_the_record_keeps_its_shape():
    _, record = _account(IntervalEnergy({"cpu": ComponentEnergy(10.0, "rapl")}))
    line = record.to_json_dict()
    assert set(line["energy_j"]) == {"cpu", "ram", "gpu", "total"} and "platform_j" not in line["totals"]
    assert set(line["totals"]["energy_j"]) == {"cpu", "ram", "gpu", "total"}


def test_units_share_the_remainder_by_cpu_time_and_sum_exactly_to_the_platform_total():
    energy = IntervalEnergy({"cpu": ComponentEnergy(600.0, "rapl"), "ram": ComponentEnergy(100.0, "rapl"),
                             "platform": ComponentEnergy(1500.0, "hwmon")})
    cpu = CpuTimeDelta({"a.service": 5_000_000_000, "b.service": 2_500_000_000}, 20_000_000_000, "v2")
    _, record = _account(energy, cpu)
    units = record.units
    assert sum(u["energy_j"] for u in units.values()) == 1500.0  # bit for bit
    assert units["a.service"]["energy_j"] == pytest.approx((600 + 800) * 0.25)
    assert record.attribution["remainder"] == "cpu_time_share"


def test_the_fit_recovers_a_programmed_platform_line():
    fit = PlatformFit()
    assert fit.fit() is None
    for rapl_w in (20.0, 40.0, 60.0, 80.0, 100.0):
        fit.add(rapl_w, 35.0 + 1.25 * rapl_w)
    got = fit.fit()
    assert got is not None and got.points == 5
    assert got.slope == pytest.approx(1.25) and got.offset_w == pytest.approx(35.0)
    assert got.residual_w == pytest.approx(0.0, abs=1e-9)


def test_the_accountant_fits_platform_against_rapl_only():
    accountant = Accountant(Totals())
    for cpu_j, platform_j in ((200.0, 700.0), (400.0, 950.0), (600.0, 1200.0)):
        _account(IntervalEnergy({"cpu": ComponentEnergy(cpu_j, "rapl"),
                                 "platform": ComponentEnergy(platform_j, "hwmon")}), accountant=accountant)
    _account(IntervalEnergy({"cpu": ComponentEnergy(10.0, "cpu_load_tdp"),
                             "platform": ComponentEnergy(5000.0, "hwmon")}), accountant=accountant)
    got = accountant.fit.fit()
    assert got is not None and got.points == 3 and got.slope == pytest.approx(1.25)
    assert got.offset_w == pytest.approx(45.0)


def test_metrics_carry_the_platform_meter_the_remainder_and_the_fit_and_pass_promtool():
    import subprocess

    from src.components.carbon.health import DaemonInfo, SourceStatus, build_health
    from src.components.carbon.outcome import MeasurementStats, SinkStats
    from src.components.carbon.record import MeterStatus
    from src.components.carbon.sinks.prometheus import PrometheusSink

    accountant = Accountant(Totals())
    record = None
    for cpu_j, platform_j in ((200.0, 700.0), (400.0, 950.0)):
        _, record = _account(IntervalEnergy({"cpu": ComponentEnergy(cpu_j, "rapl"),
                                             "platform": ComponentEnergy(platform_j, "hwmon")}), accountant=accountant)
    meter = MeterStatus("hwmon", "power_meter (hwmon1)", "", 3, 95.0)
    health = build_health(DaemonInfo("v", "p", "e", 10.0, 900.0), SourceStatus("rapl+hwmon", True), MeasurementStats(),
                          accountant.totals, SinkStats(), Intensity(400.0, "fixed", ""), meter=meter,
                          fit=accountant.fit.fit())
    sink = PrometheusSink()
    sink.update(health, record)
    page = sink.page().decode()
    for line in ('tta_carbon_platform_energy_joules_total{meter="hwmon"} 1650.0',
                 'tta_carbon_platform_power_watts{meter="hwmon"} 95.0',
                 'tta_carbon_platform_meter_up{meter="hwmon"} 1.0',
                 'tta_carbon_platform_meter_failures_total{meter="hwmon"} 3.0',
                 'tta_carbon_energy_joules_total{component="remainder"} 1050.0',
                 "tta_carbon_platform_fit_slope 1.25", "tta_carbon_platform_fit_offset_watts 45.0"):
        assert f"\n{line}\n" in page, line
    assert health.as_dict()["platform_fit"]["points"] == 2
    res = subprocess.run(["promtool", "check", "metrics"], input=page, capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stdout + res.stderr
    plain = PrometheusSink()
    plain.update(build_health(DaemonInfo("v", "p", "e", 10.0, 900.0), SourceStatus("rapl", True), MeasurementStats(),
                              Totals(), SinkStats(), Intensity(400.0, "fixed", "")), None)
    assert "remainder" not in plain.page().decode() and "platform" not in plain.page().decode()


def test_report_counts_the_remainder_in_totals_and_shows_it_only_where_measured(tmp_path, capsys):
    import json

    from src.service.report import run_report

    def line(seq: int, remainder: float | None) -> str:
        energy = {"cpu": 100.0, "ram": 20.0, "gpu": 0.0}
        if remainder is not None:
            energy |= {"remainder": remainder, "platform": 120.0 + remainder}
        grams = {k: v * 0.01 for k, v in energy.items() if k != "platform"}
        return json.dumps({"interval_end": f"2026-12-01T00:00:{seq:02d}.000Z", "duration_s": 1.0, "seq": seq,
                           "run_id": "r", "energy_j": energy, "emissions_g": grams}) + "\n"

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "emissions_2026-12-01.json").write_text(line(1, 80.0) + line(2, 30.0))
    assert run_report(tmp_path / "m", as_json=True) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["overall"]["energy_j"]["remainder"] == 110.0
    assert out["overall"]["energy_j"]["total"] == 350.0  # the platform meter's 200 + 150
    assert run_report(tmp_path / "m", as_json=False, by="component") == 0
    assert "remainder" in capsys.readouterr().out
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "emissions_2026-12-01.json").write_text(line(1, None))
    assert run_report(tmp_path / "plain", as_json=True) == 0
    assert "remainder" not in capsys.readouterr().out
