"""The daemon with an IPMI DCMI platform meter: real ipmitool, the pyghmi-based fake BMC, real UDP.

The fake BMC's power follows a programmed profile of steps and ramps in wall-clock time, so the
exact energy over each record's own [interval_start, interval_end] is known; the records'
``energy_j.platform`` must add up to it. Then the bad cases at daemon level: a BMC that goes
silent mid-run and one that refuses the password.
"""

from __future__ import annotations

import json
import shutil
import signal
import time
import urllib.error
import urllib.request
from datetime import datetime
from typing import Any

import pytest

from tests.support.fake_bmc import FakeBmc, PowerProfile

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("ipmitool") is None, reason="ipmitool not installed")]

PASSWORD = "Ipmi-Pa55:word"
SAMPLE_S = 0.5


def settings(bmc: FakeBmc, **extra: str) -> dict[str, str]:
    return {"energy_source": "cpu_load_tdp", "platform_meter": "ipmi_dcmi", "ipmi_host": bmc.host,
            "ipmi_port": str(bmc.port), "ipmi_user": bmc.user, "ipmi_password": PASSWORD,
            "platform_sample_s": str(SAMPLE_S), "gpu": "off", **extra}


def epoch(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


def health(d) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(d.url("/healthz"), timeout=5) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:  # 503 carries the same snapshot
        return json.loads(exc.read())


def daemon_text(d) -> str:
    """Everything the daemon said: stderr and its log file."""
    log = d.log_file.read_text(errors="replace") if d.log_file.exists() else ""
    return d.stderr_path.read_text(errors="replace") + "\n" + log


def event(line: str) -> str:
    """A log line's message (the daemon logs JSON)."""
    try:
        return str(json.loads(line).get("event", line))
    except (ValueError, AttributeError):
        return line


def meter_warnings(text: str, bmc: FakeBmc) -> tuple[list[str], list[str]]:
    """(failure-start lines, recovery lines) the platform source logged, one stream's worth."""
    lines = [ln for ln in text.splitlines() if "platform meter" in ln]
    return ([ln for ln in lines if "holding the last good power" in ln and f"BMC {bmc.host}:{bmc.port}" in ln],
            [ln for ln in lines if "readings good again" in ln])


def test_energy_matches_the_programmed_profile_across_kill9_and_restart(daemon_factory):
    # Steps and ramps while each run measures; level where a run starts and ends (the kill -9,
    # the restart, the stop): the BMC's 1 s average lags by ~0.25 s, which moves energy across a
    # run's edge only if the power changes there, and that is not what this test is about.
    with FakeBmc(PowerProfile.constant(180.0), password=PASSWORD, sample_ms=1000) as bmc:
        d = daemon_factory("a", interval=2.0, settings=settings(bmc)).start()
        t0 = time.time() + 1.0  # the profile runs on the daemon's clock of records: wall time
        profile = (PowerProfile.starting(180.0, t0).hold(3).step(260).hold(3).ramp(200, 4).step(320).hold(2)
                   .ramp(200, 3)  # t0+15; level through the kill (t0+19) and the restart (t0+22)
                   .hold(9).step(150).hold(2).ramp(280, 3).step(200).hold(60))  # t0+24..29; the stop at t0+32
        bmc.set_profile(profile)
        time.sleep(max(0.0, t0 + 19.0 - time.time()))
        d.proc.send_signal(signal.SIGKILL)
        assert d.stop() == -signal.SIGKILL
        first_run = len(d.records())
        time.sleep(1.0)
        d = daemon_factory("a", interval=2.0, settings=settings(bmc)).start()
        time.sleep(max(0.0, t0 + 32.0 - time.time()))
        assert d.stop() == 0
        reads = bmc.stats()["reads"]
    records = d.records()
    assert len({r["run_id"] for r in records}) == 2
    assert first_run >= 8 and len(records) - first_run >= 4, (first_run, len(records))
    got = want = 0.0
    worst = 0.0
    for r in records:
        assert r["energy_method"].get("platform") == "ipmi_dcmi", r
        assert "platform" in r["energy_j"], r  # every interval covered, the first of each run too
        assert r["energy_j"]["total"] >= r["energy_j"]["platform"] - 1e-9, r
        programmed = profile.energy_j(epoch(r["interval_start"]), epoch(r["interval_end"]))
        got += r["energy_j"]["platform"]
        want += programmed
        if r["duration_s"] > 1.0:
            worst = max(worst, abs(r["energy_j"]["platform"] / programmed - 1))
    error = got / want - 1
    print(f"\nIPMI DCMI vs programmed profile: {got:.1f} J vs {want:.1f} J ({error * 100:+.3f}%) over "
          f"{len(records)} records, 2 runs (kill -9 between), {reads} BMC reads; worst single 2 s record "
          f"{worst * 100:.1f}% (a step lands in the neighbour; the sum keeps it)")
    assert got == pytest.approx(want, rel=0.01)


def test_silent_bmc_mid_run_keeps_measuring_and_says_why(daemon_factory):
    with FakeBmc(PowerProfile.constant(200.0), password=PASSWORD) as bmc:
        d = daemon_factory("s", interval=1.0, settings=settings(bmc)).start()
        d.wait_for_record(lambda r: r["energy_j"].get("platform"), "a platform figure", timeout=20)
        before = len(d.records())
        assert health(d)["platform_meter_error"] == ""
        bmc.set(silent=True)
        silent_at = time.monotonic()
        gap = d.wait_for_record(lambda r: r["seq"] > before and "platform" not in r["energy_j"],
                                "a record without platform", timeout=20)
        detected_s = time.monotonic() - silent_at
        failing = health(d)
        assert failing["platform_meter"] == "ipmi_dcmi"
        assert "no answer within" in failing["platform_meter_error"], failing
        assert "not counted" in gap["energy_assumptions"]["platform"], gap
        assert "no answer within" in gap["energy_assumptions"]["platform"], gap
        assert gap["energy_j"]["cpu"] > 0  # the rest of the machine is still measured
        time.sleep(3.0)  # several more failed reads: still one warning
        bmc.set(silent=False)
        back_at = time.monotonic()
        seq_back = max(r["seq"] for r in d.records())
        d.wait_for_record(lambda r: r["seq"] > seq_back + 1 and r["energy_j"].get("platform"),
                          "platform again", timeout=20)
        recovered_s = time.monotonic() - back_at
        assert health(d)["platform_meter_error"] == ""
        assert d.stop() == 0
    records = d.records()
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))  # records kept coming
    for r in records:
        assert r["energy_j"]["total"] >= r["energy_j"].get("platform", 0.0) - 1e-9
        assert ("platform" in r["energy_j"]) != ("platform" in r.get("energy_assumptions", {})), r
    full = [r for r in records if "platform" in r["energy_j"] and r["duration_s"] > 0.9]
    for r in full[1:-1]:
        assert r["energy_j"]["platform"] / r["duration_s"] == pytest.approx(200.0, rel=0.02), r
    # stderr and the log file carry the same lines: one failure start and one recovery in each.
    starts, ends = meter_warnings(d.stderr_path.read_text(errors="replace"), bmc)
    assert len(starts) == 1 and len(ends) == 1, (starts, ends)
    if d.log_file.exists():
        starts, ends = meter_warnings(d.log_file.read_text(errors="replace"), bmc)
        assert len(starts) == 1 and len(ends) == 1, (starts, ends)
    print(f"\nsilent BMC: first record without platform {detected_s:.1f} s after it went silent; "
          f"platform back {recovered_s:.1f} s after it answered again; warning: {event(starts[0])}")


