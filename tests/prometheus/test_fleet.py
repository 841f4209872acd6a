"""Fleet: three real daemons, discovered by a real Prometheus through file_sd
(the deployed job, with targets in a JSON file shaped like
deploy/prometheus/targets/tta-carbon.example.json: env + host labels).

- every target is up and carries its env/host labels;
- the fleet recording rules (deploy/prometheus/rules/tta-carbon-recording.yml,
  unchanged) equal the sum of the per-daemon values at each evaluation, and
  each per-daemon value equals that daemon's own cumulative total in its
  NDJSON records;
- a fourth daemon hangs its measurement loop after 3 intervals while still
  serving /metrics: CarbonMeasurementsStale fires for exactly that instance.
  It measures a fake RAPL tree (tests/fixtures/fake_rapl.py); once its third
  record is written the package counter's energy_uj becomes a FIFO
  (FakeRapl.stall), so its next read blocks in open() for good, as a read
  stuck in the hardware would;
- one daemon is killed (SIGKILL) and CarbonComponentDown fires for exactly that
  instance, with the deployed labels and annotations.

About `for:`: the deployed CarbonComponentDown and CarbonMeasurementsStale
wait 2m, too long here. This test loads a copy of tta-carbon-alerts.yml in
which ONLY those two `for:` are 2s (expressions, labels and annotations
untouched). The 2m values are pinned by the promtool unit tests
(deploy/prometheus/tests/), which fail if they change.
"""
from __future__ import annotations

import json
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures.fake_rapl import FakeRapl
from tests.prometheus.daemons import DrainedDaemon
from tests.prometheus.promlib import (
    ALERT_RULES, EXAMPLE_TARGETS, JOB, RECORDING_RULES, alert_rules, deploy_prom_config, need_prometheus,
    rules_with_for, rules_with_interval,
)
from tests.prometheus.promserver import PromServer

pytestmark = pytest.mark.slow

# name -> (env target label, host target label)
FLEET = {
    "a": ("staging", "carbon-staging-a"),
    "b": ("staging", "carbon-staging-b"),
    "c": ("production", "carbon-prod-c"),
    "d": ("staging", "carbon-staging-d"),  # on fake RAPL; measurement loop hangs after 3 intervals
}
STALLED = "d"
STALL_AFTER = 3  # records the stalled daemon writes before its counter read hangs
SHORT_FOR = "2s"


@dataclass
class Fleet:
    daemons: dict[str, DrainedDaemon]
    prom: PromServer
    tmp: Path
    started: float

    def labels(self, name: str) -> dict[str, str]:
        env, host = FLEET[name]
        return {"job": JOB, "instance": self.daemons[name].instance, "env": env, "host": host}


def file_sd_groups(daemons: dict[str, DrainedDaemon]) -> list[dict]:
    """Target groups in the example file's exact shape."""
    example = json.loads(EXAMPLE_TARGETS.read_text())
    shape = {k: sorted(v) if isinstance(v, dict) else type(v).__name__ for k, v in example[0].items()}
    groups = [{"targets": [d.instance], "labels": {"env": FLEET[n][0], "host": FLEET[n][1]}} for n, d in daemons.items()]
    for g in groups:
        assert {k: sorted(v) if isinstance(v, dict) else type(v).__name__ for k, v in g.items()} == shape
    return groups


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    need_prometheus()
    tmp = tmp_path_factory.mktemp("fleet")
    daemons: dict[str, DrainedDaemon] = {}
    prom = None
    with FakeRapl(tmp / "powercap") as rapl:  # exit: stops the counters, releases the FIFO
        rapl.start_live({"package-0": 12.0}, tick=0.05)
        try:
            for name, (env, _host) in FLEET.items():
                settings = {"env": env}
                if name == STALLED:
                    settings |= {"energy_source": "rapl", "powercap_root": str(rapl.root)}
                daemons[name] = DrainedDaemon(workdir=tmp / name, interval=1.0, settings=settings)
                daemons[name].start(wait_ready=False)  # start all four, then wait: they boot in parallel
            # The stalled daemon first, while the others boot: its next read is an interval
            # (1 s) after its third record, and must find the FIFO.
            stalled = daemons[STALLED]
            stalled.wait_for_notification("READY=1", timeout=40)
            stalled.wait_for_records(STALL_AFTER, timeout=40)
            rapl.stall("package-0")
            assert len(stalled.records()) == STALL_AFTER, "stalled too late: a fourth record was written"
            for d in daemons.values():
                if d is not stalled:
                    d.wait_for_notification("READY=1", timeout=40)
                d.start_draining()
            sd_file = tmp / "tta-carbon-fleet.json"
            sd_file.write_text(json.dumps(file_sd_groups(daemons), indent=2))
            alerts = rules_with_for(ALERT_RULES, tmp / "tta-carbon-alerts.yml",
                                    {"CarbonComponentDown": SHORT_FOR, "CarbonMeasurementsStale": SHORT_FOR})
            # The shipped groups' own intervals (30 s, 4 m) would outlast the test: 1 s, as the scrapes.
            recording = rules_with_interval(RECORDING_RULES, tmp / "tta-carbon-recording.yml", "1s")
            alerts = rules_with_interval(alerts, alerts, "1s")
            cfg = deploy_prom_config(static_targets=None, file_sd=sd_file, rule_files=[recording, alerts])
            prom = PromServer(tmp / "prom", config=cfg).start()
            started = time.time()
            prom.wait_for(lambda: len(prom.query(f'count_over_time(up{{job="{JOB}"}}[1m]) >= 5')) == len(FLEET),
                          timeout=40, what="5 scrapes of each daemon")
            yield Fleet(daemons, prom, tmp, started)
        finally:
            if prom is not None:
                prom.stop()
            for name, d in daemons.items():
                d.stop(signal.SIGKILL if name == STALLED else signal.SIGTERM, timeout=15)


