"""The real daemon under the real unit, installed by the real installer, in a real systemd.

One namespaced manager serves the whole module (install + uv sync take ~10 s);
``svc`` resets it to "stopped, pristine config" before each test. The only
changes to the shipped unit are the test drop-in in staged.py (documented in
docs/systemd.md), and the environment file's interval is set to 1 s.
"""

from __future__ import annotations

import json
import re
import time


from nsystemd import wait_for
from staged import (
    CONFIG,
    ENV_FILE,
    INSTALL_DIR,
    OUTPUT_DIR,
    UNIT,
    StagedService,
    exposure,
)
from tests.fixtures.fake_rapl import FakeRapl





def start(svc: StagedService) -> str:
    """Start (blocking until READY) and return the new process's run_id."""
    svc.sd.systemctl("start", UNIT, check=True)
    return svc.run_id()


def set_yaml(svc: StagedService, key: str, value: str) -> None:
    text = svc.sd.path(CONFIG).read_text()
    new, n = re.subn(rf"(?m)^{key}:.*$", f"{key}: {value}", text)
    assert n == 1, f"{key} not in shipped config"
    svc.sd.write(CONFIG, new, 0o640)


def set_env(svc: StagedService, key: str, value: str | None) -> None:
    """Set (or with None, delete) KEY in the environment file."""
    lines = [ln for ln in svc.sd.path(ENV_FILE).read_text().splitlines() if not ln.startswith(f"{key}=")]
    if value is not None:
        lines.append(f"{key}={value}")
    svc.sd.write(ENV_FILE, "\n".join(lines) + "\n", 0o640)


# ---- the unit as installed ---------------------------------------------------------------


def test_installed_unit_verifies_and_scores(svc: StagedService) -> None:
    # Inside the namespace ExecStart= exists, so verify checks everything for real.
    r = svc.sd.run(["systemd-analyze", "verify", f"/etc/systemd/system/{UNIT}"])
    assert (r.returncode, r.stdout + r.stderr) == (0, "")
    offline = svc.sd.run(["systemd-analyze", "security", "--no-pager", "--offline=true", f"/etc/systemd/system/{UNIT}"])
    assert exposure(offline.stdout) <= 2.0, offline.stdout


def test_security_live_score(svc: StagedService) -> None:
    start(svc)
    live = svc.sd.run(["systemd-analyze", "security", "--no-pager", UNIT])
    score = exposure(live.stdout)
    print(f"live exposure (with the test drop-in): {score}")
    assert score <= 2.0, live.stdout


# ---- start, status, records, metrics -----------------------------------------------------


def test_start_is_active_only_after_ready(svc: StagedService) -> None:
    cur = svc.cursor()
    svc.sd.systemctl("start", "--no-block", UNIT, check=True)
    seen = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        state = svc.props("ActiveState")["ActiveState"]
        if not seen or seen[-1] != state:
            seen.append(state)
        if state in ("active", "failed"):
            break
        time.sleep(0.02)
    # Python + codecarbon take ~1 s to import: the unit must sit in "activating" until READY=1.
    assert seen[-1] == "active" and "activating" in seen, seen
    lines = svc.journal(cur, unit_only=False).splitlines()
    started = next(i for i, ln in enumerate(lines) if '"event": "started"' in ln)
    active = next(i for i, ln in enumerate(lines) if ln.startswith("Started tta-staging-carbon.service"))
    assert started < active, "systemd reported Started before the daemon said it was ready"
    svc.wait_records(1, svc.run_id())
    status = svc.sd.status(UNIT)
    print(status)
    assert "Active: active (running)" in status
    assert re.search(r'Status: "(power .* records|started;)', status), status


