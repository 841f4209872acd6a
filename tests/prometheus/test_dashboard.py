"""deploy/grafana/tta-carbon-dashboard.json: lint, and every panel on real servers.

Lint (fast): every panel target and template-variable selector parses with
the real PromQL parser (`promtool check rules` on a temp rules file), uses only
metric names from docs/architecture.md, Prometheus's own `up` and recording
rules, and filters on the `env` / `host` variables. Fleet panels read
recording rules (env:/env_component:/host:), never raw series; per-host
drill-down panels read raw series and are exactly RAW_PANELS below, in
collapsed rows. The measurement-age panel is checked with `promtool test rules`
across a daemon restart.

Live (slow, one set of servers for the module): two real daemons (one found
through file_sd, one through static_configs, both with env + host target
labels) scraped by a site Prometheus running the recording rules, and a
federating Prometheus that pulls only the rule series and `up` from the site's
/federate (honor_labels). On the site every panel and variable returns data;
choosing one host narrows every host-level panel to it. On the federating
server every fleet panel returns data, and the RAW_PANELS return none
(that server has no raw series; this is checked, not skipped).
"""
from __future__ import annotations

import json
import math
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.prometheus.daemons import DrainedDaemon
from tests.prometheus.dash_support import (
    FEDERATE_MATCH,
    RULE_NAME,
    federating_config,
    rules_for_test,
    shipped_recorded_names,
    substitute,
    used_rule_names,
)
from tests.prometheus.promlib import (
    JOB,
    PROMETHEUS_SYNTHETIC,
    PROMTOOL,
    alert_rules,
    check_exprs_parse,
    contract_metrics,
    dashboard_panels,
    dashboard_targets,
    dashboard_variable_queries,
    deploy_prom_config,
    load_dashboard,
    metric_names,
    need_prometheus,
    run,
)
from tests.prometheus.promserver import PromServer

DS_REF = {"type": "prometheus", "uid": "${datasource}"}

# Per-host drill-down panels: they need the raw series, which only the site
# Prometheus (the one that scrapes the daemons) holds. Empty on a federating
# server, by design. Every other panel must work there.
RAW_PANELS = {
    "Emission rate by hardware component (selected hosts)",
    "Carbon intensity",
    "Power by hardware component (selected hosts)",
    "Energy by hardware component (selected hosts, cumulative)",
    "Energy source available",
    "Energy estimated",
    "Uptime",
    "Build info and energy method",
    "Measurement age",
    "Errors and dropped records",
    "Measurements and records written",
    "Unmeasured time in the selected range",
    "NDJSON output size",
    "Log file size",
}
# The documented windowed fleet total (docs/fleet.md, issue 16 contract).
WINDOWED_TOTAL = 'sum(increase(host:tta_carbon_emissions_grams_total:sum{env=~"$env", host=~"$host"}[$__range]))'


def all_exprs() -> dict[str, str]:
    """label -> substituted PromQL, for every target and variable."""
    exprs = {}
    for title, t in dashboard_targets():
        exprs[f"{title} [{t['refId']}]"] = substitute(t["expr"])
    for name, sel in dashboard_variable_queries().items():
        exprs[f"variable {name}"] = substitute(sel)
    return exprs


def is_raw(name: str) -> bool:
    return name.startswith("tta_carbon_")


def env_level(name: str) -> bool:
    """Rule series aggregated above the host: they have no host label."""
    return name.startswith(("env:", "env_component:"))


# ------------------------------------------------------------ the tokenizer
@pytest.mark.parametrize("expr,names", [
    ('sum by (instance) (rate(tta_carbon_emissions_grams_total{env=~"a", instance=~"b"}[5m])) * 3600',
     {"tta_carbon_emissions_grams_total"}),
    ('time() - tta_carbon_last_measurement_timestamp_seconds{env=~".*"}', {"tta_carbon_last_measurement_timestamp_seconds"}),
    ('x > 3 * y and on (job, instance) up{job="j"} == 1', {"x", "y", "up"}),
    ('sum(a) by (env) / ignoring (component) group_left b', {"a", "b"}),
    ('# a comment with fake_metric\nsum without (le) (c_total offset 5m) / 3.6e6', {"c_total"}),
    ('label_replace(m, "dst", "$1", "src", "(.*)")', {"m"}),
    ('{__name__="n"}', set()),
    ('topk(20, host:tta_carbon_power_watts:sum{host=~"h"}) * 3600', {"host:tta_carbon_power_watts:sum"}),
])
def test_metric_name_extraction(expr, names):
    assert metric_names(expr) == names


