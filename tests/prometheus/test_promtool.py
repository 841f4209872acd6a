"""promtool on everything under deploy/prometheus: config, rules, rule unit tests.

Also proves the rule unit tests bite: each mutation of the alert rules below
(a different threshold, window, `for:` or label set) must make
`promtool test rules` fail.
"""
from __future__ import annotations

import json
import re
import shutil

import pytest
import yaml

from tests.prometheus.promlib import (
    ALERT_RULES, EXAMPLE_TARGETS, JOB, PROM_CONFIG, PROM_DIR, RECORDING_RULES, RULE_FILES, RULE_TESTS,
    alert_rules, contract_metrics, load_rules, metric_names, recording_rules, run,
)


def test_deploy_tree_is_complete():
    assert PROM_CONFIG.is_file()
    assert {p.name for p in RULE_FILES} == {"tta-carbon-alerts.yml", "tta-carbon-recording.yml"}
    assert {p.name for p in RULE_TESTS} == {
        "tta-carbon-alerts.test.yml", "tta-carbon-recording.test.yml", "tta-carbon-recording-daily.test.yml"}


def test_check_config(promtool):
    r = run([promtool, "check", "config", PROM_CONFIG.name], cwd=PROM_DIR)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout + r.stderr
    # The only warning: no live targets/tta-carbon-*.json yet (expected: the
    # repository ships only the example).
    warnings = [l for l in out.splitlines() if "WARNING" in l]
    assert warnings == ['  WARNING: file "targets/tta-carbon-*.json" for file_sd in scrape job "tta-staging-carbon" does not exist'], out
    assert f"SUCCESS: {len(RULE_FILES)} rule files found" in out
    assert "is valid prometheus config file syntax" in out
    for path in RULE_FILES:
        n = len(load_rules(path))
        assert re.search(rf"Checking rules/{re.escape(path.name)}\s+SUCCESS: {n} rules found", out), out


def test_config_contents():
    cfg = yaml.safe_load(PROM_CONFIG.read_text())
    (job,) = [j for j in cfg["scrape_configs"] if j["job_name"] == JOB]
    assert job["metrics_path"] == "/metrics"
    assert job["scrape_interval"] == "30s"
    assert job["sample_limit"] == 200  # docs/fleet.md section 4: page maximum 109 + 2 per GPU
    assert job["static_configs"][0]["targets"] == ["127.0.0.1:9880"]  # contract port, not 9090
    assert "9090" not in json.dumps(job)
    assert job["file_sd_configs"][0]["files"] == ["targets/tta-carbon-*.json"]
    # The example is documentation: it must not match the live glob.
    assert not EXAMPLE_TARGETS.match("tta-carbon-*.json")
    assert sorted(cfg["rule_files"]) == sorted(f"rules/{p.name}" for p in RULE_FILES)


