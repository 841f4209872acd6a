"""The real daemon as a subprocess: records, /metrics, signals, restarts."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from datetime import datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.daemon import TTA_CARBON, REPO, clean_env

COMPONENTS = ("cpu", "ram", "gpu")


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = resp.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def test_records_metrics_and_sigterm(daemon_factory):
    d = daemon_factory().start()
    status = d.wait_for_notification("STATUS=power", timeout=10)
    assert "gCO2eq" in status and "errors: 0 measure / 0 write" in status
    records = d.wait_for_records(3)

    # Records: contiguous sequence, one run id, self-consistent figures.
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    assert len({r["run_id"] for r in records}) == 1
    for r in records:
        assert r["interval_end"] == r["timestamp"] and r["timestamp"].endswith("Z")
        assert 0.5 < r["duration_s"] < 2.0
        # codecarbon's tracker (the default), or our estimate of its model until the tracker runs.
        assert r["energy_method"]["cpu"] in ("codecarbon_cpu_load", "cpu_load_tdp") and r["estimated"] is True
        assert r["intensity_source"] == "country_mix" and r["intensity_location"] == "FRA"
        for c in ("cpu", "ram"):
            assert r["power_w"][c] == pytest.approx(r["energy_j"][c] / r["duration_s"], rel=1e-9)
            assert r["emissions_g"][c] == pytest.approx(
                r["energy_j"][c] / 3.6e6 * r["carbon_intensity_g_per_kwh"], rel=1e-9
            )
        assert r["energy_j"]["cpu"] > 0 and r["energy_j"]["ram"] > 0
    running = {c: 0.0 for c in COMPONENTS}
    for r in records:
        for c in COMPONENTS:
            running[c] += r["energy_j"][c]
            assert r["totals"]["energy_j"][c] == pytest.approx(running[c], rel=1e-12)

    # /metrics parses and agrees exactly with the record it was rendered from.
    m = scrape(d.url())
    seq = int(m[("tta_carbon_last_record_sequence", ())])
    rec = next(r for r in d.records() if r["seq"] == seq)
    for c in COMPONENTS:
        assert m[("tta_carbon_energy_joules_total", (("component", c),))] == rec["totals"]["energy_j"][c]
        assert m[("tta_carbon_emissions_grams_total", (("component", c),))] == rec["totals"]["emissions_g"][c]
        assert m[("tta_carbon_power_watts", (("component", c),))] == rec["power_w"][c]
    assert m[("tta_carbon_tracker_available", ())] == 1
    assert m[("tta_carbon_energy_estimated", ())] == 1
    assert m[("tta_carbon_write_errors_total", ())] == 0
    assert m[("tta_carbon_intensity_grams_per_kwh", (("source", "country_mix"),))] == rec["carbon_intensity_g_per_kwh"]
    assert m[("tta_carbon_output_bytes", ())] > 0

    # SIGTERM: final record covering the tail, exit 0.
    before = len(d.records())
    assert d.stop(signal.SIGTERM) == 0
    after = d.records()
    assert len(after) == before + 1
    final = after[-1]
    assert final["final"] is True and final["seq"] == before + 1
    assert 0 < final["duration_s"] < 1.5
    assert any("STOPPING=1" in n for n in d.notifications)


def test_sigint_also_writes_final_record_and_restart_continues_totals(daemon_factory):
    d = daemon_factory("a").start()
    first = d.wait_for_records(2)
    assert d.stop(signal.SIGINT) == 0
    last = d.records()[-1]
    assert last["final"] is True

    d2 = daemon_factory("a").start()  # same dirs: the state file carries the totals on
    recs = d2.wait_for_records(len(first) + 2)
    resumed = next(r for r in recs if r["run_id"] != last["run_id"])
    assert resumed["seq"] == last["seq"] + 1
    for c in COMPONENTS:
        assert resumed["totals"]["energy_j"][c] == pytest.approx(
            last["totals"]["energy_j"][c] + resumed["energy_j"][c], rel=1e-12)
    assert d2.stop() == 0


def _epoch(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339).timestamp()


def _started_notes(d) -> list[str]:
    """The ledger note of every "started" line in the daemon's log file (appended across runs)."""
    events = [json.loads(line) for line in d.log_file.read_text().splitlines() if line.startswith("{")]
    return [e["ledger"] for e in events if e.get("event") == "started"]


