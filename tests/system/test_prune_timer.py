"""The retention timer (issue 13, item 11b): deploy/systemd/tta-staging-carbon-prune.service
and .timer.

On the host: `systemd-analyze verify` of both (ExecStart= staged in a private mount namespace,
as scripts/check_unit_security.sh does) and the service's exposure score. In a namespaced
systemd with the real installer: the installed units verify with the real ExecStart, starting
the service deletes an old records file and keeps newer ones and every other file, its sandbox
lets it write nothing but the output directory, and the timer is scheduled once enabled.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from staged import OUTPUT_DIR, StagedService

REPO = Path(__file__).resolve().parents[2]
UNITS = REPO / "deploy/systemd"
SERVICE = "tta-staging-carbon-prune.service"
TIMER = "tta-staging-carbon-prune.timer"
DROPIN_DIR = f"/etc/systemd/system/{SERVICE}.d"

needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")


def verify_on_host(*units: Path) -> subprocess.CompletedProcess[str]:
    """systemd-analyze verify with a stand-in ExecStart at its real path, in a private mount
    namespace (nothing on this machine changes)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("verify stages ExecStart= in a private mount namespace (root, unshare)")
    exe = re.search(r"^ExecStart=(\S+)", (UNITS / SERVICE).read_text(), re.M).group(1)
    script = (
        'set -e; exe=$1; shift; if [ ! -x "$exe" ]; then top=/$(echo "$exe" | cut -d/ -f2); '
        'mount -t tmpfs -o mode=755 tmpfs "$top"; mkdir -p "$(dirname "$exe")"; '
        'printf "#!/bin/sh\\nexit 0\\n" > "$exe"; chmod 755 "$exe"; fi; '
        'systemd-analyze verify --no-pager "$@" 2>&1'
    )
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", exe,
                           *map(str, units)], capture_output=True, text=True, timeout=60)


@needs_analyze
def test_shipped_timer_and_service_verify_clean() -> None:
    r = verify_on_host(UNITS / TIMER, UNITS / SERVICE)
    assert (r.returncode, r.stdout) == (0, ""), r.stdout + r.stderr


@needs_analyze
def test_verify_catches_a_broken_timer(tmp_path: Path) -> None:
    # Proves the check above can fail: a calendar spec systemd cannot parse.
    shutil.copy(UNITS / SERVICE, tmp_path / SERVICE)
    (tmp_path / TIMER).write_text((UNITS / TIMER).read_text().replace("*-*-* 03:15:00 UTC", "every night"))
    r = verify_on_host(tmp_path / TIMER, tmp_path / SERVICE)
    assert r.returncode != 0 and "Failed to parse calendar specification" in r.stdout, r.stdout + r.stderr


