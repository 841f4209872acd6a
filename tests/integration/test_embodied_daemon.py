"""Embodied carbon on the real daemon: exact per record, live on SIGHUP, continuous across kill -9."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import urllib.request

import pytest


def _formula(kg: float, years: float, duration_s: float) -> float:
    return kg * 1000 * duration_s / (years * 365.25 * 86400)


def test_records_carry_the_exact_share_and_the_counter_follows_reload_and_restart(daemon_factory):
    settings = {"energy_source": "cpu_load_tdp", "gpu": "off", "platform_meter": "off"}
    d = daemon_factory("a", interval=1.0, settings=settings)
    d.workdir.mkdir(parents=True, exist_ok=True)
    config = d.workdir / "config.yaml"
    config.write_text("embodied_kgco2e: 1200\nembodied_lifetime_years: 4\n")
    d.start()
    d.wait_for_records(3)
    config.write_text("embodied_kgco2e: 2400\nembodied_lifetime_years: 4\n")  # a live setting: no restart
    d.send(signal.SIGHUP)
    d.wait_for_record(lambda r: r.get("embodied_g", 0) > _formula(1800, 4, r["duration_s"]), "a doubled share")
    d.proc.send_signal(signal.SIGKILL)
    assert d.stop() == -signal.SIGKILL
    d = daemon_factory("a", interval=1.0, settings=settings).start()
    n = len(d.records())
    d.wait_for_records(n + 3)
    with urllib.request.urlopen(d.url("/metrics"), timeout=5) as r:
        page = r.read().decode()
    last_seq = int(next(line for line in page.splitlines() if line.startswith("tta_carbon_last_record_sequence "))
                   .split()[1].split(".")[0])
    counter = float(next(line for line in page.splitlines() if line.startswith("tta_carbon_embodied_grams_total "))
                    .split()[1])
    assert d.stop() == 0
    records = d.records()
    assert len({r["run_id"] for r in records}) == 2
    kgs = set()
    for r in records:
        kg = 1200 if r["embodied_g"] == _formula(1200, 4, r["duration_s"]) else 2400
        assert r["embodied_g"] == _formula(kg, 4, r["duration_s"]), r  # bit for bit, whichever setting applied
        assert r["emissions_g"]["total"] == sum(v for k, v in r["emissions_g"].items() if k != "total")
        kgs.add(kg)
    assert kgs == {1200, 2400}
    assert records[-1]["totals"]["embodied_g"] == pytest.approx(sum(r["embodied_g"] for r in records), rel=1e-12)
    at_scrape = next(r for r in records if r["seq"] == last_seq)
    assert counter == pytest.approx(at_scrape["totals"]["embodied_g"], rel=1e-12)
    # The daemon's own records through report --json and --html: embodied apart, the same figure in both.
    from tests.support.daemon import REPO, TTA_CARBON, clean_env

    page = d.workdir / "report.html"
    for args in (["--json"], ["--html", str(page)]):
        out = subprocess.run([*TTA_CARBON, "report", "--dir", str(d.output_dir), *args], cwd=REPO, env=clean_env(),
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        if args == ["--json"]:
            overall = json.loads(out.stdout)["overall"]
    assert overall["embodied_g"] == pytest.approx(sum(r["embodied_g"] for r in records), rel=1e-12)
    assert overall["emissions_g"]["total"] == pytest.approx(sum(r["emissions_g"]["total"] for r in records), rel=1e-12)
    shown = dict(re.findall(r'data-name="([a-z_]+)" data-total="([^"]+)"', page.read_text()))
    assert float(shown["embodied_g"]) == overall["embodied_g"]