def _unmeasured(d) -> tuple[float, float]:
    """(/metrics counter, /healthz field)."""
    with urllib.request.urlopen(d.url("/healthz"), timeout=5) as resp:
        health = json.loads(resp.read())
    return scrape(d.url())[("tta_carbon_unmeasured_seconds_total", ())], health["unmeasured_s"]


def _first_record_of(d, run_records: int) -> tuple[dict, dict]:
    """(the previous run's last record, this run's first) once this run has written ``run_records``."""
    recs = d.wait_for_records(run_records)
    run_id = recs[-1]["run_id"]
    first = next(r for r in recs if r["run_id"] == run_id)
    return recs[recs.index(first) - 1], first


def test_killed_daemon_leaves_a_counted_gap_that_persists(daemon_factory):
    """Issue 13: a SIGKILL (watchdog, OOM, power loss) leaves time no record covers; it is counted, not lost."""
    lean = {"energy_source": "cpu_load_tdp", "attribution_enabled": "false"}  # fast start: the gap is the kill
    d1 = daemon_factory("k", settings=lean).start()
    d1.wait_for_records(2)
    assert _unmeasured(d1) == (0.0, 0.0)  # a fresh ledger has no gap
    d1.proc.kill()  # SIGKILL: no final record
    d1.stop()
    killed_last = d1.records()[-1]
    assert killed_last["final"] is False and killed_last["totals"]["unmeasured_s"] == 0.0
    time.sleep(3)

    d2 = daemon_factory("k", settings=lean).start()
    before, first = _first_record_of(d2, len(d1.records()) + 1)
    assert before == killed_last
    gap = _epoch(first["interval_start"]) - _epoch(killed_last["interval_end"])
    # dead 3 s, plus up to one interval since its last record, plus this start-up
    assert 3.0 <= gap < 3.0 + d2.interval + 5.0, gap
    assert first["totals"]["unmeasured_s"] == pytest.approx(gap, abs=0.01)
    metric, healthz = _unmeasured(d2)
    assert metric == healthz == d2.records()[-1]["totals"]["unmeasured_s"] == first["totals"]["unmeasured_s"]
    note = _started_notes(d2)[-1]
    assert f"unmeasured since the last record ({killed_last['interval_end']})" in note
    assert "the previous run ended without a final record (killed" in note

    # A clean restart: its own few seconds are counted too, and the total carries on (state file).
    assert d2.stop() == 0
    final = d2.records()[-1]
    assert final["final"] is True and final["totals"]["unmeasured_s"] == first["totals"]["unmeasured_s"]
    assert json.loads((d2.state_dir / "carbon_state.json").read_text())["totals"]["unmeasured_s"] == \
        final["totals"]["unmeasured_s"]
    d3 = daemon_factory("k", settings=lean).start()
    before, first3 = _first_record_of(d3, len(d2.records()) + 1)
    assert before == final
    restart_gap = _epoch(first3["interval_start"]) - _epoch(final["interval_end"])
    assert 0.0 <= restart_gap < 5.0, restart_gap
    assert first3["totals"]["unmeasured_s"] == pytest.approx(final["totals"]["unmeasured_s"] + restart_gap, abs=0.01)
    assert _unmeasured(d3)[0] >= first["totals"]["unmeasured_s"]  # never goes back
    note3 = _started_notes(d3)[-1]
    assert "ended without a final record" not in note3  # a clean stop is not reported as a kill
    assert d3.stop() == 0


def test_port_in_use_exits_69_with_one_line(daemon_factory):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    d = daemon_factory()
    d.port = holder.getsockname()[1]
    d.start(wait_ready=False)
    assert d.proc.wait(30) == 69
    lines = [ln for ln in d.stderr().splitlines() if ln.startswith("tta-carbon:")]
    assert lines == [f"tta-carbon: error: cannot listen on 127.0.0.1:{d.port}: Address already in use "
                     "(set CARBON_METRICS_PORT or metrics_port)"]
    holder.close()