@needs_analyze
def test_service_runs_as_the_service_account_and_scores_low() -> None:
    text = (UNITS / SERVICE).read_text()
    assert re.search(r"^User=tta-user$", text, re.M) and re.search(r"^Type=oneshot$", text, re.M)
    # The only writable path: the output directory. No Logs/State/Runtime directories either.
    assert re.findall(r"^ReadWritePaths=(.*)$", text, re.M) == ["-/var/log/tta/staging/codecarbon"]
    assert not re.search(r"^(LogsDirectory|StateDirectory|RuntimeDirectory|CacheDirectory|ReadWriteDirectories)=",
                         text, re.M)
    assert re.search(r"^ProtectSystem=strict$", text, re.M) and re.search(r"^PrivateNetwork=yes$", text, re.M)
    r = subprocess.run(["bash", str(REPO / "scripts/check_unit_security.sh"), str(UNITS / SERVICE),
                        "--threshold", "1.0", "--no-verify"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (UNITS / TIMER).read_text().count(f"Unit={SERVICE}") == 1


# ---- installed, in a namespaced systemd ---------------------------------------------------------


@pytest.fixture(scope="module")
def staged(nsystemd_available: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StagedService]:
    s = StagedService(tmp_path_factory.mktemp("prune"), REPO)
    try:
        s.start_manager()
        home = s.sd.run(["/opt/tta/staging/.venv/bin/python", "-c", "import sys; print(sys.base_prefix)"],
                        check=True).stdout.strip()
        # The same test-only exposure of this machine's interpreter as the daemon's (staged.py).
        s.sd.write(f"{DROPIN_DIR}/90-test.conf", f"[Service]\nProtectHome=tmpfs\nBindReadOnlyPaths={home}\n")
        s.sd.systemctl("daemon-reload", check=True)
        yield s
    finally:
        s.sd.stop()


def test_installed_code_and_venv_are_roots_and_data_dirs_tta_users(staged: StagedService) -> None:
    """Issue 13, item 7, on a real install (no --root): what the timer and the daemon run is
    writable by root only; tta-user owns the data, log and state directories."""
    sd = staged.sd
    uid = int(sd.run(["id", "-u", "tta-user"], check=True).stdout)
    code = sd.path("/opt/tta/staging")
    bad = [f"{p} {st.st_uid}:{st.st_gid} {oct(st.st_mode)}" for p in [code, *code.rglob("*")] for st in [p.lstat()]
           if (st.st_uid, st.st_gid) != (0, 0) or (not p.is_symlink() and st.st_mode & 0o022)]
    assert bad == []
    assert (code / ".venv/bin/tta-carbon").is_file()
    for d in ("/var/log/tta/staging", OUTPUT_DIR, "/var/lib/tta/staging"):
        assert sd.path(d).stat().st_uid == uid, d


def records_file(s: StagedService, name: str, age_days: float, uid: int) -> Path:
    p = s.sd.path(f"{OUTPUT_DIR}/{name}")
    p.write_text('{"run_id": "test", "seq": 1}\n')
    os.chown(p, uid, os.stat(p.parent).st_gid)
    t = (datetime.now(UTC) - timedelta(days=age_days)).timestamp()
    os.utime(p, (t, t))
    return p


def test_installed_units_verify_with_the_real_executable(staged: StagedService) -> None:
    for name in (SERVICE, TIMER):
        assert staged.sd.path(f"/etc/systemd/system/{name}").read_text() == (UNITS / name).read_text()
    assert f"file /etc/systemd/system/{TIMER}: created" in staged.install_output
    r = staged.sd.run(["systemd-analyze", "verify", f"/etc/systemd/system/{TIMER}", f"/etc/systemd/system/{SERVICE}"])
    assert (r.returncode, r.stdout + r.stderr) == (0, "")


def test_starting_the_service_deletes_old_records_and_keeps_the_rest(staged: StagedService) -> None:
    sd = staged.sd
    uid = int(sd.run(["id", "-u", "tta-user"], check=True).stdout)
    today = datetime.now(UTC).date()
    old = f"emissions_{today - timedelta(days=100)}.json"
    kept = [
        records_file(staged, f"emissions_{today - timedelta(days=10)}.json", 10, uid),  # 10 days: kept
        records_file(staged, f"emissions_{today - timedelta(days=89)}.json", 89, uid),  # inside 90 days
        records_file(staged, f"emissions_{today - timedelta(days=100)}.json.1", 1, uid),  # old name, written lately
        records_file(staged, "notes.txt", 400, uid),  # not ours
    ]
    gone = records_file(staged, old, 100, uid)
    cur = staged.cursor()
    r = sd.systemctl("start", SERVICE, timeout=120)  # oneshot: returns when the run is over
    journal = sd.journalctl("-u", SERVICE, "-o", "cat", f"--after-cursor={cur}")
    assert r.returncode == 0, r.stderr + journal
    props = sd.show(SERVICE, "Result", "ExecMainStatus", "ActiveState")
    assert props == {"Result": "success", "ExecMainStatus": "0", "ActiveState": "inactive"}, props
    assert not gone.exists()
    assert all(p.exists() for p in kept), [p.name for p in kept if not p.exists()]
    assert f"deleted {old}" in journal and "pruned 1 file(s)" in journal and "older than 90d" in journal, journal


def test_sandbox_lets_it_write_nothing_but_the_output_dir(staged: StagedService) -> None:
    """Pointed at the log directory above (tta-user's own, so only the sandbox stands in the way),
    the same service cannot delete there: ProtectSystem=strict, ReadWritePaths= the output dir only."""
    sd = staged.sd
    uid = int(sd.run(["id", "-u", "tta-user"], check=True).stdout)
    day = datetime.now(UTC).date() - timedelta(days=200)
    target = sd.path(f"/var/log/tta/staging/emissions_{day}.json")
    target.write_text('{"run_id": "test", "seq": 1}\n')
    os.chown(target, uid, os.stat(target.parent).st_gid)
    assert os.stat(target.parent).st_uid == uid  # tta-user could delete it without the sandbox
    probe = f"{DROPIN_DIR}/91-probe.conf"
    sd.write(probe, "[Service]\nExecStart=\nExecStart=/opt/tta/staging/.venv/bin/tta-carbon prune "
                    "--older-than 90d --apply --dir /var/log/tta/staging\n")
    sd.systemctl("daemon-reload", check=True)
    try:
        cur = staged.cursor()
        r = sd.systemctl("start", SERVICE, timeout=120)
        journal = sd.journalctl("-u", SERVICE, "-o", "cat", f"--after-cursor={cur}")
        assert r.returncode != 0, journal
        assert target.exists()
        assert "Read-only file system" in journal, journal
    finally:
        sd.path(probe).unlink()
        sd.systemctl("daemon-reload", check=True)
        sd.systemctl("reset-failed", SERVICE)
        target.unlink(missing_ok=True)


def test_timer_is_scheduled_once_enabled(staged: StagedService) -> None:
    sd = staged.sd
    assert sd.systemctl("is-enabled", TIMER).stdout.strip() == "disabled"  # the installer enables nothing
    sd.systemctl("enable", "--now", TIMER, check=True)
    props = sd.show(TIMER, "ActiveState", "Triggers", "NextElapseUSecRealtime", "Persistent")
    assert props["ActiveState"] == "active" and props["Triggers"] == SERVICE and props["Persistent"] == "yes", props
    assert props["NextElapseUSecRealtime"], props
    listed = sd.systemctl("list-timers", "--all", TIMER, check=True).stdout
    assert TIMER in listed and SERVICE in listed, listed
