"""Embodied carbon: exact to the formula, kept apart from operational emissions, split across units exactly."""

from __future__ import annotations

import subprocess

import pytest

from src.components.carbon.accounting import Accountant, Embodied, Identity
from src.components.carbon.health import DaemonInfo, SourceStatus, build_health
from src.components.carbon.outcome import MeasurementStats, SinkStats
from src.components.carbon.record import ComponentEnergy, CpuTimeDelta, Intensity, IntervalEnergy, Totals
from src.components.carbon.sinks.prometheus import PrometheusSink
from src.orchestration import ConfigError, TTAConfig
from src.orchestration.settings import component_settings

INTENSITY = Intensity(400.0, "fixed", "")
IDENTITY = Identity("r", "h", "p", "e")
ENERGY = IntervalEnergy({"cpu": ComponentEnergy(600.0, "rapl"), "ram": ComponentEnergy(100.0, "constant")})


def _formula(kg: float, years: float, duration_s: float) -> float:
    return kg * 1000 * duration_s / (years * 365.25 * 86400)


@pytest.mark.parametrize(("kg", "years", "duration_s"), [(1200.0, 4.0, 15.0), (3600.5, 6.0, 0.016217),
                                                         (850.0, 5.5, 3600.0), (1e6, 0.1, 1.0)])
def test_each_record_carries_exactly_the_formula(kg, years, duration_s):
    accountant = Accountant(Totals(), embodied=Embodied(kg, years))
    record = accountant.account(ENERGY, end_wall=1.8e9, elapsed_s=duration_s, intensity=INTENSITY, identity=IDENTITY)
    line = record.to_json_dict()
    assert line["embodied_g"] == _formula(kg, years, duration_s)  # bit for bit
    assert line["totals"]["embodied_g"] == line["embodied_g"]
    assert line["emissions_g"]["total"] == pytest.approx(700.0 / 3.6e6 * 400.0)  # operational only


def test_a_year_of_records_adds_up_to_the_years_share():
    accountant = Accountant(Totals(), embodied=Embodied(1461.0, 4.0))  # 365.25 kg a year
    for _ in range(2 * 1461):  # 2,922 six-hour records: two Julian years
        accountant.account(ENERGY, end_wall=1.8e9, elapsed_s=21600.0, intensity=INTENSITY, identity=IDENTITY)
    assert accountant.totals.embodied_g == pytest.approx(730_500.0, rel=1e-12)


def test_without_it_records_metrics_and_totals_keep_their_shape():
    record = Accountant(Totals()).account(ENERGY, end_wall=1.8e9, elapsed_s=15.0, intensity=INTENSITY,
                                          identity=IDENTITY)
    line = record.to_json_dict()
    assert "embodied_g" not in line and "embodied_g" not in line["totals"]
    sink = PrometheusSink()
    sink.update(build_health(DaemonInfo("v", "p", "e", 15.0, 0.0), SourceStatus("rapl", True), MeasurementStats(),
                             record.totals, SinkStats(), INTENSITY), record)
    assert "embodied" not in sink.page().decode()


def test_units_share_it_by_cpu_time_and_the_shares_sum_exactly():
    accountant = Accountant(Totals(), embodied=Embodied(1234.5, 5.0))
    cpu = CpuTimeDelta({"a.service": 3_000_000_000, "b.service": 1_000_000_000}, 30_000_000_000, "v2")
    record = accountant.account(ENERGY, end_wall=1.8e9, elapsed_s=15.0, intensity=INTENSITY, identity=IDENTITY,
                                cpu_time=cpu)
    shares = {u: v["embodied_g"] for u, v in record.units.items()}
    assert sum(shares.values()) == record.embodied_g  # bit for bit, the idle share unattributed
    assert shares["a.service"] == pytest.approx(record.embodied_g * 0.1)
    assert shares["unattributed"] == pytest.approx(record.embodied_g * (1 - 4 / 30))
    assert record.attribution["embodied"] == "cpu_time_share"
    assert sum(v["emissions_g"] for v in record.units.values()) == record.emissions_total_g  # still exact


def test_the_counter_is_on_metrics_promtool_clean_and_survives_the_ledger():
    accountant = Accountant(Totals(), embodied=Embodied(1200.0, 4.0))
    record = accountant.account(ENERGY, end_wall=1.8e9, elapsed_s=15.0, intensity=INTENSITY, identity=IDENTITY)
    sink = PrometheusSink()
    sink.update(build_health(DaemonInfo("v", "p", "e", 15.0, 0.0), SourceStatus("rapl", True), MeasurementStats(),
                             record.totals, SinkStats(), INTENSITY), record)
    page = sink.page().decode()
    assert f"\ntta_carbon_embodied_grams_total {record.embodied_g!r}\n" in page
    res = subprocess.run(["promtool", "check", "metrics"], input=page, capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stdout + res.stderr
    assert Totals.from_dict(record.totals.to_dict()).embodied_g == record.embodied_g
    with pytest.raises(ValueError, match="embodied_g must be a number"):
        Totals.from_dict({**record.totals.to_dict(), "embodied_g": -1.0})


@pytest.mark.parametrize(("given", "missing"), [({"embodied_kgco2e": 1200}, "embodied_lifetime_years"),
                                                ({"embodied_lifetime_years": 4}, "embodied_kgco2e")])
def test_one_setting_without_the_other_is_one_line_naming_both(given, missing):
    with pytest.raises(ConfigError) as caught:
        TTAConfig.load(given, {})
    message = str(caught.value)
    assert "\n" not in message and missing in message and next(iter(given)) in message


@pytest.mark.parametrize("bad", ["0", "-5", "nan", "inf", "lots"])
def test_absurd_footprints_are_refused(bad):
    with pytest.raises(ConfigError, match="embodied_kgco2e"):
        TTAConfig.load({"embodied_kgco2e": bad, "embodied_lifetime_years": 4}, {})


def test_settings_reach_the_accountant_and_empty_env_values_mean_unset():
    config = TTAConfig.load({}, {"CARBON_EMBODIED_KGCO2E": "1500", "CARBON_EMBODIED_LIFETIME_YEARS": "6"})
    assert component_settings(config).embodied == Embodied(1500.0, 6.0)
    unset = TTAConfig.load({}, {"CARBON_EMBODIED_KGCO2E": "", "CARBON_EMBODIED_LIFETIME_YEARS": ""})
    assert component_settings(unset).embodied is None