def test_records_and_metrics(svc: StagedService) -> None:
    run_id = start(svc)
    recs = svc.wait_records(3, run_id)
    seqs = [r["seq"] for r in recs]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert not any(r["final"] for r in recs)
    assert all(r["totals"]["records"] == r["seq"] for r in recs)
    f = next(svc.sd.path(OUTPUT_DIR).glob("emissions_*.json"))
    st = f.stat()
    passwd = svc.sd.run(["id", "-u", "tta-user"], check=True).stdout.strip()
    assert (st.st_uid, oct(st.st_mode & 0o777)) == (int(passwd), "0o644")
    page = svc.metrics()
    measured = re.search(r"(?m)^tta_carbon_measurements_total (\S+)$", page)
    assert measured and float(measured.group(1)) >= 3, page[:2000]
    assert 'tta_carbon_tracker_available 1.0' in page
    assert re.search(r'(?m)^tta_carbon_build_info\{.*env="staging".*\} 1\.0$', page)


# ---- reload ------------------------------------------------------------------------------


def debug_lines(svc: StagedService, after: str) -> list[dict]:
    return [e for e in svc.events(after) if e.get("level") == "debug"]


def test_reload_applies_log_level_from_config_yaml(svc: StagedService) -> None:
    # Without CARBON_LOG_LEVEL in the environment file, config.yaml decides and SIGHUP applies a change live.
    set_env(svc, "CARBON_LOG_LEVEL", None)
    start(svc)
    pid = svc.main_pid()
    cur = svc.cursor()
    time.sleep(1.5)
    assert debug_lines(svc, cur) == []
    set_yaml(svc, "log_level", "debug")
    cur = svc.cursor()
    svc.sd.systemctl("reload", UNIT, check=True)
    wait_for(
        lambda: any(e.get("event") == "reloaded" and e.get("log_level") == "debug" for e in svc.events(cur)),
        5, what="reloaded line with log_level debug",
    )
    assert svc.main_pid() == pid
    time.sleep(2.5)  # two measurements at 1 s: each logs a debug "measured" line when debug is on
    assert [e for e in debug_lines(svc, cur) if e.get("event") == "measured"], "no debug lines after reload"


def test_reload_applies_log_level_from_environment_file(svc: StagedService) -> None:
    # The operator's path with the shipped files: edit /etc/tta/staging/environment, reload.
    start(svc)
    set_env(svc, "CARBON_LOG_LEVEL", "debug")
    cur = svc.cursor()
    svc.sd.systemctl("reload", UNIT, check=True)
    wait_for(lambda: any(e.get("event") == "reloaded" for e in svc.events(cur)), 5, what="reloaded line")
    time.sleep(2)
    assert debug_lines(svc, cur), "log level still info after reload"


