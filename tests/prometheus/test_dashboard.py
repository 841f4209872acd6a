"""Lint of deploy/grafana/tta-carbon-dashboard.json.

Every panel target and every template-variable selector must parse with the
real PromQL parser (written into a temp rules file for `promtool check
rules`) and may only use metric names from docs/architecture.md (plus
Prometheus's own `up`).
"""
from __future__ import annotations

import re

import pytest

from tests.prometheus.promlib import (
    JOB, PROMETHEUS_SYNTHETIC, check_exprs_parse, contract_metrics, dashboard_panels,
    dashboard_targets, dashboard_variable_queries, load_dashboard, metric_names, substitute,
)

DS_REF = {"type": "prometheus", "uid": "${datasource}"}


def all_exprs() -> dict[str, str]:
    """label -> substituted PromQL, for every target and variable."""
    exprs = {}
    for title, t in dashboard_targets():
        exprs[f"{title} [{t['refId']}]"] = substitute(t["expr"])
    for name, sel in dashboard_variable_queries().items():
        exprs[f"variable {name}"] = substitute(sel)
    return exprs


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
])
def test_metric_name_extraction(expr, names):
    assert metric_names(expr) == names


# ------------------------------------------------------------ structure
def test_dashboard_structure():
    dash = load_dashboard()
    assert 36 <= dash["schemaVersion"] <= 39
    assert dash["uid"] and dash["title"]
    assert dash.get("id") is None, "an importable dashboard carries no database id"
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("env", "instance"):
        v = variables[name]
        assert v["type"] == "query" and v["datasource"] == DS_REF
        assert v["includeAll"] and v["multi"] and v["allValue"] == ".*"
    assert "$env" in dashboard_variable_queries()["instance"], "instance list should follow the env choice"

    panels = dashboard_panels(dash)
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    for p in panels:
        assert p["datasource"] == DS_REF, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"] == DS_REF, p["title"]
            assert 'env=~"$env"' in t["expr"] and 'instance=~"$instance"' in t["expr"], (p["title"], t["expr"])
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
    # no two panels overlap on the grid
    cells = {}
    for p in dash["panels"]:
        g = p["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = p["title"]


def test_dashboard_covers_the_brief():
    """Panels the deployment guide and the brief ask for, by the metric they show."""
    used = set()
    for _, t in dashboard_targets():
        used |= metric_names(t["expr"])
    must = {
        "tta_carbon_emissions_grams_total",        # emissions over time (rate) + cumulative
        "tta_carbon_power_watts",                  # power by component
        "tta_carbon_intensity_grams_per_kwh",      # carbon intensity
        "up", "tta_carbon_last_measurement_timestamp_seconds", "tta_carbon_tracker_available",
        "tta_carbon_build_info",                   # component health, energy method
        "tta_carbon_output_bytes", "tta_carbon_log_file_bytes",  # file sizes
        "tta_carbon_measurement_errors_total", "tta_carbon_write_errors_total",
        "tta_carbon_records_dropped_total",        # error rate
    }
    assert must <= used, must - used
    exprs = [t["expr"] for _, t in dashboard_targets()]
    assert any("rate(tta_carbon_emissions_grams_total" in e for e in exprs)
    assert any(re.match(r"sum by \(instance\) \(tta_carbon_emissions_grams_total", e) for e in exprs)
    assert any("by (component) (tta_carbon_power_watts" in e for e in exprs)
    assert any(f'up{{job="{JOB}"' in e for e in exprs)


# ------------------------------------------------------------ PromQL
def test_every_expression_parses_with_promtool(promtool, tmp_path):
    exprs = all_exprs()
    assert len(exprs) >= 20
    r = check_exprs_parse(exprs, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in r.stdout


def test_broken_expression_is_caught(promtool, tmp_path):
    """The promtool check above would notice a bad panel query."""
    r = check_exprs_parse({"bad": 'sum by (instance) (rate(tta_carbon_emissions_grams_total{env=~".*"}[5m])'}, tmp_path)
    assert r.returncode == 1 and "parse error" in r.stdout + r.stderr


def test_only_contract_metric_names():
    allowed = set(contract_metrics()) | PROMETHEUS_SYNTHETIC
    assert len(contract_metrics()) >= 17, "could not read the metric table of docs/architecture.md"
    for label, expr in all_exprs().items():
        used = metric_names(expr)
        assert used, f"{label}: no metric in {expr!r}"
        assert used <= allowed, f"{label}: not in docs/architecture.md: {sorted(used - allowed)}"


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
