"""/metrics has a hard bound on its samples, whatever the host's units do (issue 13, item 1).

A real ``prometheus_client`` exposition from :class:`PrometheusSink`, fed real records
(``Accountant`` + the attribution split), parsed back with prometheus_client's parser.
The bound is checked against the ``sample_limit`` shipped in
deploy/prometheus/prometheus.yml, read from the file: lowering the limit or growing
the page makes this fail before Prometheus drops a real host's scrapes.
"""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from src.components.carbon.accounting import Accountant, Identity
from src.components.carbon.attribution import DEFAULT_TOP_N, OTHER, UNATTRIBUTED
from src.components.carbon.health import HealthSnapshot
from src.components.carbon.record import (
    ComponentEnergy,
    CpuTimeDelta,
    DeviceInfo,
    EmissionsRecord,
    Intensity,
    IntervalEnergy,
    Totals,
)
from src.components.carbon.sinks.prometheus import PrometheusSink, grace_in_records

REPO = Path(__file__).resolve().parents[2]
PROM_CONFIG = REPO / "deploy" / "prometheus" / "prometheus.yml"
JOB = "tta-staging-carbon"
UNIT_FAMILIES = ("tta_carbon_unit_energy_joules", "tta_carbon_unit_emissions_grams")
HEALTH = HealthSnapshot(version="t", project="p", env="test", interval_s=5.0, started_at=0.0,
                        intensity_source="fixed", intensity_g_per_kwh=400.0)
IDENTITY = Identity("run-1", None, "p", "test")
INTENSITY = Intensity(400.0, "fixed", "FRA")
GPUS = 8  # a DGX-class host


def shipped_sample_limit() -> int:
    cfg = yaml.safe_load(PROM_CONFIG.read_text())
    (job,) = [j for j in cfg["scrape_configs"] if j["job_name"] == JOB]
    return int(job["sample_limit"])


def samples(page: bytes) -> list[tuple[str, dict[str, str], float]]:
    """Every sample of the page, as Prometheus counts them for sample_limit."""
    return [(s.name, dict(s.labels), s.value)
            for fam in text_string_to_metric_families(page.decode()) for s in fam.samples]


def unit_values(page: bytes, family: str = "tta_carbon_unit_energy_joules") -> dict[str, float]:
    return {labels["unit"]: value for name, labels, value in samples(page) if name == f"{family}_total"}


class Host:
    """Feeds a sink records built by the real Accountant from per-unit CPU seconds."""

    def __init__(self, sink: PrometheusSink, *, gpus: int = 0, cpus: int = 64, interval_s: float = 5.0,
                 platform: bool = False) -> None:
        self.sink = sink
        self.platform = platform
        self.rng = random.Random(17)
        self.acct = Accountant(Totals(), DEFAULT_TOP_N)
        self.gpus = gpus
        self.host_s = cpus * interval_s
        self.interval_s = interval_s
        self.t = 1_795_000_000.0
        if gpus:
            sink.set_devices([DeviceInfo(f"gpu{i}", "gpu", i, "NVIDIA H200", "gpu") for i in range(gpus)])

    def step(self, cpu_s: dict[str, float]) -> EmissionsRecord:
        self.t += self.interval_s
        components = {"cpu": ComponentEnergy(900.0, "rapl"), "ram": ComponentEnergy(50.0, "constant")}
        devices = {}
        health = HEALTH
        if self.platform:  # a meter, and RAPL varying so the fit exists: every platform series on the page
            cpu_j = self.rng.uniform(600.0, 1200.0)
            components["cpu"] = ComponentEnergy(cpu_j, "rapl")
            components["platform"] = ComponentEnergy(2.0 * cpu_j + 800.0, "hwmon")
            devices["platform-0"] = 2.0 * cpu_j + 800.0
        if self.gpus:
            components["gpu"] = ComponentEnergy(300.0 * self.gpus, "nvml")
            devices = {f"gpu{i}": 300.0 for i in range(self.gpus)}
        cpu_time = CpuTimeDelta({u: round(s * 1e9) for u, s in cpu_s.items()}, round(self.host_s * 1e9), "v2")
        rec = self.acct.account(IntervalEnergy(components, devices), end_wall=self.t, elapsed_s=self.interval_s,
                                intensity=INTENSITY, identity=IDENTITY, cpu_time=cpu_time)
        if self.platform:
            fit = self.acct.fit.fit()
            health = replace(HEALTH, platform_meter="hwmon", platform_fit=(
                {"points": fit.points, "slope": fit.slope, "offset_w": fit.offset_w, "residual_w": fit.residual_w}
                if fit else {}))
        self.sink.update(health, rec)
        return rec