def test_reload_with_broken_config_keeps_running(svc: StagedService) -> None:
    run_id = start(svc)
    pid = svc.main_pid()
    before = svc.wait_records(1, run_id)[-1]["seq"]
    # A YAML syntax error: a broken value for a key the environment file also sets
    # (measurement_interval, which the fixture sets there) would be masked by it and never seen.
    good = svc.sd.path(CONFIG).read_text()
    svc.sd.write(CONFIG, good + "oops: [unclosed\n", 0o640)
    cur = svc.cursor()
    r = svc.sd.systemctl("reload", UNIT)
    # ExecReload waits for that reload's outcome: a rejected config fails `systemctl reload` ...
    assert r.returncode != 0, r.stdout + r.stderr
    assert "failed" in r.stderr, r.stderr
    rejected = [e for e in svc.events(cur) if e.get("event") == "reload_rejected"]  # logged before it returned
    # ... and the reason is in the journal at err priority, from ExecReload itself (status=78/CONFIG).
    why = at_priority(svc, "err", cur)
    reason = [ln for ln in why if ln.startswith("tta-carbon: reload rejected: ")]
    assert len(reason) == 1 and "YAML syntax error" in reason[0] and CONFIG in reason[0], why
    text = svc.journal(cur, unit_only=False)
    assert "Control process exited, code=exited, status=78/CONFIG" in text, text
    assert reason[0] in svc.sd.status(UNIT)  # `systemctl status` shows why the reload failed
    time.sleep(2.5)  # keeps measuring on the old config ...
    assert svc.props("ActiveState", "MainPID") == {"ActiveState": "active", "MainPID": str(pid)}
    assert svc.records()[-1]["seq"] >= before + 2
    # ... and says so exactly once, naming the key.
    errors = [e for e in svc.events(cur) if e.get("level") == "error"]
    assert len(rejected) == 1 and errors == rejected, errors
    assert "YAML syntax error" in rejected[0]["error"] and CONFIG in rejected[0]["error"]

    # Fixed (and changed): the next reload exits 0 and the new value is in force on return.
    svc.sd.write(CONFIG, good, 0o640)
    set_env(svc, "CARBON_PROJECT_NAME", "after-reload")  # the environment file sets it (outranks YAML)
    cur = svc.cursor()
    r = svc.sd.systemctl("reload", UNIT)
    assert r.returncode == 0, r.stdout + r.stderr
    reloaded = [e for e in svc.events(cur) if e.get("event") == "reloaded"]
    assert len(reloaded) == 1 and reloaded[0]["project"] == "after-reload", svc.journal(cur)
    assert svc.main_pid() == pid
    assert svc.wait_records(1 + len(svc.records()))[-1]["project"] == "after-reload"


# ---- journal priorities ----------------------------------------------------------------------


def at_priority(svc: StagedService, prio: str, after: str) -> list[str]:
    """The unit's messages since the cursor ``after`` that ``journalctl -u UNIT -p PRIO`` selects.

    Not ``--after-cursor``: journalctl 252 combined with ``-u`` and ``-p`` skips matching
    entries (seen here: an err line missing that ``-p err`` without the cursor shows). The
    cursor's realtime stamp (``t=``, hex microseconds) does the "since" part instead.
    """
    since = int(re.search(r"(?:^|;)t=([0-9a-f]+)", after).group(1), 16)
    out = svc.sd.journalctl("-u", UNIT, "-p", prio, "-o", "json")
    entries = [json.loads(line) for line in out.splitlines() if line.strip()]
    return [e["MESSAGE"] for e in entries if int(e["__REALTIME_TIMESTAMP"]) > since and isinstance(e["MESSAGE"], str)]


def event_names(lines: list[str]) -> list[str]:
    return [json.loads(ln).get("event", "") for ln in lines if ln.startswith("{")]


def test_journal_priorities_follow_log_levels(svc: StagedService) -> None:
    cur = svc.cursor()
    start(svc)
    # Library loggers (codecarbon) warn on these VMs (no RAPL, unknown CPU): priority 4 exactly.
    lib_warnings = wait_for(
        lambda: [ln for ln in at_priority(svc, "warning..warning", cur) if '"logger": "codecarbon"' in ln],
        20, interval=0.3, what="a codecarbon warning at priority 4")
    assert all('"level": "warning"' in ln for ln in lib_warnings), lib_warnings
    # Info lines are in the journal, but not at warning or above.
    assert "started" in event_names(at_priority(svc, "info", cur))
    above_info = at_priority(svc, "warning", cur)
    assert "started" not in event_names(above_info), above_info
    assert all('"level": "info"' not in ln and '"level": "debug"' not in ln for ln in above_info), above_info
    assert not at_priority(svc, "err", cur), "no errors yet"

    # A rejected reload: the daemon's reload_rejected line is an err.
    svc.sd.write(CONFIG, svc.sd.path(CONFIG).read_text() + "oops: [unclosed\n", 0o640)
    svc.sd.systemctl("reload", UNIT)
    wait_for(lambda: "reload_rejected" in event_names(at_priority(svc, "err", cur)), 5, what="reload_rejected at err")

    # A config error at start, printed before logging is set up: also an err.
    svc.sd.systemctl("stop", UNIT, check=True)
    svc.reset()
    set_yaml(svc, "country_iso_code", "XXX")
    cur = svc.cursor()
    assert svc.sd.systemctl("start", UNIT).returncode != 0
    errs = wait_for(lambda: [ln for ln in at_priority(svc, "err", cur) if ln.startswith("tta-carbon: config error:")],
                    5, what="the config error at err priority")
    assert "invalid country_iso_code='XXX'" in errs[0], errs
    # The log file holds plain JSON lines: the <N> prefix is for the journal stream only.
    carbon_log = svc.sd.path("/var/log/tta/staging/carbon.log").read_text().splitlines()
    assert carbon_log and all(ln.startswith("{") for ln in carbon_log), carbon_log[:3]


