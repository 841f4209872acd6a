"""deploy/alertmanager/alertmanager.yml with the real amtool: syntax, and that
each severity of our alerts lands on its receiver."""
from __future__ import annotations

import pytest
import yaml

from tests.prometheus.promlib import ALERTMANAGER, alert_rules, run


def test_check_config(amtool):
    r = run([amtool, "check-config", str(ALERTMANAGER)])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout
    assert "4 receivers" in r.stdout and "1 inhibit rules" in r.stdout


def test_broken_config_is_rejected(amtool, tmp_path):
    cfg = yaml.safe_load(ALERTMANAGER.read_text())
    cfg["route"]["routes"][0]["routes"][0]["receiver"] = "no-such-receiver"
    bad = tmp_path / "am.yml"
    bad.write_text(yaml.safe_dump(cfg))
    r = run([amtool, "check-config", str(bad)])
    assert r.returncode == 1, r.stdout + r.stderr
    assert "no-such-receiver" in r.stdout + r.stderr


def route(amtool, *labels: str) -> str:
    r = run([amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER}", *labels])
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout.strip()


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_each_alert_routes_by_severity(amtool, rule):
    labels = {"alertname": rule["alert"], "instance": "127.0.0.1:9880", "env": "staging", **rule["labels"]}
    got = route(amtool, *(f"{k}={v}" for k, v in labels.items()))
    assert got == f"carbon-{rule['labels']['severity']}"


def test_other_alerts_go_to_default(amtool):
    assert route(amtool, "alertname=NodeDown", "severity=critical") == "default"
    assert route(amtool, "alertname=Whatever", "component=carbon", "severity=debug") == "carbon-warning"


def test_grouping_and_inhibition_key_on_host():
    """Under topology B every instance is 127.0.0.1:9880: keying on instance
    merged hosts and let one host down mute the others
    (tests/prometheus/test_alerts_topology_b.py runs it for real)."""
    cfg = yaml.safe_load(ALERTMANAGER.read_text())
    assert cfg["route"]["group_by"] == ["alertname", "env", "host"]
    (rule,) = cfg["inhibit_rules"]
    assert rule["equal"] == ["env", "host"]
    assert "instance" not in yaml.safe_dump(cfg["route"]) + yaml.safe_dump(cfg["inhibit_rules"])