def page_maximum(top_n: int, gpus: int, platform: bool = False) -> int:
    """docs/fleet.md section 4: 27 fixed samples, 2 x (2 x top_n + 2) unit samples, 2 per GPU,
    11 with a platform meter (the remainder's energy, emissions and power; the meter's energy,
    power, up and failures; the fit's 4 gauges).

    (26 since tta_carbon_unmeasured_seconds_total, issue 13; 27 with tta_carbon_measured_seconds_total, issue 16.)"""
    return 27 + 2 * (2 * top_n + 2) + 2 * gpus + (11 if platform else 0)


@pytest.mark.parametrize(("gpus", "platform"), [(0, False), (GPUS, False), (GPUS, True)],
                         ids=["no-gpu", f"{GPUS}-gpus", f"{GPUS}-gpus-and-a-platform-meter"])
def test_60_busy_services_plus_churn_never_exceed_the_shipped_sample_limit(gpus: int, platform: bool) -> None:
    limit = shipped_sample_limit()
    sink = PrometheusSink()
    host = Host(sink, gpus=gpus, platform=platform)
    rng = random.Random(13)
    busy = [f"svc-{i:02d}.service" for i in range(60)]
    alive: dict[str, int] = {}  # short-lived unit -> intervals left
    churned: set[str] = set()
    counter = 0
    worst = 0
    for _ in range(300):
        for u in [u for u, left in alive.items() if left <= 0]:
            del alive[u]
        for _ in range(3):  # 3 new transient units (timers, systemd-run) per interval
            counter += 1
            name = f"run-u{counter}.service"
            alive[name] = rng.randint(1, 3)
            churned.add(name)
        cpu = {u: rng.uniform(0.05, 2.0) for u in busy}
        # transients are often the busiest thing on the host: they take top-N places
        cpu.update({u: rng.uniform(0.5, 4.0) for u in alive})
        for u in alive:
            alive[u] -= 1
        host.step(cpu)
        page = sink.page()
        n = len(samples(page))
        worst = max(worst, n)
        assert n <= limit, f"{n} samples on the page, the shipped sample_limit is {limit}"
        for fam in UNIT_FAMILIES:
            values = unit_values(page, fam)
            assert len(values) <= 2 * DEFAULT_TOP_N + 2
            assert {OTHER, UNATTRIBUTED} <= set(values)
    # the documented maximum is reached under this load, and is exact
    assert worst == page_maximum(DEFAULT_TOP_N, gpus, platform)

    # churn stops: after the grace period no transient unit is left on the page
    grace = sink.unit_grace_records
    for i in range(grace + 1):
        host.step({u: rng.uniform(0.05, 2.0) for u in busy})
        if i < grace:
            continue
        shown = set(unit_values(sink.page()))
        assert not shown & churned
        assert shown <= set(busy) | {OTHER, UNATTRIBUTED}
    assert len(samples(sink.page())) <= page_maximum(DEFAULT_TOP_N, gpus, platform)


def test_page_maximum_fits_the_shipped_sample_limit_with_headroom() -> None:
    limit = shipped_sample_limit()
    # 8 GPUs at the default top N leaves at least a third of the limit free; with a platform meter too, 40 %
    assert page_maximum(DEFAULT_TOP_N, GPUS) * 1.5 <= limit
    assert page_maximum(DEFAULT_TOP_N, GPUS, platform=True) * 1.4 <= limit
    # and the examples ship the same limit
    for path in sorted((PROM_CONFIG.parent / "examples").glob("*.yml")):
        for job in yaml.safe_load(path.read_text()).get("scrape_configs", []):
            if job["job_name"] == JOB:
                assert job["sample_limit"] == limit, path.name


def test_a_gone_unit_stays_through_the_grace_period_then_leaves() -> None:
    sink = PrometheusSink(top_n=DEFAULT_TOP_N, grace_records=3)
    host = Host(sink)
    host.step({"a.service": 1.0, "b.service": 1.0})
    before = unit_values(sink.page())["a.service"]
    for _ in range(3):  # absent from 3 records: still shown, value unchanged
        host.step({"b.service": 1.0})
        assert unit_values(sink.page())["a.service"] == before
    host.step({"b.service": 1.0})  # the 4th record without it: gone from the page
    assert "a.service" not in unit_values(sink.page())
    assert "a.service" not in unit_values(sink.page(), "tta_carbon_unit_emissions_grams")
    assert {"b.service", UNATTRIBUTED} <= set(unit_values(sink.page()))