# ---- stop, crash, watchdog, bad config ------------------------------------------------------


def test_stop_writes_final_record_and_exits_cleanly(svc: StagedService) -> None:
    run_id = start(svc)
    svc.wait_records(1, run_id)
    cur = svc.cursor()
    t0 = time.monotonic()
    svc.sd.systemctl("stop", UNIT, check=True)
    assert time.monotonic() - t0 < 10  # far below TimeoutStopSec=30: no SIGKILL escalation
    last = svc.records()[-1]
    assert last["run_id"] == run_id and last["final"] is True
    assert svc.props("ActiveState", "Result") == {"ActiveState": "inactive", "Result": "success"}
    # systemd 252 forgets ExecMainStatus once the stopped unit is unloaded, so read its verdict
    # from the journal: "Deactivated successfully" only follows a clean exit with status 0.
    text = svc.journal(cur, unit_only=False)
    assert "tta-staging-carbon.service: Deactivated successfully." in text, text
    assert "Main process exited" not in text and "timed out" not in text, text
    assert any(e.get("event") == "stopped" for e in svc.events(cur))


def test_kill9_restarts_and_totals_continue(svc: StagedService) -> None:
    run_id = start(svc)
    old = svc.wait_records(2, run_id)[-1]
    pid = svc.main_pid()
    svc.sd.run(["kill", "-9", str(pid)], check=True)
    wait_for(lambda: svc.props("NRestarts")["NRestarts"] == "1", 10, what="a restart")
    svc.sd.wait_active(UNIT)
    assert svc.main_pid() != pid
    new_run = svc.run_id()
    assert new_run != run_id
    first_new = svc.wait_records(1, new_run)[0]
    # The ledger carries seq and totals across the crash: nothing restarts at zero.
    assert first_new["seq"] > old["seq"]
    for key in ("energy_j", "emissions_g"):
        assert first_new["totals"][key]["total"] > old["totals"][key]["total"]


