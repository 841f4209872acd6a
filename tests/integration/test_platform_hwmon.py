"""The default daemon on a machine with an ACPI power meter and no RAPL: platform energy, measured.

A fake hwmon tree (tests/fixtures/fake_hwmon.py) publishes the exact mean of a programmed
profile of steps and ramps every averaging window, as the firmware does; the daemon is the
real one, run as systemd runs it, with its default source (codecarbon's tracker for CPU and
RAM) and the platform meter found by itself.
"""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request

import pytest

from tests.fixtures.fake_hwmon import FakeHwmon
from tests.fixtures.power_profile import PowerProfile, rfc3339_to_epoch

# Steps and ramps, repeating every 12 s: 180 W idle, a step to 290 W, a ramp down to 220 W, a step to 150 W.
PROFILE = [(0.0, 180.0), (2.0, 180.0), (2.0, 290.0), (5.0, 290.0), (8.0, 220.0), (9.0, 220.0), (9.0, 150.0),
           (12.0, 180.0)]


def _programmed(profile: PowerProfile, records: list[dict]) -> float:
    return sum(profile.energy_j(rfc3339_to_epoch(r["interval_start"]), rfc3339_to_epoch(r["interval_end"]))
               for r in records)


def test_default_daemon_records_platform_energy_from_an_acpi_meter_across_kill9(daemon_factory, tmp_path):
    profile = PowerProfile(PROFILE, period_s=12.0)
    # The meter reports the mean of its last window, so a reading lags the profile by about a window:
    # each run's two ends then miss or gain up to (window x step) joules. 0.1 s keeps that under 0.5 %.
    settings = {"hwmon_root": str(tmp_path / "hwmon"), "powercap_root": str(tmp_path / "no-rapl"), "gpu": "off",
                "platform_sample_s": "0.1"}
    with FakeHwmon(tmp_path / "hwmon", profile, average_interval_s=0.1):
        d = daemon_factory("a", interval=2.0, settings=settings).start()
        d.wait_for_records(6)
        d.proc.send_signal(signal.SIGKILL)
        assert d.stop() == -signal.SIGKILL
        time.sleep(1.0)
        d = daemon_factory("a", interval=2.0, settings=settings).start()
        d.wait_for_records(len(d.records()) + 5)
        with urllib.request.urlopen(d.url("/healthz"), timeout=5) as r:
            health = json.load(r)
        with urllib.request.urlopen(d.url("/metrics"), timeout=5) as r:
            page = r.read().decode()
        assert d.stop() == 0
    records = d.records()
    assert len({r["run_id"] for r in records}) == 2
    assert all(r["energy_method"]["platform"] == "hwmon" for r in records), [r["energy_method"] for r in records]
    for r in records:
        e = r["energy_j"]
        assert e["total"] == pytest.approx(e["cpu"] + e["ram"] + e["gpu"] + e["remainder"], rel=1e-12)
        assert e["total"] >= e["platform"] - 1e-9
    got, want = sum(r["energy_j"]["platform"] for r in records), _programmed(profile, records)
    error = got / want - 1
    assert abs(error) < 0.01, (got, want)
    full = [r for r in records if r["duration_s"] > 1.5 and not r["final"]]
    worst = max(abs(r["energy_j"]["platform"] / _programmed(profile, [r]) - 1) for r in full)
    assert worst < 0.03  # per record: the meter's window lags a step by up to one window
    assert records[-1]["totals"]["platform_j"] == pytest.approx(got, rel=1e-9)
    assert health["platform_meter"] == "hwmon" and health["platform_meter_error"] == ""
    assert 'tta_carbon_platform_energy_joules_total{meter="hwmon"}' in page
    assert 'tta_carbon_energy_joules_total{component="remainder"}' in page
    print(f"\nhwmon (ACPI power_meter, 0.1 s window): {got:.3f} J recorded vs {want:.3f} J programmed "
          f"({error * 100:+.4f} %) over {len(records)} records, 2 runs; worst record {worst * 100:.2f} %")