def test_wrong_password_never_shows_and_the_daemon_keeps_measuring(daemon_factory, tmp_path):
    with FakeBmc(PowerProfile.constant(200.0), password="the-bmc-real-pw") as bmc:
        # The documented way: the password in the environment file, not on a command line.
        workdir = tmp_path / "w"
        workdir.mkdir()
        (workdir / "environment").write_text(f"CARBON_IPMI_PASSWORD={PASSWORD}\n")
        s = settings(bmc)
        del s["ipmi_password"]
        d = daemon_factory("w", interval=1.0, settings=s).start()
        d.wait_for_records(3)
        failing = health(d)
        assert "wrong IPMI user name or password" in failing["platform_meter_error"], failing
        bmc.set(password=PASSWORD)  # the operator fixes the BMC side
        d.wait_for_record(lambda r: r["energy_j"].get("platform"), "platform once the password matches", 20)
        assert health(d)["platform_meter_error"] == ""
        assert d.stop() == 0
        body = json.dumps(failing)
    records = d.records()
    first = records[0]
    assert "platform" not in first["energy_j"] and "wrong IPMI user name or password" in \
        first["energy_assumptions"]["platform"], first
    assert all(r["energy_j"]["cpu"] > 0 for r in records)
    said = daemon_text(d)
    for stream in (d.stderr_path, d.log_file):
        starts, ends = meter_warnings(stream.read_text(errors="replace"), bmc)
        assert len(starts) == 1 and len(ends) == 1, (stream, starts, ends)
    everything = said + body + "".join(p.read_text(errors="replace") for p in d.output_dir.rglob("*") if p.is_file())
    for secret in (PASSWORD, "the-bmc-real-pw"):
        assert secret not in everything
    print(f"\nwrong password at daemon level: {event(starts[0])}")