def test_watchdog_kills_stalled_loop_and_restarts(svc: StagedService) -> None:
    # The loop hangs at the hardware boundary: the daemon measures a fake RAPL tree over
    # /sys/class (as in the drop-in test below), and once its second record is written the
    # package counter's energy_uj becomes a FIFO, so the third read blocks in open() for good.
    svc.sd.run("mount -t tmpfs -o mode=755 tmpfs /sys/class", check=True)
    try:
        with FakeRapl(svc.sd.path("/sys/class/powercap")) as rapl:  # exit: releases the FIFO
            rapl.start_live({"package-0": 12.0}, tick=0.05)
            set_yaml(svc, "energy_source", "rapl")
            cur = svc.cursor()
            t0 = time.monotonic()
            run_id = start(svc)
            pid = svc.main_pid()
            of_run = lambda: [r for r in svc.records() if r["run_id"] == run_id]  # noqa: E731
            svc.wait_records(2, run_id)  # the third read is an interval (1 s) away: stall before it
            with rapl.stall("package-0") as stall:
                assert len(of_run()) == 2, "stalled too late: a third record was written"
                wait_for(lambda: int(svc.props("NRestarts")["NRestarts"]) >= 1, 20, interval=0.2,
                         what="watchdog restart")
                # 2 intervals of 1 s, then WatchdogSec=3 without a ping.
                assert time.monotonic() - t0 >= 4
                # The process was alive but silent: the watchdog, not a crash, ended it.
                lines = [
                    f"{UNIT}: Watchdog timeout (limit 3s)!",
                    f"{UNIT}: Killing process {pid} (tta-carbon) with signal SIGABRT.",
                    "status=6/ABRT",
                    f"{UNIT}: Failed with result 'watchdog'.",
                    f"{UNIT}: Scheduled restart job, restart counter is at 1.",
                ]
                # (journald may lag the manager by a moment: wait for the last line to land)
                text = wait_for(lambda: t if lines[-1] in (t := svc.journal(cur, unit_only=False)) else None, 10,
                                interval=0.2, what="the restart in the journal")
                at = [text.find(ln) for ln in lines]
                assert -1 not in at and at == sorted(at), text
                # The restarted daemon reads the same counter at start-up (before READY=1), so
                # it blocks there: release() finds it waiting in open() and hands it the count.
                assert svc.props("ActiveState")["ActiveState"] == "activating"
                assert len(of_run()) == 2
                assert stall.release(wait_for_reader=20), "the restarted daemon never blocked on the counter"
            svc.sd.wait_active(UNIT)
            assert svc.main_pid() != pid
            new = svc.wait_records(1, svc.run_id())
            old = of_run()
            # Nothing after the stall (and no final record: SIGABRT), then the new process
            # measures again, on RAPL, its seq continuing from the ledger.
            assert [(r["seq"], r["final"]) for r in old] == [(old[0]["seq"], False), (old[0]["seq"] + 1, False)]
            assert new[0]["seq"] == old[-1]["seq"] + 1
            assert new[0]["energy_method"] == {"cpu": "rapl"} and new[0]["energy_j"]["cpu"] > 0
    finally:
        svc.sd.systemctl("stop", UNIT)
        svc.sd.run("umount /sys/class")


def test_bad_config_fails_with_78_and_no_restart_loop(svc: StagedService) -> None:
    set_yaml(svc, "country_iso_code", "XXX")
    cur = svc.cursor()
    n_records = len(svc.records())
    r = svc.sd.systemctl("start", UNIT)
    assert r.returncode != 0
    time.sleep(2.5)  # > RestartSec=1: a restart would have happened by now
    p = svc.props("ActiveState", "Result", "ExecMainStatus", "NRestarts")
    assert p == {"ActiveState": "failed", "Result": "exit-code", "ExecMainStatus": "78", "NRestarts": "0"}
    status = svc.sd.status(UNIT)
    assert "status=78" in status and "invalid country_iso_code='XXX'" in status, status
    assert "invalid country_iso_code='XXX'" in svc.journal(cur)
    assert len(svc.records()) == n_records  # exit 78 comes before any record is written


# ---- RAPL through the shipped drop-in --------------------------------------------------------

FAKE_RAPL = """
set -e
mount -t tmpfs -o mode=755 tmpfs /sys/class
z=/sys/class/powercap/intel-rapl/intel-rapl:0
mkdir -p $z
echo package-0 > $z/name
echo 262143328850 > $z/max_energy_range_uj
echo 1000000 > $z/energy_uj
chmod 0444 $z/name $z/max_energy_range_uj
chmod 0400 $z/energy_uj
# Like sysfs: every zone also appears directly under /sys/class/powercap.
ln -s intel-rapl/intel-rapl:0 /sys/class/powercap/intel-rapl:0
"""