def test_http_paths_and_methods(daemon_factory):
    d = daemon_factory().start()
    with pytest.raises(urllib.error.HTTPError) as e404:
        urllib.request.urlopen(d.url("/nope"), timeout=5)
    assert e404.value.code == 404
    req = urllib.request.Request(d.url(), method="POST", data=b"x")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)
    assert e.value.code in (400, 405)
    req = urllib.request.Request(d.url(), method="DELETE")
    with pytest.raises(urllib.error.HTTPError) as e405:
        urllib.request.urlopen(req, timeout=5)
    assert e405.value.code == 405 and e405.value.headers["Allow"] == "GET, HEAD"
    head = urllib.request.urlopen(urllib.request.Request(d.url(), method="HEAD"), timeout=5)
    assert head.status == 200 and head.read() == b"" and int(head.headers["Content-Length"]) > 1000
    health = json.loads(urllib.request.urlopen(d.url("/healthz"), timeout=5).read())
    assert health["tracker_available"] is True and health["energy_source"] == "codecarbon"
    assert health["energy_source_degraded"] == ""


def test_bad_config_exits_78_before_creating_anything(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [*TTA_CARBON, "run", "--config", "/dev/null", "--env-file", "/dev/null",
         "--set", f"output_dir={out}", "--set", f"state_dir={tmp_path / 'state'}",
         "--set", f"log_file={tmp_path / 'carbon.log'}"],
        cwd=REPO, env=clean_env(CARBON_MEASUREMENT_INTERVAL="0"), capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 78
    assert proc.stderr.strip().splitlines() == [
        "tta-carbon: config error: invalid measurement_interval='0' (environment variable "
        "CARBON_MEASUREMENT_INTERVAL): Input should be greater than or equal to 1 (allowed: 1 to 3600 seconds)"
    ]
    assert list(tmp_path.iterdir()) == []


def test_codecarbon_tracker_source(daemon_factory):
    """energy_source=codecarbon runs codecarbon's own EmissionsTracker through our output handler."""
    d = daemon_factory(settings={"energy_source": "codecarbon"}).start()
    records = d.wait_for_records(2)
    assert all(r["energy_method"] == {"cpu": "codecarbon_cpu_load", "ram": "codecarbon_ram_model"} for r in records)
    assert all(r["energy_j"]["ram"] > 0 for r in records)
    health = json.loads(urllib.request.urlopen(d.url("/healthz"), timeout=5).read())
    assert health["energy_source"] == "codecarbon" and health["tracker_available"] is True
    assert d.stop() == 0 and d.records()[-1]["final"] is True


def test_codecarbon_broken_keeps_serving_and_says_so(daemon_factory, tmp_path):
    """A codecarbon that fails to import (faked at the package boundary) costs measurements, not the daemon."""
    shim = tmp_path / "shim" / "codecarbon"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('simulated broken codecarbon install')\n")
    d = daemon_factory(settings={"energy_source": "codecarbon", "intensity_g_per_kwh": "300"},
                       env={"PYTHONPATH": str(shim.parent)})
    d.start()
    with pytest.raises(urllib.error.HTTPError) as unhealthy:
        urllib.request.urlopen(d.url("/healthz"), timeout=5)
    assert unhealthy.value.code == 503
    health = json.loads(unhealthy.value.read())
    assert health["tracker_available"] is False
    assert health["tracker_error"] == (
        "codecarbon cannot be imported: ImportError: simulated broken codecarbon install")
    m = scrape(d.url())
    assert m[("tta_carbon_tracker_available", ())] == 0
    errors = [ln for ln in d.log_file.read_text().splitlines() if "energy_source_unavailable" in ln]
    assert len(errors) == 1
    assert d.stop() == 0


def test_watchdog_pings_once_per_half_watchdogsec_not_every_sample(daemon_factory):
    """The lean estimate wakes the loop every second to sample /proc/stat; systemd needs a ping
    only every WatchdogSec/2 (here 2 s of 4 s). Before: one WATCHDOG=1 per wake-up (~6 in 6 s)."""
    d = daemon_factory(interval=15.0, settings={"energy_source": "cpu_load_tdp"},
                       env={"WATCHDOG_USEC": "4000000"})
    d.start()
    d.drain_notifications(0.5)
    time.sleep(6.0)
    pings = [m for m in d.drain_notifications(0.2) if "WATCHDOG=1" in m]
    assert 2 <= len(pings) <= 4, pings