def test_a_unit_that_leaves_and_returns_continues_its_counter() -> None:
    """Within the one series {unit="x"} the value never decreases: a unit that comes back
    after being dropped continues from where it left, so increase() sees no reset and
    counts exactly what the records named it with."""
    sink = PrometheusSink(top_n=DEFAULT_TOP_N, grace_records=1)
    host = Host(sink)
    named = 0.0
    seen: list[float] = []
    schedule = [True] * 3 + [False] * 5 + [True] * 2 + [False] * 4 + [True]
    for present in schedule:
        rec = host.step({"x.service": 2.0, "y.service": 1.0} if present else {"y.service": 1.0})
        named += rec.units.get("x.service", {}).get("energy_j", 0.0)
        v = unit_values(sink.page()).get("x.service")
        if v is not None:
            assert not seen or v >= seen[-1]
            seen.append(v)
    assert seen[-1] == pytest.approx(named, rel=1e-12)
    # and it did leave the page in between (grace 1: after 2 records without it)
    assert len(seen) < len(schedule)


def test_a_forgotten_unit_restarts_from_zero() -> None:
    """Past ``remembered`` departures the oldest departed unit is forgotten: if it comes
    back its series restarts from 0, a counter reset that rate()/increase() handle."""
    sink = PrometheusSink(top_n=2, grace_records=0, remembered=3)
    host = Host(sink)
    host.acct.top_n = 2
    host.step({"old.service": 4.0})
    first = unit_values(sink.page())["old.service"]
    for i in range(5):  # 5 other units come and go: old.service is pushed out of the memory
        host.step({f"t{i}.service": 1.0})
    rec = host.step({"old.service": 1.0})
    assert unit_values(sink.page())["old.service"] == rec.units["old.service"]["energy_j"] < first


def test_named_series_are_capped_even_when_every_record_names_new_units() -> None:
    top_n = 5
    sink = PrometheusSink(top_n=top_n, grace_records=1000)
    host = Host(sink)
    host.acct.top_n = top_n
    for k in range(50):
        host.step({f"u{k}-{i}.service": 1.0 + i for i in range(2 * top_n)})
        shown = unit_values(sink.page())
        assert len(shown) <= 2 * top_n + 2
        # the current record's units are always shown
        assert {f"u{k}-{i}.service" for i in range(top_n, 2 * top_n)} <= set(shown)
    assert len(samples(sink.page())) == page_maximum(top_n, 0)


def test_sink_defaults_are_the_daemons_defaults() -> None:
    from src.orchestration.config import TTAConfig

    fields = TTAConfig.model_fields
    sink = PrometheusSink()
    interval = fields["measurement_interval"].default
    assert sink.top_n == fields["attribution_top_n"].default == DEFAULT_TOP_N
    assert sink.unit_grace_records == -(-fields["metrics_unit_grace"].default // interval) == 8
    assert (grace_in_records(120.0, 7.0), grace_in_records(0.0, 15.0), grace_in_records(1.0, 3600.0)) == (18, 0, 1)


def component_energy(page: bytes) -> dict[str, float]:
    return {labels["component"]: v for name, labels, v in samples(page) if name == "tta_carbon_energy_joules_total"}


def test_the_page_is_rendered_once_per_change_and_only_when_scraped(monkeypatch):
    """The interval loop does not build a page nobody reads: a render happens on the first scrape
    after a change, and concurrent scrapes share it (before, every update rendered: 40 here)."""
    import threading

    import src.components.carbon.sinks.prometheus as prometheus_sink

    renders = []
    real = prometheus_sink.generate_latest

    def counting(registry):
        renders.append(1)
        return real(registry)

    monkeypatch.setattr(prometheus_sink, "generate_latest", counting)
    sink = PrometheusSink()
    acct = Accountant(Totals())

    def record(cpu_j: float, t: float) -> EmissionsRecord:
        energy = IntervalEnergy({"cpu": ComponentEnergy(cpu_j, "rapl"), "ram": ComponentEnergy(1.0, "rapl")})
        return acct.account(energy, end_wall=t, elapsed_s=5.0, intensity=INTENSITY, identity=IDENTITY)

    for i in range(40):
        sink.update(HEALTH, record(10.0, 1000.0 + 5 * i))
    assert renders == []
    page = sink.page()
    assert len(renders) == 1
    energy = component_energy(page)
    assert energy["cpu"] == pytest.approx(400.0) and energy["ram"] == pytest.approx(40.0)
    assert sink.page() is page and len(renders) == 1  # no change, no render

    sink.update(HEALTH, record(5.0, 1200.0))
    pages: list[bytes] = []
    threads = [threading.Thread(target=lambda: pages.append(sink.page())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(renders) == 2 and len(set(pages)) == 1
    energy = component_energy(pages[0])
    assert energy["cpu"] == pytest.approx(405.0)

    sink.restore(Totals(energy_j={"cpu": 1.0, "ram": 2.0}))  # a restore is a change too
    energy = component_energy(sink.page())
    assert energy == {"cpu": 1.0, "ram": 2.0, "gpu": 0.0} and len(renders) == 3
