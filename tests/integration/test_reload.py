"""SIGHUP: live reload, rejected config, and storms, against the real daemon."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

from tests.support.daemon import REPO, TTA_CARBON, clean_env


def log_events(d) -> list[dict]:
    return [json.loads(x) for x in d.log_file.read_text().splitlines() if x.startswith("{")]


def wait_event(d, name: str, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:  # looks at least once: timeout=0 asks "is it there already?"
        found = [e for e in log_events(d) if e.get("event") == name]
        if found:
            return found[-1]
        if time.monotonic() >= deadline:
            break
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


# ---- `tta-carbon reload`: what ExecReload runs (signal, then wait for THAT reload's outcome) ----


def reload_cmd(d, *args: str, env: dict[str, str] | None = None, timeout: float = 40.0):
    """`tta-carbon reload ARGS` as a subprocess, in the daemon's environment (like ExecReload)."""
    return subprocess.run([*TTA_CARBON, "reload", *args], cwd=REPO, env=clean_env(**(env or d.env)),
                          capture_output=True, text=True, timeout=timeout)


def test_reload_command_reports_each_outcome(daemon_factory):
    d = daemon_factory()
    run_dir = d.workdir / "run"  # systemd's RuntimeDirectory=, named to both by $RUNTIME_DIRECTORY
    run_dir.mkdir(parents=True)
    d.env = {"RUNTIME_DIRECTORY": str(run_dir)}
    d.settings = {}
    d.start()
    pid = str(d.proc.pid)
    config = d.workdir / "config.yaml"

    # A good change: exit 0, and the new value is in force by the time the command returns.
    config.write_text("log_level: debug\nintensity_g_per_kwh: 123.5\n")
    t0 = time.monotonic()
    r = reload_cmd(d, "--pid", pid)
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stdout + r.stderr
    assert "reload applied" in r.stdout and r.stderr == "", r.stdout + r.stderr
    assert wait_event(d, "reloaded", timeout=0)["intensity_g_per_kwh"] == 123.5  # no waiting: already done
    print(f"good reload took {took:.2f}s")

    # A rejected config: EX_CONFIG, the reason on one line, no secret echoed, daemon unharmed.
    config.write_text("electricitymaps_tokn: s3cr3t-TOKEN-value\n")  # a misspelt secret key
    r = reload_cmd(d, "--pid", pid)
    assert r.returncode == 78, r.stdout + r.stderr
    assert "reload rejected" in r.stderr and "unknown setting 'electricitymaps_tokn'" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "s3cr3t" not in r.stdout + r.stderr
    assert "s3cr3t" not in "".join(p.read_text() for p in run_dir.iterdir())
    assert d.proc.poll() is None

    # Applied, but one changed setting waits for a restart: success, with a note naming it.
    config.write_text("intensity_g_per_kwh: 99\ncpu_tdp_watts: 77\n")  # (the interval is fixed by --set)
    r = reload_cmd(d, "--pid", pid)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "reload applied" in r.stdout and "cpu_tdp_watts" in r.stdout and "restart" in r.stdout, r.stdout

    # Each outcome is that reload's own: a fixed config after a rejection is reported applied.
    config.write_text("measurement_interval: [oops\n")
    assert reload_cmd(d, "--pid", pid).returncode == 78
    config.write_text("project_name: Fixed\n")
    r = reload_cmd(d, "--pid", pid)
    assert r.returncode == 0, r.stdout + r.stderr
    events = [e for e in log_events(d) if e.get("event") in ("reloaded", "reload_rejected")]
    assert [e["generation"] for e in events] == [1, 2, 3, 4, 5]


def test_reload_command_never_hangs_and_signals_only_a_daemon(daemon_factory):
    d = daemon_factory()
    d.env = {"RUNTIME_DIRECTORY": str(d.workdir / "run")}
    (d.workdir / "run").mkdir(parents=True)
    d.start()
    # A process that is not our daemon: refused without a signal (SIGHUP would kill `sleep`).
    other = subprocess.Popen(["sleep", "30"])
    try:
        r = reload_cmd(d, "--pid", str(other.pid))
        assert r.returncode == 1 and "has not published" in r.stderr, r.stdout + r.stderr
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()
    # A daemon that cannot answer (stopped): the bounded wait ends, exit 75, the reason says so.
    os.kill(d.proc.pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        r = reload_cmd(d, "--pid", str(d.proc.pid), "--timeout", "1")
        assert time.monotonic() - t0 < 10
        assert r.returncode == 75 and "no reload outcome" in r.stderr, r.stdout + r.stderr
    finally:
        os.kill(d.proc.pid, signal.SIGCONT)
    # It still gets to that reload once it runs again: the daemon is fine.
    wait_event(d, "reloaded")
    assert d.proc.poll() is None


def test_reload_command_without_systemd_finds_the_daemon_by_its_state_dir(daemon_factory):
    # No RuntimeDirectory (a local run): the status lives in the state dir; no --pid needed.
    d = daemon_factory().start()
    args = ["--config", str(d.workdir / "config.yaml"), "--env-file", str(d.workdir / "environment"),
            "--set", f"state_dir={d.state_dir}"]
    (d.workdir / "config.yaml").write_text("project_name: Local\n")
    r = reload_cmd(d, *args)
    assert r.returncode == 0 and "reload applied" in r.stdout, r.stdout + r.stderr
    assert wait_event(d, "reloaded", timeout=0)["project"] == "Local"
