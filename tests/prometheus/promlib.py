"""Paths, contract and PromQL helpers shared by the tests in tests/prometheus/."""
from __future__ import annotations

import json
import os
import re
import socket
import shutil
import subprocess
from pathlib import Path

import yaml

from tests.prometheus.promserver import AMTOOL, PROMTOOL  # noqa: F401  (re-exported)

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
PROM_DIR = DEPLOY / "prometheus"
PROM_CONFIG = PROM_DIR / "prometheus.yml"
HOST_PLACEHOLDER = "@CARBON_HOST_NAME@"  # the local target's host label in PROM_CONFIG
RULES_DIR = PROM_DIR / "rules"
ALERT_RULES = RULES_DIR / "tta-carbon-alerts.yml"
RECORDING_RULES = RULES_DIR / "tta-carbon-recording.yml"
RULE_FILES = sorted(RULES_DIR.glob("*.yml"))
RULE_TESTS = sorted((PROM_DIR / "tests").glob("*.yml"))
EXAMPLE_TARGETS = PROM_DIR / "targets" / "tta-carbon.example.json"
DASHBOARD = DEPLOY / "grafana" / "tta-carbon-dashboard.json"
ALERTMANAGER = DEPLOY / "alertmanager" / "alertmanager.yml"
ARCHITECTURE = REPO / "docs" / "architecture.md"

JOB = "tta-staging-carbon"

# Metrics Prometheus itself attaches to every target; allowed in queries
# besides the daemon's own contract metrics.
PROMETHEUS_SYNTHETIC = {"up", "ALERTS", "ALERTS_FOR_STATE"}


def need(binary: str, package: str) -> None:
    """Skip the calling test when a binary is missing; fail instead when
    TTA_REQUIRE_PROMETHEUS=1 (CI installs the packages, so a skip there would
    hide a broken install)."""
    import pytest

    if shutil.which(binary):
        return
    msg = f"`{binary}` not installed (apt-get install -y --no-install-recommends {package})"
    if os.environ.get("TTA_REQUIRE_PROMETHEUS") == "1":
        pytest.fail(msg + " and TTA_REQUIRE_PROMETHEUS=1")
    pytest.skip(msg)


def need_prometheus() -> None:
    need("prometheus", "prometheus")


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, **kw)


# ----------------------------------------------------------------- contract
def contract_metrics() -> dict[str, dict]:
    """Metric rows of docs/architecture.md: name -> {type, labels}."""
    out: dict[str, dict] = {}
    for line in ARCHITECTURE.read_text().splitlines():
        m = re.match(r"\|\s*`(tta_carbon_[a-z0-9_]+)`\s*\|\s*([^|]+?)\s*\|\s*([^|]*?)\s*\|", line)
        if m:
            labels = re.findall(r"`([a-z_]+)`", m.group(3))
            # "only with a GPU source" etc.: exported only on hosts that have the hardware.
            out[m.group(1)] = {"type": m.group(2), "labels": labels, "conditional": "only with" in m.group(3)}
    return out


# ----------------------------------------------------------------- rules
def load_rules(path: Path) -> list[dict]:
    doc = yaml.safe_load(path.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def alert_rules() -> list[dict]:
    return [r for r in load_rules(ALERT_RULES) if "alert" in r]


def recording_rules() -> list[dict]:
    return [r for f in RULE_FILES for r in load_rules(f) if "record" in r]


# ----------------------------------------------------------------- PromQL
_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "offset", "atan2", "inf", "nan",
}
_AGGREGATIONS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile",
}
_TOKEN = re.compile(
    r"""
    (?P<comment>\#[^\n]*)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<number>(?:0x[0-9a-fA-F]+)|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?(?:ms|s|m|h|d|w|y)?)
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<other>\S)
    """,
    re.VERBOSE,
)


def metric_names(expr: str) -> set[str]:
    """Metric names used by a PromQL expression (best-effort tokenizer:
    identifiers that are not functions, keywords, label names inside {...},
    label lists after by/without/on/ignoring/group_*, or inside [...])."""
    tokens = [(m.lastgroup, m.group()) for m in _TOKEN.finditer(expr) if m.lastgroup not in ("comment",)]
    names: set[str] = set()
    brace = bracket = 0
    skip_label_list = False
    paren_depth_of_list = None
    depth = 0
    for i, (kind, text) in enumerate(tokens):
        nxt = tokens[i + 1][1] if i + 1 < len(tokens) else ""
        if kind == "other":
            if text == "{":
                brace += 1
            elif text == "}":
                brace -= 1
            elif text == "[":
                bracket += 1
            elif text == "]":
                bracket -= 1
            elif text == "(":
                depth += 1
                if skip_label_list and paren_depth_of_list is None:
                    paren_depth_of_list = depth
            elif text == ")":
                if paren_depth_of_list == depth:
                    skip_label_list = False
                    paren_depth_of_list = None
                depth -= 1
            continue
        if kind == "ident" and not brace and not bracket:
            low = text.lower()
            if low in ("by", "without", "on", "ignoring", "group_left", "group_right"):
                skip_label_list = nxt == "("  # group_left may come without a list
                paren_depth_of_list = None
            elif skip_label_list and paren_depth_of_list is not None:
                pass  # a label name in by (...)
            elif nxt == "(":
                pass  # function / aggregation
            elif low in _AGGREGATIONS and nxt.lower() in ("by", "without"):
                pass  # sum by (...) (...)
            elif low in _KEYWORDS:
                pass
            else:
                names.add(text)
    return names


