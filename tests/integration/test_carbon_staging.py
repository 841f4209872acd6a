"""The deployment guide's integration test: `uv run pytest tests/integration/test_carbon_staging.py -v`.

Without configuration it starts a local daemon (1 s interval) in a temporary
directory. On a staging host, set TTA_STAGING_CHECK=1 to test the installed
service instead: it reads the real config (/etc/tta/staging, env overrides),
scrapes its /metrics and reads its records, and changes nothing.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from src.components.carbon_component import CarbonComponent
from src.orchestration import TTAConfig

STAGING = os.environ.get("TTA_STAGING_CHECK") == "1"


class Target:
    def __init__(self, metrics_url: str, output_dir: Path) -> None:
        self.metrics_url = metrics_url
        self.output_dir = output_dir

    def records(self) -> list[dict]:
        out = []
        for path in sorted(self.output_dir.glob("emissions_*.json")):
            out += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return out

    def metrics(self) -> dict[tuple, float]:
        with urllib.request.urlopen(self.metrics_url, timeout=5) as resp:
            text = resp.read().decode()
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text)
            for s in fam.samples
        }


@pytest.fixture
def target(daemon_factory):
    if STAGING:
        cfg = TTAConfig()
        yield Target(f"http://{cfg.metrics_address}:{cfg.metrics_port}/metrics", cfg.output_dir), None
        return
    d = daemon_factory("staging-local").start()
    yield Target(d.url(), d.output_dir), d


def test_component_loads_from_config():
    config = TTAConfig() if STAGING else TTAConfig(config_file="/dev/null", env_file="/dev/null")
    carbon = CarbonComponent(config)
    assert carbon.output_dir == Path(config.output_dir)


def test_records_are_written(target):
    t, local = target
    deadline = time.monotonic() + (30 if local else 3 * TTAConfig().measurement_interval + 5)
    while time.monotonic() < deadline and len(t.records()) < 3:
        time.sleep(0.2)
    records = t.records()
    assert len(records) >= 3, f"fewer than 3 records in {t.output_dir}"
    for r in records[-3:]:
        for key in ("timestamp", "seq", "run_id", "energy_j", "emissions_g", "carbon_intensity_g_per_kwh",
                    "energy_method", "totals"):
            assert key in r
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    assert (t.output_dir / f"emissions_{today}.json").exists()


def test_metrics_agree_with_records(target):
    t, _ = target
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not t.records():
        time.sleep(0.2)
    # A record reaches the file a moment before the page is rendered from it (the ledger's fsync
    # is between): poll until the page names a record that is on disk.
    while True:
        m = t.metrics()
        seq = int(m[("tta_carbon_last_record_sequence", ())])
        rec = next((r for r in reversed(t.records()) if r["seq"] == seq), None)
        if rec is not None or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert rec is not None, f"the page's last_record_sequence {seq} is in no record"
    for c in ("cpu", "ram", "gpu"):
        assert m[("tta_carbon_energy_joules_total", (("component", c),))] == rec["totals"]["energy_j"][c]
        assert m[("tta_carbon_emissions_grams_total", (("component", c),))] == rec["totals"]["emissions_g"][c]
    assert m[("tta_carbon_tracker_available", ())] == 1


@pytest.mark.skipif(STAGING, reason="never signals the staging service")
def test_sigterm_writes_final_record(target):
    t, d = target
    d.wait_for_records(1)
    assert d.stop(signal.SIGTERM) == 0
    records = t.records()
    assert records[-1]["final"] is True
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