def test_a_meter_that_fails_mid_run_costs_its_platform_figure_only(daemon_factory, tmp_path):
    """Garbage in the meter's file: one warning line, records go on without platform (and say why), then recover."""
    profile = PowerProfile([(0.0, 200.0)])
    settings = {"hwmon_root": str(tmp_path / "hwmon"), "energy_source": "cpu_load_tdp", "gpu": "off",
                "platform_sample_s": "0.2"}
    with FakeHwmon(tmp_path / "hwmon", profile, average_interval_s=0.2) as fake:
        d = daemon_factory(interval=1.0, settings=settings).start()
        d.wait_for_records(2)
        fake.override = "garbage\n"
        bad = d.wait_for_record(lambda r: "platform" in r.get("energy_assumptions", {}), "a record without platform")
        with urllib.request.urlopen(d.url("/healthz"), timeout=5) as r:
            health = json.load(r)
        fake.override = None
        d.wait_for_record(lambda r: r["seq"] > bad["seq"] + 1 and "platform" in r["energy_method"], "recovery")
        assert d.stop() == 0
    assert "platform" not in bad["energy_j"] and "not a number" in bad["energy_assumptions"]["platform"]
    assert "not a number" in health["platform_meter_error"]
    log = d.log_file.read_text()
    assert log.count("not a number") == 1, log  # one line for the failure, not one per reading
    assert log.count("readings good again") == 1
    assert all(r["energy_j"]["cpu"] > 0 for r in d.records())  # the components never stopped


def test_an_explicit_hwmon_meter_that_is_absent_is_one_line_not_a_traceback(daemon_factory, tmp_path):
    (tmp_path / "empty").mkdir()
    d = daemon_factory(settings={"platform_meter": "hwmon", "hwmon_root": str(tmp_path / "empty"),
                                 "energy_source": "cpu_load_tdp", "gpu": "off"}).start()
    try:
        urllib.request.urlopen(d.url("/healthz"), timeout=5)
        raise AssertionError("/healthz answered 200 without an energy source")
    except urllib.error.HTTPError as exc:
        assert exc.code == 503
        health = json.load(exc)
    assert d.stop() == 0
    assert "platform_meter is hwmon but a hwmon power meter" in health["tracker_error"]
    assert str(tmp_path / "empty") in health["tracker_error"]
    assert "Traceback" not in d.stderr() and "Traceback" not in d.log_file.read_text()
    assert d.records() == []


def test_the_running_fit_recovers_the_platform_line_against_rapl(daemon_factory, tmp_path):
    """RAPL steps 20/40/60/30/50 W while the meter shows 50 W + 1.2 x RAPL: /metrics and /healthz carry that line."""
    from tests.fixtures.fake_rapl import FakeRapl

    steps = [(0.0, 20.0), (4.0, 40.0), (8.0, 60.0), (12.0, 30.0), (16.0, 50.0)]
    knots: list[tuple[float, float]] = []
    for (t, w), nxt in zip(steps, [*steps[1:], (40.0, 0.0)]):
        knots += [(t, 50.0 + 1.2 * w), (nxt[0], 50.0 + 1.2 * w)]
    with FakeRapl(tmp_path / "powercap", packages=1, dram=False) as rapl:
        d = daemon_factory(interval=2.0, settings={"energy_source": "rapl", "powercap_root": str(rapl.root),
                                                   "hwmon_root": str(tmp_path / "hwmon"), "gpu": "off",
                                                   "platform_sample_s": "0.1"})
        profile = PowerProfile(knots)
        with FakeHwmon(tmp_path / "hwmon", profile, average_interval_s=0.1):
            rapl.start_live([(t, {"package-0": w}) for t, w in steps])
            profile.t0 = time.time()
            d.start()
            d.wait_for_records(9)
            with urllib.request.urlopen(d.url("/healthz"), timeout=5) as r:
                fit = json.load(r)["platform_fit"]
            with urllib.request.urlopen(d.url("/metrics"), timeout=5) as r:
                page = r.read().decode()
            assert d.stop() == 0
    print(f"\nfit over {fit['points']} intervals: platform = {fit['offset_w']:.2f} W + {fit['slope']:.4f} x RAPL "
          f"(programmed 50 W + 1.2 x), residual {fit['residual_w']:.2f} W")
    assert fit["points"] >= 8
    assert fit["slope"] == pytest.approx(1.2, rel=0.05) and fit["offset_w"] == pytest.approx(50.0, abs=4.0)
    assert fit["residual_w"] < 3.0
    (slope_line,) = [line for line in page.splitlines() if line.startswith("tta_carbon_platform_fit_slope ")]
    assert float(slope_line.split()[1]) == pytest.approx(1.2, rel=0.05)