def test_substitute():
    e = 'rate(x{env=~"$env", host=~"${host}"}[$__rate_interval]) + increase(y[$__range]) + z[$__interval]'
    assert substitute(e, host="h1|h2", rate_interval="10s", range_="1m") == \
        'rate(x{env=~".*", host=~"h1|h2"}[10s]) + increase(y[1m]) + z[1m]'
    with pytest.raises(AssertionError, match="unsubstituted"):
        substitute('x{instance=~"$instance"}')


# ------------------------------------------------------------ structure
def _selectors(expr: str) -> list[tuple[str, str]]:
    """(metric name, label matchers) of every vector selector; a bare name has ''."""
    out = []
    for m in re.finditer(r"(?<![\w:])([a-zA-Z_:][\w:]*)\s*(\{[^}]*\})?", expr):
        if m.group(1) in metric_names(expr) and not expr[m.end():].lstrip().startswith("("):
            out.append((m.group(1), m.group(2) or ""))
    return out


def test_dashboard_structure():
    dash = load_dashboard()
    assert 36 <= dash["schemaVersion"] <= 39
    assert dash["uid"] and dash["title"]
    assert dash.get("id") is None, "an importable dashboard carries no database id"
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert set(variables) == {"datasource", "env", "host"}, "under topology B every instance is 127.0.0.1:9880: select on host"
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("env", "host"):
        v = variables[name]
        assert v["type"] == "query" and v["datasource"] == DS_REF
        assert v["includeAll"] and v["multi"] and v["allValue"] == ".*"
    queries = dashboard_variable_queries()
    assert "$env" in queries["host"], "host list should follow the env choice"
    assert re.search(r"label_values\(up\{.*\},\s*host\)", variables["host"]["query"]["query"])

    panels = dashboard_panels(dash)
    ids = [r["id"] for r in dash["panels"] if r.get("type") == "row"] + [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    for p in panels:
        assert p["datasource"] == DS_REF, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"] == DS_REF, p["title"]
            sels = _selectors(t["expr"])
            assert {n for n, _ in sels} == metric_names(t["expr"]), (p["title"], t["expr"])
            for name, matchers in sels:
                assert 'env=~"$env"' in matchers, (p["title"], name, t["expr"])
                if env_level(name):
                    assert "host" not in matchers, (p["title"], name)
                    assert "host selection does not apply" in p["description"], p["title"]
                else:
                    assert 'host=~"$host"' in matchers, (p["title"], name, t["expr"])
            assert "instance" not in t["expr"] and "{{instance}}" not in t.get("legendFormat", ""), (p["title"], t["expr"])
    _no_overlap(dash["panels"], "top level")
    for r in dash["panels"]:
        if r.get("type") == "row" and r.get("panels"):
            assert r["collapsed"], f"row {r['title']!r} holds panels but is not collapsed"
            _no_overlap(r["panels"], r["title"])


def _no_overlap(panels: list[dict], where: str) -> None:
    cells = {}
    for p in panels:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{where}: {p['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = p["title"]


def test_fleet_panels_read_rules_and_drill_down_reads_raw_series():
    """Fleet panels scale (a 30-day total reads one rule series per host, not
    one raw series per host and component) and work on a federating server;
    RAW_PANELS is exactly the set of panels that read raw daemon series, and
    they sit in collapsed rows, so they run only when opened."""
    dash = load_dashboard()
    raw_titles = set()
    for p in dashboard_panels(dash):
        names = set().union(*(metric_names(t["expr"]) for t in p["targets"]))
        if any(is_raw(n) for n in names):
            raw_titles.add(p["title"])
            assert all(is_raw(n) for n in names), (p["title"], names)
        else:
            assert names and all(RULE_NAME.match(n) or n == "up" for n in names), (p["title"], names)
    assert raw_titles == RAW_PANELS, {"on raw series, not in RAW_PANELS": sorted(raw_titles - RAW_PANELS),
                                      "in RAW_PANELS, not on raw series": sorted(RAW_PANELS - raw_titles)}
    collapsed = {p["title"] for r in dash["panels"] if r.get("type") == "row" and r.get("collapsed") for p in r["panels"]}
    assert collapsed == RAW_PANELS, {"raw but not in a collapsed row": sorted(RAW_PANELS - collapsed),
                                     "in a collapsed row but not raw": sorted(collapsed - RAW_PANELS)}
    by_title = {p["title"]: p for p in dashboard_panels(dash)}
    assert [t["expr"] for t in by_title["Emissions in the selected time range"]["targets"]] == [WINDOWED_TOTAL]
    variable = dashboard_variable_queries(dash)
    assert all(metric_names(s) <= {"up"} for s in variable.values()), "variables must work on a federating server"
    assert sum(1 for t in dashboard_targets(dash) if t[0] not in RAW_PANELS) >= 15


def test_dashboard_covers_the_brief():
    """Panels the deployment guide and the brief ask for, by the metric they show."""
    used = set()
    for _, t in dashboard_targets():
        used |= metric_names(t["expr"])
    must = {
        # drill-down, raw
        "tta_carbon_emissions_grams_total", "tta_carbon_power_watts", "tta_carbon_intensity_grams_per_kwh",
        "up", "tta_carbon_last_measurement_timestamp_seconds", "tta_carbon_up_since_timestamp_seconds",
        "tta_carbon_tracker_available", "tta_carbon_build_info",
        "tta_carbon_output_bytes", "tta_carbon_log_file_bytes",
        "tta_carbon_measurement_errors_total", "tta_carbon_write_errors_total", "tta_carbon_records_dropped_total",
        "tta_carbon_unmeasured_seconds_total",
        # fleet, recording rules
        "host:tta_carbon_emissions_grams:rate5m", "env:tta_carbon_emissions_grams:rate5m",
        "host:tta_carbon_emissions_grams_total:sum", "env:tta_carbon_emissions_grams_total:sum",
        "env_component:tta_carbon_emissions_grams_total:sum",
        "host:tta_carbon_power_watts:sum", "env:tta_carbon_power_watts:sum", "env_component:tta_carbon_power_watts:sum",
        "env:tta_carbon_energy_joules_total:sum",
        "host:tta_carbon_emissions_grams:increase1d", "env:tta_carbon_emissions_grams:increase1d",
        "env:tta_carbon_energy_joules:increase1d", "host:tta_carbon_measured_seconds:increase1d",
    }
    assert must <= used, must - used
    exprs = [t["expr"] for _, t in dashboard_targets()]
    assert any("rate(tta_carbon_emissions_grams_total" in e for e in exprs)
    assert any("by (component) (tta_carbon_power_watts" in e for e in exprs)
    assert any(f'up{{job="{JOB}"' in e for e in exprs)
    titles = {p["title"] for p in dashboard_panels()}
    # docs/alerts.md names these panels
    assert {"Emissions last 1h (alert at 1 kg)", "Build info and energy method"} <= titles


# ------------------------------------------------------------ PromQL
def test_every_expression_parses_with_promtool(promtool, tmp_path):
    exprs = all_exprs()
    assert len(exprs) >= 20
    r = check_exprs_parse(exprs, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in r.stdout


def test_broken_expression_is_caught(promtool, tmp_path):
    """The promtool check above would notice a bad panel query."""
    r = check_exprs_parse({"bad": 'sum by (host) (rate(tta_carbon_emissions_grams_total{env=~".*"}[5m])'}, tmp_path)
    assert r.returncode == 1 and "parse error" in r.stdout + r.stderr


def test_only_contract_metric_names(tmp_path):
    rules_path = rules_for_test(tmp_path)
    recorded = shipped_recorded_names(rules_path)
    allowed = set(contract_metrics()) | PROMETHEUS_SYNTHETIC | recorded
    assert len(contract_metrics()) >= 17, "could not read the metric table of docs/architecture.md"
    for label, expr in all_exprs().items():
        used = metric_names(expr)
        assert used, f"{label}: no metric in {expr!r}"
        assert used <= allowed, f"{label}: not in docs/architecture.md nor a recording rule: {sorted(used - allowed)}"


def test_shipped_rules_record_what_the_dashboard_reads():
    missing = used_rule_names() - shipped_recorded_names()
    assert not missing, f"the dashboard reads rules the shipped file does not record: {sorted(missing)}"
    assert all(RULE_NAME.match(n) for n in used_rule_names())


def test_labels_used_exist():
    """Label names in by (...) and selectors are contract labels or target labels."""
    contract = contract_metrics()
    known = {"job", "instance", "env", "host"} | {l for m in contract.values() for l in m["labels"]}
    for label, expr in all_exprs().items():
        for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
            for name in filter(None, (s.strip() for s in group.split(","))):
                assert name in known, f"{label}: unknown label {name}"
        for sel in re.findall(r"\{([^}]*)\}", expr):
            for name in re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!=|!~|=)", sel):
                assert name in known, f"{label}: unknown label {name}"


# ------------------------------------------------------------ measurement age across a restart
def _age_target(refid: str = "A") -> str:
    (panel,) = [p for p in dashboard_panels() if p["title"] == "Measurement age"]
    (t,) = [t for t in panel["targets"] if t["refId"] == refid]
    return t["expr"]


def test_measurement_age_is_the_stale_alerts_quantity():
    """Same expression as CarbonMeasurementsStale's left-hand side (selectors aside)."""
    (stale,) = [r for r in alert_rules() if r["alert"] == "CarbonMeasurementsStale"]
    panel = re.sub(r"\{[^}]*\}", "", _age_target())
    squash = lambda s: re.sub(r"\s+", "", re.sub(r"#[^\n]*", "", s))
    assert squash(panel) in squash(stale["expr"]), (panel, stale["expr"])


# 15 s scrapes. Life 1 starts at t=0 and measures every 15 s, 10 s before each
# scrape; the daemon restarts at t=300 and exports 0 ("no measurement yet")
# for three scrapes (300, 315, 330) before measuring again from t=340.
AGE_SERIES = {
    "tta_carbon_up_since_timestamp_seconds": "0x19 300x20",
    "tta_carbon_last_measurement_timestamp_seconds": "0 5+15x18 0 0 0 340+15x17",
}
AGE_EXPECTED = {  # eval time -> age in seconds
    "0s": 0,        # just started, nothing measured: age counts from the start
    "150s": 10,     # steady state
    "300s": 0,      # right after the restart (old panel: 300, i.e. time since 1970)
    "330s": 30,
    "345s": 5,      # measuring again
    "9m": 5,
}


def _promtool_age_test(tmp: Path, expr: str) -> subprocess.CompletedProcess:
    labels = '{env="staging", host="h1", instance="127.0.0.1:9880", job="tta-staging-carbon"}'
    doc = {
        "rule_files": [],
        "evaluation_interval": "15s",
        "tests": [{
            "interval": "15s",
            "input_series": [{"series": name + labels, "values": v} for name, v in AGE_SERIES.items()],
            "promql_expr_test": [
                {"expr": expr, "eval_time": at, "exp_samples": [{"labels": labels, "value": value}]}
                for at, value in AGE_EXPECTED.items()
            ],
        }],
    }
    path = tmp / "age.test.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return run([PROMTOOL, "test", "rules", str(path)])


def test_measurement_age_after_a_restart(promtool, tmp_path):
    """A daemon exports tta_carbon_last_measurement_timestamp_seconds 0 until
    its first record after a (re)start; the panel then counts from
    tta_carbon_up_since_timestamp_seconds instead of reading ~1.7e9 s."""
    r = _promtool_age_test(tmp_path, substitute(_age_target()))
    assert r.returncode == 0, r.stdout + r.stderr
    # the same check on the old panel expression fails (epoch-sized ages)
    old = 'time() - tta_carbon_last_measurement_timestamp_seconds{env=~".*", host=~".*"}'
    r = _promtool_age_test(tmp_path, old)
    out = r.stdout + r.stderr
    assert r.returncode == 1 and re.search(r"time: 5m,\s+exp: .* 0E\+00\s+got: .* 3E\+02", out), out


# ------------------------------------------------------------ live: site + federating Prometheus
INTERVAL = 1.0
HOSTS = {"carbon-site-a": "file_sd", "carbon-site-b": "static"}
ENV = "staging"


@dataclass
class TwoLevel:
    site: PromServer
    fed: PromServer
    daemons: dict[str, DrainedDaemon]


@pytest.fixture(scope="module")
def two_level(tmp_path_factory):
    need_prometheus()
    tmp = tmp_path_factory.mktemp("dash")
    daemons: dict[str, DrainedDaemon] = {}
    servers: list[PromServer] = []
    try:
        for host in HOSTS:
            daemons[host] = DrainedDaemon(workdir=tmp / host, interval=INTERVAL,
                                          settings={"env": ENV, "host_name": host})
            daemons[host].start(wait_ready=False)  # boot in parallel
        for d in daemons.values():
            d.wait_for_notification("READY=1", timeout=40)
            d.start_draining()
        (file_host,) = [h for h, how in HOSTS.items() if how == "file_sd"]
        (static_host,) = [h for h, how in HOSTS.items() if how == "static"]
        sd = tmp / "tta-carbon-site.json"
        sd.write_text(json.dumps([{"targets": [daemons[file_host].instance], "labels": {"env": ENV, "host": file_host}}]))
        rules = rules_for_test(tmp)
        cfg = deploy_prom_config(static_targets=[daemons[static_host].instance], file_sd=sd, rule_files=[rules])
        (job,) = [j for j in cfg["scrape_configs"] if j["job_name"] == JOB]
        job["static_configs"][0]["labels"] = {"env": ENV, "host": static_host}
        site = PromServer(tmp / "site", config=cfg).start()
        servers.append(site)
        fed = PromServer(tmp / "fed", config=federating_config(f"127.0.0.1:{site.port}")).start()
        servers.append(fed)
        # enough rule evaluations on the site, and federated scrapes of them, for range queries
        for prom, what in ((site, "site"), (fed, "federating")):
            prom.wait_for(lambda prom=prom: len(prom.query("count_over_time(host:tta_carbon_emissions_grams_total:sum[1m]) >= 4")) == len(HOSTS)
                          and prom.query("count_over_time(host:tta_carbon_measured_seconds:increase1d[1m]) >= 3"),
                          timeout=60, interval=0.5, what=f"rule series on the {what} server")
        yield TwoLevel(site, fed, daemons)
    finally:
        for s in reversed(servers):
            s.stop()
        for d in daemons.values():
            d.stop(signal.SIGTERM, timeout=15)


def _fmt(series: list[dict]) -> str:
    parts = []
    for s in series[:4]:
        labels = {k: v for k, v in s["metric"].items() if k not in ("__name__", "job", "instance", "prometheus")}
        value = s["values"][-1][1] if "values" in s else s["value"][1]
        parts.append(f"{labels or '{}'} = {value}")
    return "; ".join(parts) + (f"; ... ({len(series)} series)" if len(series) > 4 else "")


def _run_target(prom: PromServer, target: dict, now: float, **subs) -> list[dict]:
    """The panel's query as Grafana would send it; the series with a finite value."""
    expr = substitute(target["expr"], rate_interval="10s", range_="1m", **subs)
    if target.get("instant"):
        res = prom.query(expr, at=now)
        return [s for s in res if math.isfinite(float(s["value"][1]))]
    res = prom.query_range(expr, now - 20, now, 1)
    return [s for s in res if any(math.isfinite(float(v)) for _, v in s["values"])]


def _variable_values(prom: PromServer) -> dict[str, list[str]]:
    return {name: sorted({s["metric"].get(name, "") for s in prom.query(substitute(sel))} - {""})
            for name, sel in dashboard_variable_queries().items()}


@pytest.mark.slow
def test_every_panel_returns_data_on_the_site(two_level, results):
    site, now = two_level.site, time.time()
    empty, checked = [], 0
    for title, target in dashboard_targets():
        res = _run_target(site, target, now)
        checked += 1
        results.add(f"[site] [{title}] {target['refId']} -> {_fmt(res) if res else 'NO DATA'}")
        if not res:
            empty.append(f"{title} [{target['refId']}]")
    values = _variable_values(site)
    results.add(f"[site] variables: {values}")
    assert values == {"env": [ENV], "host": sorted(HOSTS)}
    results.add(f"[site] {checked} panel queries, {checked - len(empty)} with data")
    assert not empty, "panel queries without data on the site Prometheus:\n" + "\n".join(empty)


@pytest.mark.slow
def test_choosing_a_host_narrows_every_host_level_panel(two_level, results):
    site, now = two_level.site, time.time()
    host, other = sorted(HOSTS)
    narrowed = 0
    for title, target in dashboard_targets():
        if "$host" not in target["expr"]:
            continue
        one = _run_target(site, target, now, host=host)
        assert one, f"{title} [{target['refId']}]: no data for host {host}"
        assert all(s["metric"].get("host", host) == host for s in one), (title, _fmt(one))
        narrowed += 1
    # a host's share of the windowed total is less than the whole (both emit)
    (total_target,) = [t for title, t in dashboard_targets() if title == "Emissions in the selected time range"]
    at = now
    whole = float(_run_target(site, total_target, at)[0]["value"][1])
    parts = [float(_run_target(site, total_target, at, host=h)[0]["value"][1]) for h in (host, other)]
    results.add(f"[site] host={host}: {narrowed} host-level queries narrowed; windowed total {whole!r} g = {parts!r}")
    assert 0 < parts[0] < whole and 0 < parts[1] < whole
    assert math.isclose(sum(parts), whole, rel_tol=1e-9)


@pytest.mark.slow
def test_fleet_panels_return_data_on_the_federating_server(two_level, results):
    fed, now = two_level.fed, time.time()
    names = {s["metric"]["__name__"] for s in fed.query('{__name__=~".+"}')}
    results.add(f"[federating] match[]: {FEDERATE_MATCH}; series names held: {sorted(names)}")
    assert not any(is_raw(n) for n in names), "raw series reached the federating server"
    empty, unexpected, fleet, raw = [], [], 0, 0
    for title, target in dashboard_targets():
        res = _run_target(fed, target, now)
        results.add(f"[federating] [{title}] {target['refId']} -> {_fmt(res) if res else 'NO DATA'}")
        if title in RAW_PANELS:
            raw += 1
            if res:
                unexpected.append(f"{title} [{target['refId']}]: {_fmt(res)}")
        else:
            fleet += 1
            if not res:
                empty.append(f"{title} [{target['refId']}]")
    values = _variable_values(fed)
    results.add(f"[federating] variables: {values}; {fleet} fleet queries ({fleet - len(empty)} with data), "
                f"{raw} raw drill-down queries ({len(unexpected)} with data)")
    assert values == _variable_values(two_level.site)
    assert not empty, "fleet panel queries without data on the federating Prometheus:\n" + "\n".join(empty)
    assert not unexpected, "RAW_PANELS entries that do return data on the federating server (move them out):\n" + "\n".join(unexpected)


@pytest.mark.slow
def test_measurement_age_on_live_daemons(two_level, results):
    site = two_level.site
    res = site.query(substitute(_age_target()))
    ages = {s["metric"]["host"]: float(s["value"][1]) for s in res}
    results.add(f"[site] measurement age now: {ages}")
    assert set(ages) == set(HOSTS)
    assert all(0 <= a <= 3 * INTERVAL for a in ages.values()), ages
