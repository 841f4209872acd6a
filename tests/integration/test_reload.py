"""SIGHUP: live reload, rejected config, and storms, against the real daemon."""

from __future__ import annotations

import json
import os
import signal
import time


def log_events(d) -> list[dict]:
    return [json.loads(x) for x in d.log_file.read_text().splitlines() if x.startswith("{")]


def wait_event(d, name: str, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [e for e in log_events(d) if e.get("event") == name]
        if found:
            return found[-1]
        time.sleep(0.1)
    raise AssertionError(f"no {name} event in {d.log_file}: {d.log_file.read_text()[-2000:]}")


def test_reload_applies_live_settings_and_rejects_bad_config(daemon_factory):
    d = daemon_factory()
    d.settings = {}
    d.start()
    config = d.workdir / "config.yaml"
    config.write_text("log_level: debug\nintensity_g_per_kwh: 123.5\nproject_name: Reloaded\n")
    d.send(signal.SIGHUP)
    event = wait_event(d, "reloaded")
    assert event["log_level"] == "debug" and event["intensity_g_per_kwh"] == 123.5
    wait_event(d, "measured")  # debug events now appear: the level really changed
    recs = d.wait_for_records(len(d.records()) + 1)
    assert recs[-1]["carbon_intensity_g_per_kwh"] == 123.5 and recs[-1]["project"] == "Reloaded"

    config.write_text("measurement_interval: [oops\n")
    d.send(signal.SIGHUP)
    rejected = wait_event(d, "reload_rejected")
    assert "YAML syntax error" in rejected["error"] and "\n" not in rejected["error"]
    n = len(d.records())
    d.wait_for_records(n + 2)  # still measuring on the old config
    assert d.proc.poll() is None


def test_sighup_storm_keeps_cadence_and_loses_nothing(daemon_factory):
    d = daemon_factory().start()
    d.wait_for_records(1)
    for _ in range(300):
        os.kill(d.proc.pid, signal.SIGHUP)
    time.sleep(3)
    assert d.proc.poll() is None
    assert d.stop() == 0
    recs = d.records()
    assert [r["seq"] for r in recs] == list(range(1, len(recs) + 1))
    assert recs[-1]["final"] is True
    durations = [r["duration_s"] for r in recs[:-1]]
    assert max(durations) < 1.5, durations  # no interval swallowed by the storm