def test_example_file_sd_targets_pass_promtool(promtool, tmp_path):
    """promtool validates file_sd files it can see: point a copy of the config
    at the example, then at a broken copy of it (which must fail)."""
    cfg = yaml.safe_load(PROM_CONFIG.read_text())
    cfg.pop("rule_files")
    for j in cfg["scrape_configs"]:
        j["file_sd_configs"] = [{"files": [str(tmp_path / "targets.json")]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(cfg))

    example = json.loads(EXAMPLE_TARGETS.read_text())
    assert example and all(set(g) == {"targets", "labels"} and set(g["labels"]) == {"env", "host"} for g in example)
    assert all(t.endswith(":9880") for g in example for t in g["targets"])

    shutil.copy(EXAMPLE_TARGETS, tmp_path / "targets.json")
    ok = run([promtool, "check", "config", str(tmp_path / "prometheus.yml")])
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "does not exist" not in ok.stdout + ok.stderr

    broken = [dict(example[0], labels={"env": 1})]
    (tmp_path / "targets.json").write_text(json.dumps(broken))
    bad = run([promtool, "check", "config", str(tmp_path / "prometheus.yml")])
    assert bad.returncode == 1
    assert "checking SD file" in bad.stdout + bad.stderr


EXAMPLES = sorted((PROM_DIR / "examples").glob("*.yml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_configs(promtool, path):
    """The fleet examples in docs/fleet.md are valid configs."""
    agent = ["--agent"] if "agent" in path.name else []
    r = run([promtool, "check", "config", *agent, str(path)])
    out = r.stdout + r.stderr
    if "consul_sd_configs not found" in out:
        pytest.skip("this promtool (Debian's 2.42 build) has no Consul service discovery")
    assert r.returncode == 0, out
    assert "is valid prometheus config file syntax" in out
    doc = yaml.safe_load(path.read_text())
    for job in doc["scrape_configs"]:
        if job["job_name"] == JOB:
            assert job["sample_limit"] == 200 and job["metrics_path"] == "/metrics"


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_check_rules(promtool, path):
    r = run([promtool, "check", "rules", "--lint=all", str(path)])
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(load_rules(path))} rules found" in r.stdout
    assert "WARNING" not in r.stdout + r.stderr


@pytest.mark.parametrize("path", RULE_TESTS, ids=lambda p: p.name)
def test_rule_unit_tests(promtool, path):
    r = run([promtool, "test", "rules", str(path)])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout and "FAILED" not in r.stdout + r.stderr


def test_every_alert_has_firing_and_quiet_unit_tests():
    alerts = {r["alert"]: r for r in alert_rules()}
    assert set(alerts) == {"HighCarbonEmissions", "CarbonComponentDown", "CarbonMeasurementsStale",
                           "CarbonOutputWriteErrors", "CarbonEstimatedEnergy", "CarbonUnmeasuredTime",
                           "CarbonPlatformMeterDown"}
    doc = yaml.safe_load((PROM_DIR / "tests" / "tta-carbon-alerts.test.yml").read_text())
    cases = [c for t in doc["tests"] for c in t.get("alert_rule_test", [])]
    for name, rule in alerts.items():
        mine = [c for c in cases if c["alertname"] == name]
        firing = [c for c in mine if c["exp_alerts"]]
        quiet = [c for c in mine if not c["exp_alerts"]]
        assert firing, f"{name}: no firing case"
        assert quiet, f"{name}: no non-firing case"
        for c in firing:
            for a in c["exp_alerts"]:
                assert a["exp_labels"]["severity"] == rule["labels"]["severity"]
                assert a["exp_labels"]["component"] == "carbon"
                assert set(a["exp_annotations"]) == set(rule["annotations"]), name
    # That `for:` is respected (quiet while pending) is pinned by the mutation
    # tests below: shortening or lengthening any `for:` must break a case.


def test_every_recording_rule_has_a_unit_test():
    tested = " ".join(
        c["expr"]
        for f in ("tta-carbon-recording.test.yml", "tta-carbon-recording-daily.test.yml")
        for t in yaml.safe_load((PROM_DIR / "tests" / f).read_text())["tests"]
        for c in t.get("promql_expr_test", []))
    for rule in recording_rules():
        assert re.search(rf"(?<![\w:]){re.escape(rule['record'])}(?![\w:])", tested), rule["record"]


def test_alert_metadata():
    for rule in alert_rules():
        assert rule["labels"]["component"] == "carbon", rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
    sev = {r["alert"]: (r["labels"]["severity"], r.get("for")) for r in alert_rules()}
    assert sev["CarbonComponentDown"] == ("critical", "2m")
    assert sev["HighCarbonEmissions"] == ("warning", "5m")
    assert sev["CarbonEstimatedEnergy"][0] == "info"
    assert sev["CarbonUnmeasuredTime"] == ("warning", "15m")


def test_alerts_key_on_host():
    """Summaries name the host; aggregations keep (env, host); joins include
    host. (Under topology B every instance is 127.0.0.1:9880.)"""
    for rule in alert_rules():
        assert "{{ $labels.host }}" in rule["annotations"]["summary"], rule["alert"]
        assert "$labels.instance" not in rule["annotations"]["summary"], rule["alert"]
        assert rule["annotations"]["description"].startswith("{{ $labels.host }}") or \
            "on {{ $labels.host }}" in rule["annotations"]["description"], rule["alert"]
        for by in re.findall(r"\b(?:by|on)\s*\(([^)]*)\)", rule["expr"]):
            assert "host" in by, (rule["alert"], by)


LEVEL_LABELS = {"host": {"env", "host"}, "env": {"env"}, "env_component": {"env", "component"}}


def test_recording_rule_naming():
    """level:metric:operations, where `level` names the labels kept by the
    aggregation (never `instance`: under topology B every host's instance is
    127.0.0.1:9880) and `metric` is a contract metric (minus _total after
    rate/increase), read from the raw series or from a host-level rule."""
    contract = contract_metrics()
    recorded = {r["record"] for r in recording_rules()}
    for rule in recording_rules():
        name, expr = rule["record"], rule["expr"]
        m = re.fullmatch(r"([a-z_]+):([a-z_]+):([a-z0-9_]+)", name)
        assert m, name
        level, metric, ops = m.groups()
        by = re.search(r"\bby\s*\(([^)]*)\)", expr)
        assert by, name
        assert {s.strip() for s in by.group(1).split(",")} == LEVEL_LABELS[level], name
        assert "instance" not in expr, name
        (source,) = metric_names(expr)
        if source in recorded:
            src_level, base, src_ops = source.split(":")
            assert src_level == "host", name  # env figures are sums of host figures
        else:
            assert source in contract, name
            base, src_ops = source, None
        if re.search(r"\b(rate|increase)\(", expr):
            assert base == metric + "_total" and re.fullmatch(r"(rate|increase)\d+[smhd]", ops), name
            window = re.search(r"\[(\d+[smhd])\]", expr).group(1)
            assert ops.endswith(window), name
            if ops == "increase1d":  # the daily rules read the 4m copies, not 30 s data
                assert src_ops in ("sum_lowres", "increase1d"), name
        else:
            assert base == metric, name
            if src_ops is None:
                assert ops in ("sum", "sum_lowres"), name
            else:  # a sum of host-level values keeps their operation
                assert ops == src_ops, name


def test_rule_groups_and_intervals():
    doc = yaml.safe_load(RECORDING_RULES.read_text())
    groups = {g["name"]: g for g in doc["groups"]}
    assert set(groups) == {"tta-carbon-fleet", "tta-carbon-fleet-daily"}
    assert groups["tta-carbon-fleet"]["interval"] == "30s"
    # under Prometheus's 5m lookback, so an instant query always finds the daily series
    assert groups["tta-carbon-fleet-daily"]["interval"] == "4m"
    fast = {r["record"] for r in groups["tta-carbon-fleet"]["rules"]}
    daily = {r["record"] for r in groups["tta-carbon-fleet-daily"]["rules"]}
    # the contract's names (issue 16), no instance: level left
    assert fast == {
        "host:tta_carbon_emissions_grams_total:sum", "host:tta_carbon_energy_joules_total:sum",
        "host:tta_carbon_measured_seconds_total:sum", "host:tta_carbon_power_watts:sum",
        "host:tta_carbon_emissions_grams:rate5m", "env:tta_carbon_emissions_grams:rate5m",
        "env:tta_carbon_power_watts:sum", "env_component:tta_carbon_power_watts:sum",
        "env:tta_carbon_emissions_grams_total:sum", "env_component:tta_carbon_emissions_grams_total:sum",
        "env:tta_carbon_energy_joules_total:sum"}
    assert {"host:tta_carbon_emissions_grams:increase1d", "env:tta_carbon_emissions_grams:increase1d",
            "env:tta_carbon_energy_joules:increase1d", "host:tta_carbon_measured_seconds:increase1d"} <= daily
    assert all("[1d]" not in r["expr"] for r in groups["tta-carbon-fleet"]["rules"])
    # no daily rule reads 30 s data over a day
    for r in groups["tta-carbon-fleet-daily"]["rules"]:
        if "[1d]" in r["expr"]:
            assert ":sum_lowres[1d]" in r["expr"], r["record"]


def test_rules_use_only_contract_metrics():
    allowed = set(contract_metrics()) | {"up"} | {r["record"] for r in recording_rules()}
    for rule in alert_rules() + recording_rules():
        used = metric_names(rule["expr"])
        assert used and used <= allowed, (rule.get("alert") or rule.get("record"), used - allowed)


# CarbonUnmeasuredTime's min(unmeasured, 86400 - measured), as the alert file writes it.
UNMEASURED_MIN = """            (
                last_over_time(host:tta_carbon_unmeasured_seconds:increase1d[10m])
              < 86400 - last_over_time(host:tta_carbon_measured_seconds:increase1d[10m])
            )
            or clamp_min(86400 - last_over_time(host:tta_carbon_measured_seconds:increase1d[10m]), 0)
              and last_over_time(host:tta_carbon_unmeasured_seconds:increase1d[10m])"""


# Each mutation changes one property the alert tests pin down; every one must
# make `promtool test rules` fail. (old, new) are literal replacements in the
# alert rules file; `count` says how many occurrences must be replaced.
MUTATIONS = [
    ("for: 5m", "for: 4m", 1),                      # HighCarbonEmissions `for`
    ("for: 5m", "for: 6m", 1),
    (") > 1000", ") > 900", 1),                     # threshold
    (") > 1000", ") > 1100", 1),
    ("[1h])  # WINDOW", "[2h])  # WINDOW", 1),     # window
    ("[1h])  # WINDOW", "[30m])  # WINDOW", 1),
    ("sum by (env, host) (", "sum by (env) (", 1),  # labels
    ("sum by (env, host) (", "max by (env, host) (", 1),  # components summed
    ("up{job=\"tta-staging-carbon\"} == 0\n        for: 2m", "up == 0\n        for: 2m", 1),  # job filter
    ("== 0\n        for: 2m", "== 0\n        for: 1m", 1),   # CarbonComponentDown `for`
    ("== 0\n        for: 2m", "== 0\n        for: 3m", 1),
    ("> 3 * tta", "> 2 * tta", 1),                   # staleness factor
    ("> 3 * tta", "> 4 * tta", 1),
    ("and on (job, env, host, instance) up{job=\"tta-staging-carbon\"} == 1\n", "\n", 1),  # up guard
    # topology B: the guard joined on (job, instance) only, so another host's up kept a down host's alert
    ("and on (job, env, host, instance)", "and on (job, instance)", 1),
    # Staleness counted from max(last measurement, start): the old rule (age from the last
    # measurement only, 0 after a restart) fires after a restart; age from the start only, or
    # no start fallback (a daemon that never measures after it started), must fail too.
    ("- (\n                  tta_carbon_last_measurement_timestamp_seconds > tta_carbon_up_since_timestamp_seconds\n"
     "                    or tta_carbon_up_since_timestamp_seconds\n                )",
     "- tta_carbon_last_measurement_timestamp_seconds", 1),
    ("\n                    or tta_carbon_up_since_timestamp_seconds\n", "\n", 1),
    ("tta_carbon_last_measurement_timestamp_seconds > tta_carbon_up_since_timestamp_seconds\n"
     "                    or tta_carbon_up_since_timestamp_seconds", "tta_carbon_up_since_timestamp_seconds", 1),
    ("[10m]", "[5m]", 2),                            # write-error window
    ("[10m]", "[15m]", 2),
    ("+ increase(tta_carbon_records_dropped_total[10m])", "+ 0 * increase(tta_carbon_records_dropped_total[10m])", 1),
    ("for: 1m", "for: 0m", 1),                       # CarbonOutputWriteErrors `for`
    ("for: 1m", "for: 2m", 1),
    ("for: 10m", "for: 9m", 1),                      # CarbonEstimatedEnergy `for`
    ("severity: info", "severity: warning", 1),
    ("severity: critical", "severity: warning", 1),
    ("component: carbon", "component: carbon-daemon", 6),
    # CarbonUnmeasuredTime: threshold, `for:`, the cap at the unmeasured part of the day, and the
    # naive share (1 - measured / day), which alarms for a host younger than a day
    (") / 86400 > 0.05  # THRESHOLD", ") / 86400 > 0.04  # THRESHOLD", 1),
    (") / 86400 > 0.05  # THRESHOLD", ") / 86400 > 0.08  # THRESHOLD", 1),
    ("for: 15m", "for: 10m", 1),
    ("for: 15m", "for: 20m", 1),
    (UNMEASURED_MIN,
     "            last_over_time(host:tta_carbon_unmeasured_seconds:increase1d[10m])", 1),
    (UNMEASURED_MIN,
     "            86400 - last_over_time(host:tta_carbon_measured_seconds:increase1d[10m])", 1),
]


@pytest.mark.parametrize("old,new,count", MUTATIONS, ids=[f"{o.strip()[:30]}->{n.strip()[:30]}" for o, n, _ in MUTATIONS])
def test_alert_unit_tests_catch_mutation(promtool, tmp_path, old, new, count):
    src = ALERT_RULES.read_text()
    assert src.count(old) >= count, f"mutation target {old!r} not found {count}x"
    mutated = src.replace(old, new, count)
    (tmp_path / "rules").mkdir()
    (tmp_path / "tests").mkdir()
    (tmp_path / "rules" / ALERT_RULES.name).write_text(mutated)
    test_file = PROM_DIR / "tests" / "tta-carbon-alerts.test.yml"
    shutil.copy(test_file, tmp_path / "tests" / test_file.name)
    syntax = run([promtool, "check", "rules", str(tmp_path / "rules" / ALERT_RULES.name)])
    assert syntax.returncode == 0, "mutation should stay valid PromQL: " + syntax.stdout + syntax.stderr
    r = run([promtool, "test", "rules", str(tmp_path / "tests" / test_file.name)])
    assert r.returncode == 1 and "FAILED" in r.stdout + r.stderr, f"mutation {old!r} -> {new!r} survived"


RECORDING_MUTATIONS = [
    ("sum by (env, host) (tta_carbon_emissions_grams_total)\n", "sum by (env) (tta_carbon_emissions_grams_total)\n"),
    ("[5m]", "[1m]"),
    ("[1d]", "[12h]"),
    ("sum by (env, component) (tta_carbon_power_watts)", "max by (env, component) (tta_carbon_power_watts)"),
    # the issue-16 collapse: env totals as a plain sum of what is scraped now
    ("sum by (env) (last_over_time(host:tta_carbon_emissions_grams_total:sum[1h]))",
     "sum by (env) (host:tta_carbon_emissions_grams_total:sum)"),
    ("sum by (env) (last_over_time(host:tta_carbon_energy_joules_total:sum[1h]))",
     "sum by (env) (host:tta_carbon_energy_joules_total:sum)"),
    ("sum by (env, component) (last_over_time(tta_carbon_emissions_grams_total[1h]))",
     "sum by (env, component) (tta_carbon_emissions_grams_total)"),
    ("last_over_time(host:tta_carbon_emissions_grams_total:sum[1h])", "last_over_time(host:tta_carbon_emissions_grams_total:sum[2m])"),
    ("increase(host:tta_carbon_unmeasured_seconds_total:sum_lowres[1d])", "increase(host:tta_carbon_unmeasured_seconds_total:sum_lowres[12h])"),
]


def test_recording_unit_tests_catch_mutation(promtool, tmp_path):
    src = RECORDING_RULES.read_text()
    for i, (old, new) in enumerate(RECORDING_MUTATIONS):
        d = tmp_path / str(i)
        (d / "rules").mkdir(parents=True)
        (d / "tests").mkdir()
        assert old in src
        (d / "rules" / RECORDING_RULES.name).write_text(src.replace(old, new))
        shutil.copy(ALERT_RULES, d / "rules" / ALERT_RULES.name)  # the daily test loads both files
        for name in ("tta-carbon-recording.test.yml", "tta-carbon-recording-daily.test.yml"):
            shutil.copy(PROM_DIR / "tests" / name, d / "tests" / name)
        r = run([promtool, "test", "rules", *sorted(str(p) for p in (d / "tests").iterdir())])
        assert r.returncode == 1 and "FAILED" in r.stdout + r.stderr, f"mutation {old!r} -> {new!r} survived"
