"""The real daemon reading a BMC's chassis power over Redfish (a real HTTPS service, tests/support/fake_redfish.py).

The daemon runs as systemd runs it, the password in its environment file as an operator would
put it (CARBON_REDFISH_PASSWORD), the BMC's CA in redfish_ca_file. The fake BMC's power is a
programmed profile of steps and ramps whose reading is the exact mean over a trailing 0.5 s
window, as an averaging BMC reports; the daemon reads it every 0.5 s.
"""

from __future__ import annotations

import base64
import json
import signal
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import pytest

from tests.fixtures.power_profile import PowerProfile, rfc3339_to_epoch
from tests.support.daemon import DaemonProc
from tests.support.fake_redfish import BmcCertificates, FakeRedfish

PASSWORD = "p@ss:w/rd%"
# Steps and ramps, repeating every 12 s: 180 W idle, a step to 290 W, a ramp down to 220 W, a step to 150 W.
PROFILE = [(0.0, 180.0), (2.0, 180.0), (2.0, 290.0), (5.0, 290.0), (8.0, 220.0), (9.0, 220.0), (9.0, 150.0),
           (12.0, 180.0)]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> BmcCertificates:
    return BmcCertificates.make(tmp_path_factory.mktemp("bmc-certs"))


def _daemon(daemon_factory: Any, bmc: FakeRedfish, certs: BmcCertificates, *, interval: float,
            password: str = PASSWORD, name: str = "d", via: str = "env_file") -> DaemonProc:
    settings = {"energy_source": "cpu_load_tdp", "platform_meter": "redfish", "redfish_url": bmc.url,
                "redfish_user": "admin", "redfish_ca_file": str(certs.ca), "platform_sample_s": "0.5", "gpu": "off"}
    if via == "--set":
        settings["redfish_password"] = password
    d = daemon_factory(name, interval=interval, settings=settings)
    d.workdir.mkdir(parents=True, exist_ok=True)
    if via == "env_file":  # the operator's way (docs/platform-power.md): never on a command line
        (d.workdir / "environment").write_text(f"CARBON_REDFISH_PASSWORD='{password}'\n")
    return d


def _programmed(profile: PowerProfile, records: list[dict]) -> float:
    return sum(profile.energy_j(rfc3339_to_epoch(r["interval_start"]), rfc3339_to_epoch(r["interval_end"]))
               for r in records)


def _get(d: DaemonProc, path: str) -> str:
    try:
        with urllib.request.urlopen(d.url(path), timeout=5) as r:
            return r.read().decode()
    except urllib.error.HTTPError as exc:  # /healthz answers 503 with its JSON when unhealthy
        return exc.read().decode()