def test_file_sd_targets_carry_env_and_host(fleet):
    targets = fleet.prom.targets()
    assert len(targets) == len(FLEET)
    by_instance = {t["labels"]["instance"]: t for t in targets}
    for name, d in fleet.daemons.items():
        t = by_instance[d.instance]
        assert t["health"] == "up", t
        assert t["labels"] == fleet.labels(name)
        assert t["discoveredLabels"]["__meta_filepath"].endswith("tta-carbon-fleet.json")
        assert t["scrapePool"] == JOB


def _recorded(prom: PromServer, name: str, window: str) -> dict[tuple, dict[float, float]]:
    """Raw samples a recording rule wrote: {(label items): {ts: value}}."""
    out = {}
    for s in prom.query(f"{name}[{window}]"):
        key = tuple(sorted((k, v) for k, v in s["metric"].items() if k != "__name__"))
        out[key] = {ts: float(v) for ts, v in s["values"]}
    return out


def test_fleet_rules_equal_sum_of_daemons(fleet, results):
    prom = fleet.prom
    # several evaluations with all three daemons in them
    prom.wait_for(lambda: len(prom.query("count_over_time(host:tta_carbon_emissions_grams_total:sum[1m]) >= 5")) == len(FLEET),
                  timeout=20, what="5 evaluations of the host rule")
    window = "30s"
    checks = [
        ("host:tta_carbon_emissions_grams_total:sum", "env:tta_carbon_emissions_grams_total:sum"),
        ("host:tta_carbon_power_watts:sum", "env:tta_carbon_power_watts:sum"),
    ]
    for inst_rule, env_rule in checks:
        inst = _recorded(prom, inst_rule, window)
        env = _recorded(prom, env_rule, window)
        assert {dict(k)["env"] for k in env} == {"staging", "production"}
        assert len(inst) == len(FLEET)
        host_env = {dict(k)["host"]: dict(k)["env"] for k in inst}
        assert host_env == {FLEET[n][1]: FLEET[n][0] for n in fleet.daemons}
        compared = mismatched = 0
        for key, series in env.items():
            e = dict(key)["env"]
            members = [v for k, v in inst.items() if dict(k)["env"] == e]
            for ts, value in series.items():
                if not all(ts in m for m in members):
                    continue
                expected = math.fsum(m[ts] for m in members)
                compared += 1
                if not math.isclose(value, expected, rel_tol=1e-12, abs_tol=1e-15):
                    mismatched += 1
        # Rules of one group share an evaluation timestamp, so env == sum of
        # its instances at every evaluation. A scrape appended between the two
        # rule evaluations could differ by one interval: allow one such case.
        results.add(f"{env_rule} vs sum of {inst_rule}: {compared} evaluations compared, {mismatched} mismatched")
        assert compared >= 5 and mismatched <= 1
    last = {dict(k)["env"]: (max(v), v[max(v)]) for k, v in _recorded(prom, "env:tta_carbon_emissions_grams_total:sum", window).items()}
    results.add(f"env:tta_carbon_emissions_grams_total:sum latest: {last}")


def test_measurements_stale_fires_for_the_stalled_daemon_only(fleet, results):
    prom = fleet.prom
    stalled = fleet.daemons[STALLED]
    expected = {**fleet.labels(STALLED), "alertname": "CarbonMeasurementsStale", "severity": "warning",
                "component": "carbon"}
    fired = prom.wait_for(lambda: prom.firing("CarbonMeasurementsStale"), timeout=20, what="CarbonMeasurementsStale")
    (alert,) = fired
    assert alert["labels"] == expected
    assert alert["annotations"]["summary"] == f"Carbon measurements are stale on {FLEET[STALLED][1]}"
    # the daemon still answers scrapes, so this is not CarbonComponentDown
    assert prom.query_value(f'up{{instance="{stalled.instance}"}}') == 1
    assert not prom.firing("CarbonComponentDown")
    seqs = prom.query(f'tta_carbon_last_record_sequence{{instance="{stalled.instance}"}}')
    age = float(alert["value"])
    results.add(f"CarbonMeasurementsStale for {stalled.instance}: age at scrape {age:.1f}s > 3 x 1s; "
                f"last_record_sequence {seqs[0]['value'][1]}; up = 1; labels {alert['labels']}")
    assert age > 3


