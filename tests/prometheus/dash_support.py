"""Helpers for tests/prometheus/test_dashboard.py: Grafana variable
substitution with the `host` variable, the recording rules the dashboard
reads, and the two-level (site + federating) Prometheus setup.

"""
from __future__ import annotations

import re
from pathlib import Path

import yaml

from tests.prometheus.promlib import JOB, RECORDING_RULES, dashboard_targets, dashboard_variable_queries, load_rules

# Recording-rule levels the dashboard may read (docs: level:metric:operations).
RULE_NAME = re.compile(r"^(env|env_component|host):tta_carbon_[a-z0-9_]+:[a-z0-9_]+$")

# The federating Prometheus pulls exactly these from the site's /federate
# (issue 16: only aggregated rule series and `up` cross sites).
FEDERATE_MATCH = [
    '{__name__=~"(env|env_component|host):tta_carbon_.+"}',
    f'{{__name__="up", job="{JOB}"}}',
]


# ------------------------------------------------------------------ dashboard
def substitute(expr: str, *, env: str = ".*", host: str = ".*", rate_interval: str = "5m", range_: str = "1h") -> str:
    """Grafana's variables replaced so the expression is plain PromQL
    (`env`/`host` by the regex Grafana would send: `.*` for All)."""
    for name, value in (("__rate_interval", rate_interval), ("__interval", "1m"), ("__range", range_),
                        ("env", env), ("host", host)):
        expr = re.sub(r"\$\{" + name + r"\}|\$" + name + r"\b", value, expr)
    assert "$" not in expr, f"unsubstituted variable in {expr!r}"
    return expr


def used_rule_names() -> set[str]:
    """Recording-rule names the dashboard's targets and variables read."""
    names = set()
    exprs = [t["expr"] for _, t in dashboard_targets()] + list(dashboard_variable_queries().values())
    for expr in exprs:
        names |= set(re.findall(r"(?<![\w:])((?:env|env_component|host):[a-zA-Z0-9_:]+)", expr))
    return names


# ------------------------------------------------------------------ rules
def shipped_recorded_names(path: Path = RECORDING_RULES) -> set[str]:
    return {r["record"] for r in load_rules(path) if "record" in r}


def rules_for_test(tmp: Path, interval: str = "1s") -> Path:
    """The shipped recording rules for a test Prometheus, every group's evaluation interval set
    to `interval` (the daily group's slow interval would otherwise delay its first evaluation
    by minutes). Only `interval:` changes; names and expressions are as shipped."""
    doc = yaml.safe_load(RECORDING_RULES.read_text())
    for group in doc["groups"]:
        group["interval"] = interval
    path = tmp / "tta-carbon-recording.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


# ------------------------------------------------------------------ federation
def federating_config(site: str, interval: str = "1s") -> dict:
    """A global Prometheus that federates one site Prometheus (host:port)."""
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [{
            "job_name": "federate-tta-carbon",
            "honor_labels": True,
            "metrics_path": "/federate",
            "scrape_interval": interval,
            "scrape_timeout": interval,
            "params": {"match[]": FEDERATE_MATCH},
            "static_configs": [{"targets": [site]}],
        }],
    }