def _wait_health(d: DaemonProc, predicate: Any, what: str, timeout: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        health = json.loads(_get(d, "/healthz"))
        if predicate(health):
            return health
        assert time.monotonic() < deadline, f"no {what}: {health}; {d.stderr()}"
        time.sleep(0.05)


def test_daemon_records_the_bmcs_energy_within_one_percent_across_kill9(daemon_factory, certs):
    profile = PowerProfile(PROFILE, period_s=12.0)
    with FakeRedfish(certs, profile, password=PASSWORD, layout="power", average_s=0.5) as bmc:
        d = _daemon(daemon_factory, bmc, certs, interval=2.0, name="a").start()
        d.wait_for_records(10)  # ~20 s
        d.proc.send_signal(signal.SIGKILL)
        assert d.stop() == -signal.SIGKILL
        time.sleep(1.0)
        d = _daemon(daemon_factory, bmc, certs, interval=2.0, name="a").start()
        d.wait_for_records(len(d.records()) + 5)  # ~10 s more
        health = json.loads(_get(d, "/healthz"))
        page = _get(d, "/metrics")
        assert d.stop() == 0
        reads = bmc.count("/redfish/v1/Chassis/1/Power")
        discoveries = bmc.count("/redfish/v1/Chassis")
    records = d.records()
    assert len({r["run_id"] for r in records}) == 2
    assert all(r["energy_method"].get("platform") == "redfish" for r in records), [r["energy_method"] for r in records]
    for r in records:
        assert r["energy_j"]["total"] >= r["energy_j"]["platform"] - 1e-9
    got, want = sum(r["energy_j"]["platform"] for r in records), _programmed(profile, records)
    error = got / want - 1
    assert abs(error) < 0.01, (got, want)
    full = [r for r in records if r["duration_s"] > 1.5 and not r["final"]]
    worst = max(abs(r["energy_j"]["platform"] / _programmed(profile, [r]) - 1) for r in full)
    assert worst < 0.08  # per record: a step near a boundary moves up to one 0.5 s window between records
    assert records[-1]["totals"]["platform_j"] == pytest.approx(got, rel=1e-9)
    assert health["platform_meter"] == "redfish" and health["platform_meter_error"] == ""
    assert health["platform_meter_device"] == f"127.0.0.1:{bmc.port}"
    assert 'tta_carbon_platform_energy_joules_total{meter="redfish"}' in page
    assert discoveries == 2  # once per run: every other request was the Power resource
    seconds = sum(r["duration_s"] for r in records)
    print(f"\nredfish (Power, 0.5 s BMC average, read every 0.5 s): {got:.3f} J recorded vs {want:.3f} J programmed "
          f"({error * 100:+.4f} %) over {len(records)} records, 2 runs, {seconds:.1f} s; worst record "
          f"{worst * 100:.2f} %; {reads} reads")


def test_bmc_failures_cost_the_platform_figure_only_say_why_and_recover(daemon_factory, certs):
    """Unreachable mid-run, then malformed JSON: the daemon keeps measuring, records carry no platform figure for
    the gap and say why, one warning line when each failure starts and one when it ends, /healthz shows it."""
    profile = PowerProfile([(0.0, 200.0)])
    with FakeRedfish(certs, profile, password=PASSWORD, layout="environment") as bmc:
        d = _daemon(daemon_factory, bmc, certs, interval=1.0).start()
        d.wait_for_record(lambda r: r["energy_method"].get("platform") == "redfish", "a platform figure")
        figures = []
        for name, says, fail, mend in (
                ("BMC unreachable", "cannot connect: connection refused", bmc.stop, bmc.start),
                ("malformed JSON", "answer is not JSON", lambda: setattr(bmc, "fault", "malformed_json"),
                 lambda: setattr(bmc, "fault", None))):
            last_seq = d.records()[-1]["seq"]
            broke = time.monotonic()
            fail()
            health = _wait_health(d, lambda h: says in h["platform_meter_error"], f"{name} in /healthz")
            detected = time.monotonic() - broke
            assert health["platform_meter_error"].startswith(f"redfish {bmc.url}: "), health
            gap = d.wait_for_record(lambda r: r["seq"] > last_seq and "platform" not in r["energy_j"],
                                    f"a record without platform ({name})")
            assert says in gap["energy_assumptions"]["platform"], gap
            mended = time.monotonic()
            mend()
            _wait_health(d, lambda h: h["platform_meter_error"] == "", f"recovery from {name}")
            recovered = time.monotonic() - mended
            d.wait_for_record(lambda r: r["seq"] > gap["seq"] + 2 and r["energy_method"].get("platform") == "redfish",
                              f"platform figures again after {name}")
            figures.append(f"{name}: in /healthz after {detected:.2f} s, cleared {recovered:.2f} s after the fix")
        assert d.stop() == 0
    records = d.records()
    assert all(r["energy_j"]["cpu"] > 0 for r in records)  # the components never stopped
    for r in records:  # every record either has the platform figure or says why not
        assert ("platform" in r["energy_j"]) != ("platform" in r.get("energy_assumptions", {})), r
    log = d.log_file.read_text()
    lines = log.splitlines()
    for says in ("cannot connect: connection refused", "answer is not JSON"):
        starts = [line for line in lines if says in line and "readings good again" not in line]
        assert len(starts) == 1, starts  # one line when the failure starts, not one per read
    assert sum("readings good again" in line for line in lines) == 2, log
    print("\nredfish failures at daemon level: " + "; ".join(figures))


@pytest.mark.parametrize("via", ["env_file", "--set"])
def test_a_wrong_password_is_reported_and_never_shown(daemon_factory, certs, via):
    profile = PowerProfile([(0.0, 200.0)])
    with FakeRedfish(certs, profile, password="the BMC's own") as bmc:
        d = _daemon(daemon_factory, bmc, certs, interval=1.0, password=PASSWORD, via=via).start()
        d.wait_for_records(3)
        health_text = _get(d, "/healthz")
        page = _get(d, "/metrics")
        assert d.stop() == 0
    health = json.loads(health_text)
    assert "HTTP 401" in health["platform_meter_error"], health
    records = d.records()
    assert all("platform" not in r["energy_j"] and "HTTP 401" in r["energy_assumptions"]["platform"]
               for r in records), records
    log = d.log_file.read_text()
    assert sum("HTTP 401" in line for line in log.splitlines()) == 1, log
    texts = {"stderr": d.stderr_path.read_text(errors="replace"), "log file": log, "/healthz": health_text,
             "/metrics": page, "records": "\n".join(p.read_text() for p in d.output_dir.glob("emissions_*.json"))}
    forms = [PASSWORD, repr(PASSWORD), urllib.parse.quote(PASSWORD, safe=""), urllib.parse.quote_plus(PASSWORD),
             json.dumps(PASSWORD)[1:-1], base64.b64encode(f"admin:{PASSWORD}".encode()).decode(), "p@ss"]
    for where, text in texts.items():
        for form in forms:
            assert form not in text, (where, form)
