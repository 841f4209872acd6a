"""The real daemon and the intensity chain: online Electricity Maps (a loopback fake), its
fallback to the last known value, SIGHUP rebuilding the chain, and the token never leaking."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.daemon import clean_env
from tests.support.fake_electricitymaps import FakeElectricityMaps

TOKEN = "tok-daemon-SECRET-5be1c0de"


def scrape(url: str) -> tuple[str, dict[tuple[str, tuple], float]]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return text, samples


def wait_record(d, predicate, timeout: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [r for r in (d.records() if d.output_dir.exists() else []) if predicate(r)]
        if found:
            return found[-1]
        time.sleep(0.1)
    tail = [(r["seq"], r["intensity_source"]) for r in d.records()[-5:]]
    raise AssertionError(f"no matching record in {timeout}s; last: {tail}; stderr: {d.stderr()}")


def healthz(d) -> dict:
    with urllib.request.urlopen(d.url("/healthz"), timeout=5) as resp:  # 200 or not, the body is the snapshot
        return json.loads(resp.read())


def intensity_samples(samples: dict) -> dict[str, float]:
    return {dict(labels)["source"]: v for (name, labels), v in samples.items()
            if name == "tta_carbon_intensity_grams_per_kwh"}


def test_online_then_server_dies_then_cached_and_token_never_written(daemon_factory):
    fake = FakeElectricityMaps(value=123.5)
    try:
        d = daemon_factory(settings={
            "offline": "false", "electricitymaps_url": fake.base_url, "log_level": "debug",
            "electricitymaps_refresh_interval": "1", "electricitymaps_timeout": "0.5",
        }, env={"CARBON_ELECTRICITYMAPS_TOKEN": TOKEN}).start()
        pages = []

        rec = wait_record(d, lambda r: r["intensity_source"] == "electricitymaps")
        assert rec["carbon_intensity_g_per_kwh"] == 123.5 and rec["intensity_location"] == "FR"
        assert rec["emissions_g"]["total"] == pytest.approx(rec["energy_j"]["total"] / 3.6e6 * 123.5, rel=1e-9)
        assert fake.requests[0]["path"].endswith("?zone=FR") and fake.requests[0]["headers"]["auth-token"] == TOKEN
        # The record reaches the file a moment before the page is rendered from it: poll briefly.
        deadline = time.monotonic() + 3
        text, samples = scrape(d.url())
        while intensity_samples(samples) != {"electricitymaps": 123.5} and time.monotonic() < deadline:
            time.sleep(0.1)
            text, samples = scrape(d.url())
        pages.append(text)
        assert intensity_samples(samples) == {"electricitymaps": 123.5}
        assert healthz(d)["intensity_error"] == ""

        fake.stop()  # the API goes away: connections are refused from now on
        rec = wait_record(d, lambda r: r["intensity_source"] == "electricitymaps_cached")
        assert rec["carbon_intensity_g_per_kwh"] == 123.5  # the last known value, not the country mix
        deadline = time.monotonic() + 5
        while intensity_samples(samples) != {"electricitymaps_cached": 123.5} and time.monotonic() < deadline:
            text, samples = scrape(d.url())
            time.sleep(0.1)
        pages.append(text)
        assert intensity_samples(samples) == {"electricitymaps_cached": 123.5}
        health = healthz(d)
        assert health["intensity_error"].startswith("cannot connect"), health
        argv = d.argv()
        argv[argv.index("run")] = "check"  # the same config, file and --set overrides as the daemon
        check = subprocess.run(argv, capture_output=True, text=True, env=clean_env(CARBON_ELECTRICITYMAPS_TOKEN=TOKEN),
                               timeout=30)
        warning = [ln for ln in check.stdout.splitlines() if "Carbon intensity" in ln]
        assert warning == ["⚠️  Carbon intensity: online source failing (cannot connect: Connection refused); "
                           "using electricitymaps_cached"], check.stdout + check.stderr
        outputs_check = check.stdout + check.stderr
        assert d.stop() == 0
        final = d.records()[-1]
        assert final["final"] and final["intensity_source"] == "electricitymaps_cached"
        assert {r["intensity_source"] for r in d.records() if r["seq"] >= rec["seq"]} == {"electricitymaps_cached"}

        log = d.log_file.read_text()
        assert "electricitymaps FR failed: cannot connect" in log  # the fallback is logged...
        outputs = {"log file": log, "stderr": d.stderr_path.read_text(), "metrics": "".join(pages),
                   "check": outputs_check, "healthz": json.dumps(health)}
        for path in [*d.output_dir.iterdir(), *d.state_dir.iterdir()]:
            if path.is_file():
                outputs[str(path)] = path.read_text(errors="replace")
        assert len(outputs) >= 4
        for where, text in outputs.items():
            assert TOKEN not in text, f"token leaked into {where}"
            assert TOKEN[4:20] not in text, f"part of the token leaked into {where}"
    finally:
        fake.stop()


def test_offline_default_makes_no_request_and_sighup_rebuilds_the_chain(daemon_factory):
    fake = FakeElectricityMaps(value=77.0)
    try:
        d = daemon_factory(settings={"electricitymaps_url": fake.base_url, "electricitymaps_refresh_interval": "1"},
                           env={"CARBON_ELECTRICITYMAPS_TOKEN": TOKEN})
        d.start()  # offline not set: the default (true)
        recs = d.wait_for_records(2)
        assert {r["intensity_source"] for r in recs} == {"country_mix"}
        assert fake.count == 0  # offline: not a single connection, token or not

        (d.workdir / "config.yaml").write_text("offline: false\n")
        d.send(signal.SIGHUP)
        rec = wait_record(d, lambda r: r["intensity_source"] == "electricitymaps")
        assert rec["carbon_intensity_g_per_kwh"] == 77.0 and fake.count >= 1

        (d.workdir / "config.yaml").write_text("offline: false\nintensity_g_per_kwh: 321\n")
        d.send(signal.SIGHUP)
        rec = wait_record(d, lambda r: r["intensity_source"] == "fixed")
        assert rec["carbon_intensity_g_per_kwh"] == 321
        time.sleep(0.3)
        settled = fake.count
        time.sleep(2.2)  # refresh interval is 1 s: the replaced online provider must have stopped
        assert fake.count == settled
        assert d.stop() == 0
    finally:
        fake.stop()