def test_rapl_dropin_grants_group_read_without_root(svc: StagedService) -> None:
    # A fake powercap tree (root-only energy_uj, as since Linux 5.10) over /sys/class in
    # the manager's mount namespace; services started afterwards inherit it.
    svc.sd.run(FAKE_RAPL, check=True)
    try:
        run_id = start(svc)
        st = svc.sd.run(["stat", "-c", "%G %a", "/sys/class/powercap/intel-rapl:0/energy_uj"], check=True)
        assert st.stdout.split() == ["tta-group", "440"]
        rec = svc.wait_records(1, run_id)[0]
        assert rec["energy_method"]["cpu"] == "rapl"
        user = svc.sd.run(["ps", "-o", "user=", "-p", str(svc.main_pid())], check=True).stdout.strip()
        assert user == "tta-user"
    finally:
        svc.sd.systemctl("stop", UNIT)
        svc.sd.run("umount /sys/class")


# ---- installer and rollback inside the namespace ---------------------------------------------


def test_installer_second_run_changes_nothing_and_keeps_edited_environment(svc: StagedService) -> None:
    # The fixture edited the environment file (interval 1): the installer must keep it.
    out = svc.sd.run(["bash", f"{INSTALL_DIR}/scripts/install_staging.sh", "--src", str(svc.src)],
                     env={"UV_OFFLINE": "1"}, timeout=120, check=True).stdout
    steps = [ln for ln in out.splitlines() if ": " in ln and not ln.startswith(("warning", " ", "done", "skipped "))]
    changed = [ln for ln in steps if not ln.endswith(": unchanged") and ": unchanged (" not in ln]
    assert changed == [
        "config /etc/tta/staging/environment: kept your edited file; the shipped version is in "
        "/etc/tta/staging/environment.dist (diff them to review)",
    ], out
    assert "daemon-reload" not in out
    assert "CARBON_MEASUREMENT_INTERVAL=1" in svc.sd.path(ENV_FILE).read_text()
    assert svc.sd.path(ENV_FILE + ".dist").read_text() == (svc.src / "config/environment").read_text()


def test_installer_on_a_running_service_says_restart(svc: StagedService) -> None:
    out = svc.sd.run(["bash", f"{INSTALL_DIR}/scripts/install_staging.sh", "--src", str(svc.src)],
                     env={"UV_OFFLINE": "1"}, timeout=120, check=True).stdout
    assert out.splitlines()[-1].endswith("Start with: systemctl enable --now tta-staging-carbon"), out
    start(svc)
    out = svc.sd.run(["bash", f"{INSTALL_DIR}/scripts/install_staging.sh", "--src", str(svc.src)],
                     env={"UV_OFFLINE": "1"}, timeout=120, check=True).stdout
    assert out.splitlines()[-1].endswith("apply with: systemctl restart tta-staging-carbon"), out


def test_rollback_to_previous_commit(svc: StagedService) -> None:
    # 4 s: the check right after the restart sees no measurement yet, and must wait for one.
    set_env(svc, "CARBON_MEASUREMENT_INTERVAL", "4")
    start(svc)
    head = lambda: svc.sd.run(  # noqa: E731
        ["git", "-c", f"safe.directory={INSTALL_DIR}", "-C", INSTALL_DIR, "rev-parse", "HEAD"], check=True
    ).stdout.strip()
    assert head() == svc.next
    r = svc.sd.run(["bash", f"{INSTALL_DIR}/scripts/rollback_staging.sh", svc.snapshot],
                   env={"UV_OFFLINE": "1"}, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert head() == svc.snapshot
    assert "✅ Carbon component: OK" in r.stdout
    assert "health check OK" in r.stdout
    assert "✅ Last measurement:" in r.stdout  # not just "none yet": the rolled-back code has measured
    svc.sd.wait_active(UNIT)
    # A commit that does not exist is refused before anything is stopped.
    pid = svc.main_pid()
    bad = svc.sd.run(["bash", f"{INSTALL_DIR}/scripts/rollback_staging.sh", "0" * 40])
    assert bad.returncode == 1 and "is not a commit" in bad.stderr
    assert svc.main_pid() == pid
