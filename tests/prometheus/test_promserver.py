"""The PromServer fixture itself, against a real Prometheus scraping its own
/metrics: readiness, query helpers, rules, alerts, targets, clean shutdown."""
from __future__ import annotations

import os
import time

import pytest
import yaml

from tests.prometheus.promserver import PromError


def test_promserver_helpers_and_shutdown(prom_factory, tmp_path):
    rules = tmp_path / "self.rules.yml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "self", "rules": [
        {"record": "job:up:sum", "expr": "sum by (job) (up)"},
        {"alert": "AlwaysFiring", "expr": 'vector(1)', "labels": {"severity": "info"}},
    ]}]}))
    prom = prom_factory(scrape_configs=[])
    # a second server scrapes the first one's /metrics and evaluates the rules
    watcher = prom_factory(scrape_configs=[{"job_name": "prom", "static_configs": [{"targets": [f"127.0.0.1:{prom.port}"]}]}],
                           rule_files=[rules])
    t0 = time.monotonic()
    up = watcher.wait_for(lambda: watcher.query('up{job="prom"}'), timeout=20, what="first sample")
    first_sample_s = time.monotonic() - t0
    print(f"first scraped sample visible after {first_sample_s:.1f}s")
    assert float(up[0]["value"][1]) == 1
    assert watcher.query_value('up{job="prom"}') == 1
    assert watcher.query_value("scalar(vector(2)) + 1") == 3

    (target,) = watcher.targets()
    assert target["health"] == "up" and target["labels"]["job"] == "prom"

    watcher.wait_for(lambda: watcher.firing("AlwaysFiring"), timeout=10, what="AlwaysFiring")
    assert watcher.wait_for(lambda: watcher.query('job:up:sum{job="prom"}'), timeout=10)
    assert all(r["health"] == "ok" for r in watcher.rules())

    now = time.time()
    series = watcher.query_range('up{job="prom"}', now - 10, now, 1)
    assert series and series[0]["values"]

    with pytest.raises(PromError, match="parse error"):
        watcher.query("sum(")

    pids = [prom.proc.pid, watcher.proc.pid]
    prom.stop()
    watcher.stop()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