def check_exprs_parse(exprs: dict[str, str], tmp: Path) -> subprocess.CompletedProcess:
    """Write exprs as recording rules into a temp rules file and run
    `promtool check rules` on it; that parses every expression with the real
    PromQL parser."""
    rules = [{"record": f"lint:expr_{i}:check", "expr": e} for i, e in enumerate(exprs.values())]
    path = tmp / "exprs.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "lint", "rules": rules}]}, sort_keys=False))
    return run([PROMTOOL, "check", "rules", str(path)])


# ----------------------------------------------------------------- dashboard
def load_dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_panels(dash: dict | None = None) -> list[dict]:
    """All non-row panels, including those nested in collapsed rows."""
    dash = dash or load_dashboard()
    out = []
    for p in dash["panels"]:
        if p.get("type") == "row":
            out.extend(p.get("panels", []))
        else:
            out.append(p)
    return out


def dashboard_targets(dash: dict | None = None) -> list[tuple[str, dict]]:
    """(panel title, target) for every Prometheus target of every panel."""
    return [(p["title"], t) for p in dashboard_panels(dash) for t in p.get("targets", []) if "expr" in t]


def dashboard_variable_queries(dash: dict | None = None) -> dict[str, str]:
    """name -> the PromQL selector inside label_values(<selector>, label)."""
    dash = dash or load_dashboard()
    out = {}
    for v in dash["templating"]["list"]:
        if v["type"] != "query":
            continue
        q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        m = re.fullmatch(r"\s*label_values\((.*),\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*", q, re.S)
        assert m, f"variable {v['name']}: unsupported query {q!r}"
        out[v["name"]] = m.group(1)
    return out


def substitute(expr: str, rate_interval: str = "5m", range_: str = "1h") -> str:
    """Replace Grafana variables so the expression is plain PromQL."""
    expr = expr.replace("$__rate_interval", rate_interval).replace("${__rate_interval}", rate_interval)
    expr = expr.replace("$__interval", "1m").replace("${__interval}", "1m")
    expr = expr.replace("$__range", range_).replace("${__range}", range_)
    expr = re.sub(r"\$\{?(env|instance)\}?", ".*", expr)
    assert "$" not in expr, f"unsubstituted variable in {expr!r}"
    return expr


# ----------------------------------------------------------------- configs
def deploy_prom_config(
    *,
    static_targets: list[str] | None,
    file_sd: Path | None = None,
    rule_files: list[Path] | None = None,
    interval: str = "1s",
    host: str | None = None,
) -> dict:
    """deploy/prometheus/prometheus.yml adapted for a test: intervals set to
    `interval`, no Alertmanager, rule files by absolute path, the job's
    static target(s) and file_sd file replaced. Job name, metrics_path and
    target labels stay as deployed; the local target's host placeholder is set
    as docs/deployment.md's install does (``host``, default this machine's hostname,
    which is also the daemon's default host_name)."""
    host = socket.gethostname() if host is None else host
    cfg = yaml.safe_load(PROM_CONFIG.read_text().replace(HOST_PLACEHOLDER, host))
    cfg["global"]["scrape_interval"] = interval
    cfg["global"]["evaluation_interval"] = interval
    cfg.pop("alerting", None)
    cfg["rule_files"] = [str(p) for p in (rule_files if rule_files is not None else [RECORDING_RULES, ALERT_RULES])]
    (job,) = [j for j in cfg["scrape_configs"] if j["job_name"] == JOB]
    job["scrape_interval"] = interval
    job["scrape_timeout"] = interval
    if static_targets:
        job["static_configs"][0]["targets"] = static_targets
    else:
        job.pop("static_configs", None)
    if file_sd is not None:
        job["file_sd_configs"] = [{"files": [str(file_sd)], "refresh_interval": "1s"}]
    else:
        job.pop("file_sd_configs", None)
    return cfg


def rules_with_for(src: Path, dst: Path, overrides: dict[str, str]) -> Path:
    """Copy an alert rules file, changing only `for:` of the named alerts."""
    doc = yaml.safe_load(src.read_text())
    seen = set()
    for group in doc["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") in overrides:
                rule["for"] = overrides[rule["alert"]]
                seen.add(rule["alert"])
    assert seen == set(overrides), f"alerts not found: {set(overrides) - seen}"
    dst.write_text(yaml.safe_dump(doc, sort_keys=False))
    return dst


def rules_with_interval(src: Path, dst: Path, interval: str) -> Path:
    """Copy a rule file, changing only every group's `interval:` (tests run the
    shipped rules faster than their 30 s / 4 m)."""
    doc = yaml.safe_load(src.read_text())
    for group in doc["groups"]:
        group["interval"] = interval
    dst.write_text(yaml.safe_dump(doc, sort_keys=False))
    return dst