def test_component_down_fires_for_the_killed_instance_only(fleet, results):
    prom = fleet.prom
    victim = fleet.daemons["b"]
    expected = {**fleet.labels("b"), "alertname": "CarbonComponentDown", "severity": "critical", "component": "carbon"}
    assert not prom.firing("CarbonComponentDown")
    assert victim.proc.poll() is None
    t0 = time.monotonic()
    victim.stop(signal.SIGKILL)  # a crash: no final record, no clean shutdown
    seen_pending = False

    def firing():
        nonlocal seen_pending
        alerts = [a for a in prom.alerts() if a["labels"]["alertname"] == "CarbonComponentDown"]
        seen_pending |= any(a["state"] == "pending" for a in alerts)
        return [a for a in alerts if a["state"] == "firing"]

    fired = prom.wait_for(firing, timeout=20, interval=0.2, what="CarbonComponentDown firing")
    elapsed = time.monotonic() - t0
    (alert,) = fired
    assert alert["labels"] == expected
    rule = next(r for r in alert_rules() if r["alert"] == "CarbonComponentDown")
    assert alert["annotations"] == {
        "summary": f"Carbon component is down on {FLEET['b'][1]}",
        "description": rule["annotations"]["description"].replace("{{ $labels.host }}", FLEET["b"][1])
        .replace("{{ $labels.instance }}", victim.instance).replace("{{ $labels.env }}", "staging"),
    }
    assert seen_pending, "alert went straight to firing: `for:` not applied"
    # exactly that instance, in the ALERTS series too; the others are up and not alerting
    series = prom.query('ALERTS{alertname="CarbonComponentDown"}')
    assert [(s["metric"]["instance"], s["metric"]["alertstate"]) for s in series] == [(victim.instance, "firing")]
    for name in ("a", "c", STALLED):
        assert prom.query_value(f'up{{instance="{fleet.daemons[name].instance}"}}') == 1
    # Besides this alert only the stalled daemon's CarbonMeasurementsStale (and
    # CarbonEstimatedEnergy for the others, pending: these VMs have no RAPL) may be active;
    # the dead daemon gets no stale alert (the rule requires up == 1).
    active = {(a["labels"]["alertname"], a["labels"]["instance"]) for a in prom.alerts()
              if a["labels"]["alertname"] != "CarbonEstimatedEnergy"}
    assert active == {("CarbonComponentDown", victim.instance),
                      ("CarbonMeasurementsStale", fleet.daemons[STALLED].instance)}, active
    results.add(f"CarbonComponentDown fired {elapsed:.1f}s after SIGKILL (for: {SHORT_FOR}, 1s scrape/eval): {alert['labels']}")


def test_per_daemon_rule_values_equal_each_daemons_ndjson_totals(fleet, results):
    """Each host:tta_carbon_emissions_grams_total:sum sample is the
    cumulative total one of that daemon's NDJSON records carries (the daemon's
    own bookkeeping), and the last one is within one interval of the NDJSON
    sum. Stops the daemons: keep this test last in the module."""
    prom = fleet.prom
    # the stalled daemon cannot act on SIGTERM (its loop is hung): SIGKILL it
    rcs = {n: d.stop(signal.SIGKILL if n == STALLED else signal.SIGTERM, timeout=15) for n, d in fleet.daemons.items()}
    assert rcs["a"] == 0 and rcs["c"] == 0, rcs
    prom.wait_for(lambda: not prom.query(f'up{{job="{JOB}"}} == 1'), timeout=10, what="all targets down")
    window = f"{int(time.time() - fleet.started) + 30}s"
    inst = _recorded(prom, "host:tta_carbon_emissions_grams_total:sum", window)
    for name, d in fleet.daemons.items():
        records = d.records()
        assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
        totals = [r["totals"]["emissions_g"]["total"] for r in records]
        (series,) = [v for k, v in inst.items() if dict(k)["host"] == FLEET[name][1]]
        index_at = {}
        for ts, value in series.items():
            hits = [i for i, t in enumerate(totals) if math.isclose(t, value, rel_tol=1e-12, abs_tol=1e-15)]
            assert hits, f"{name}: rule value {value!r} at {ts} is no record's total (totals {totals})"
            index_at[ts] = hits[0]
        k = index_at[max(series)]
        last = series[max(series)]
        ndjson = math.fsum(r["emissions_g"]["total"] for r in records)
        unscraped = records[k + 1:]
        results.add(f"{name} ({d.instance}, {FLEET[name]}, rc {rcs[name]}): {len(records)} records, "
                    f"NDJSON sum {ndjson!r} g; {len(series)} rule samples, each a record's running total; "
                    f"last rule sample {last!r} g = seq {records[k]['seq']}; not seen by Prometheus: "
                    f"{[(r['seq'], r['final']) for r in unscraped]}")
        assert len(series) >= 5
        assert math.isclose(ndjson, totals[-1], rel_tol=1e-9)
        # within one interval: the record written after the last scrape, plus the final one on SIGTERM
        assert len(unscraped) <= 2, unscraped
        assert records[-1]["final"] is (name not in ("b", STALLED))  # SIGKILLed: no final record
        if name == STALLED:
            assert len(records) == STALL_AFTER and not unscraped
