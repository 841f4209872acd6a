"""deploy/logrotate/tta-staging with the real logrotate, real users and a daemon writing every second.

The test copy differs from the shipped file only in its paths (a temp dir instead of
/var/log/tta/staging) and its account (a real one made for the test, not tta-user, which
other sessions on the host may be using). `systemctl` in postrotate is the one stand-in: systemd is not PID 1
here, so a small shim on PATH records its arguments and delivers the real SIGHUP the real
`systemctl kill` would send. The same file against a real systemd, installed by the real
installer: tests/system/test_operations_systemd.py.
"""

from __future__ import annotations

import gzip
import json
import os
import pwd
import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.integration.ops_helpers import REPO, TTA_CARBON, OpsDaemon, as_user, clean_env, require_root

SHIPPED = REPO / "deploy" / "logrotate" / "tta-staging"
UNIT = "tta-staging-carbon.service"


def logrotate(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["logrotate", *args], capture_output=True, text=True, env=env, timeout=30)


def install_copy(text: str, dest: Path) -> Path:
    """logrotate ignores configs that group/others can write: install it the way the docs say (0644 root)."""
    dest.write_text(text)
    dest.chmod(0o644)
    return dest


def test_shipped_file_passes_logrotate_debug(tta_users: tuple[str, str], world_tmp: Path) -> None:
    conf = install_copy(SHIPPED.read_text(), world_tmp / "tta-staging")
    ok = logrotate("-d", "-s", str(world_tmp / "state"), str(conf))
    assert ok.returncode == 0, ok.stderr
    assert "error" not in (ok.stdout + ok.stderr).lower()
    assert "rotating pattern: /var/log/tta/staging/*.log  after 1 days (30 rotations)" in ok.stderr
    # Negative control: the same file naming an account that does not exist is rejected whole.
    bad = install_copy(SHIPPED.read_text().replace("tta-user", "tta-nosuchuser"), world_tmp / "bad")
    fail = logrotate("-d", "-s", str(world_tmp / "state"), str(bad))
    assert fail.returncode != 0
    assert "unknown user 'tta-nosuchuser'" in fail.stderr


def test_postrotate_is_quiet_and_harmless_without_systemd() -> None:
    """The shipped postrotate script, run with the real systemctl on a host where systemd is
    not PID 1 (or the unit is not active): exit 0, no noise in logrotate's mail."""
    script = re.search(r"postrotate\n(.*?)\n\s*endscript", SHIPPED.read_text(), re.S).group(1)
    if subprocess.run(["systemctl", "is-active", "--quiet", UNIT], capture_output=True).returncode == 0:
        pytest.skip(f"{UNIT} is really active here; not sending it a SIGHUP from a test")
    proc = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")


def as_test_copy(text: str, logdir: Path, user: str, group: str) -> str:
    """The shipped file with only its directory and account names changed."""
    out = text.replace("/var/log/tta/staging", str(logdir)).replace("su tta-user tta-group", f"su {user} {group}")
    assert out.count(str(logdir)) >= 1 and f"su {user} {group}" in out
    return out


def systemctl_shim(bin_dir: Path, calls: Path, daemon_pid: int) -> None:
    """Records `uid argv` per call; `is-active --quiet UNIT` succeeds and `kill --signal=HUP
    --kill-whom=main UNIT` sends a real SIGHUP to the daemon, for the right unit only."""
    bin_dir.mkdir()
    shim = bin_dir / "systemctl"
    shim.write_text(f"""#!/bin/sh
echo "$(id -u) $*" >> {calls}
for last; do :; done
[ "$last" = {UNIT} ] || {{ echo "Unit $last not found." >&2; exit 5; }}
case "$*" in
  "is-active --quiet {UNIT}") exit 0 ;;
  "kill --signal=HUP --kill-whom=main {UNIT}") exec kill -HUP {daemon_pid} ;;
esac
exit 1
""")
    shim.chmod(0o755)


def read_any(path: Path) -> bytes:
    return gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()


def lines_of(paths: list[Path]) -> list[dict]:
    """Every line of every file: each must be one whole JSON object ending in a newline."""
    out = []
    for p in paths:
        data = read_any(p)
        assert data.endswith(b"\n"), f"{p.name}: last line torn"
        for raw in data.split(b"\n")[:-1]:
            out.append(json.loads(raw))  # raises on a torn or merged line
    return out


def test_rotation_while_the_daemon_writes(service_account: tuple[str, str], world_tmp: Path) -> None:
    require_root()
    user, group = service_account
    uid, gid = pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid
    logdir = world_tmp / "log"  # plays /var/log/tta/staging
    out, log = logdir / "codecarbon", logdir / "carbon.log"
    settings = {"output_dir": str(out), "log_file": str(log), "log_level": "debug"}  # debug: a line per interval
    daemon = OpsDaemon(world_tmp / "daemon", settings=settings, wrap=as_user(user, group))
    for d in (logdir, out, daemon.state_dir):
        d.mkdir(mode=0o755, exist_ok=True)
        os.chown(d, uid, gid)
    shipped = as_test_copy(SHIPPED.read_text(), logdir, user, group)
    # An old install may still carry the seed guide's NDJSON block (we no longer ship one):
    # rotating the dated files must not lose or double-count a record either.
    legacy = f"""
{out}/*.json {{
    weekly
    rotate 12
    compress
    delaycompress
    notifempty
    create 0644 {user} {group}
}}
"""
    conf = install_copy(shipped + legacy, world_tmp / "tta-staging")
    state = world_tmp / "logrotate.status"
    calls = world_tmp / "systemctl.calls"

    daemon.start()
    try:
        daemon.wait_records(2)
        assert daemon.health()["write_errors"] == 0
        systemctl_shim(world_tmp / "bin", calls, daemon.proc.pid)
        env = clean_env(PATH=f"{world_tmp / 'bin'}:{os.environ['PATH']}")
        today = out / f"emissions_{datetime.now(UTC):%Y-%m-%d}.json"
        assert log.stat().st_uid == uid and (log.stat().st_mode & 0o777) == 0o640

        # -- first rotation: renamed, not compressed yet (delaycompress) ---------------------
        first_inode = today.stat().st_ino
        r1 = logrotate("-f", "-s", str(state), str(conf), env=env)
        assert r1.returncode == 0, r1.stderr
        assert Path(f"{today}.1").stat().st_ino == first_inode
        assert Path(f"{log}.1").exists()
        assert not list(logdir.rglob("*.gz"))
        seen = daemon.health()["records_written"]
        h = daemon.wait_records(seen + 1)
        # The next record went to a fresh file, and the daemon reopened its log (SIGHUP).
        fresh = lines_of([today])
        assert today.stat().st_ino != first_inode
        assert fresh and fresh[0]["seq"] > max(r["seq"] for r in lines_of([Path(f"{today}.1")]))
        log_now = lines_of([log])
        assert any(e.get("event") == "reloaded" for e in log_now), log_now
        assert log.stat().st_uid == uid and (log.stat().st_mode & 0o777) == 0o640
        assert h["write_errors"] == 0

        # -- second rotation: the previous .1 is compressed ---------------------------------
        r2 = logrotate("-f", "-s", str(state), str(conf), env=env)
        assert r2.returncode == 0, r2.stderr
        assert Path(f"{today}.2.gz").exists() and Path(f"{log}.2.gz").exists()
        assert Path(f"{today}.1").exists() and Path(f"{log}.1").exists()
        seen = daemon.health()["records_written"]
        daemon.wait_records(seen + 1)
    finally:
        rc = daemon.stop()
    assert rc == 0

    # -- nothing lost, nothing torn, nothing twice ------------------------------------------
    ndjson = sorted(out.iterdir())
    assert [p.name for p in ndjson] == [today.name, f"{today.name}.1", f"{today.name}.2.gz"]
    records = lines_of(ndjson)
    seqs = sorted(r["seq"] for r in records)
    assert seqs == list(range(1, len(seqs) + 1)), seqs  # contiguous 1..N across all files
    assert len({r["run_id"] for r in records}) == 1
    last = max(records, key=lambda r: r["seq"])
    assert last["final"] is True  # the SIGTERM record landed too
    for p in ndjson:  # rotated files stay owned by the service account (su)
        assert p.stat().st_uid == uid

    logs = sorted(logdir.glob("carbon.log*"))
    assert [p.name for p in logs] == ["carbon.log", "carbon.log.1", "carbon.log.2.gz"]
    events = lines_of(logs)
    measured = sorted(e["seq"] for e in events if e.get("event") == "measured")
    assert measured == [r["seq"] for r in sorted(records, key=lambda r: r["seq"]) if not r["final"]]
    assert sum(e.get("event") == "reloaded" for e in events) == 2

    # postrotate ran once per rotation (sharedscripts), as root, for the right unit.
    expected_calls = [f"0 is-active --quiet {UNIT}", f"0 kill --signal=HUP --kill-whom=main {UNIT}"] * 2
    assert calls.read_text().splitlines() == expected_calls

    # tta-carbon report counts every record, the compressed ones included, exactly once.
    rep = subprocess.run([TTA_CARBON, "report", "--json", "--dir", str(out)], capture_output=True, text=True,
                         env=clean_env(), timeout=30)
    assert rep.returncode == 0, rep.stderr
    doc = json.loads(rep.stdout)
    assert (doc["files"], doc["duplicates_skipped"], doc["invalid_lines"]) == (3, 0, 0)
    assert doc["overall"]["records"] == len(records)
    assert doc["overall"]["energy_j"]["total"] == pytest.approx(last["totals"]["energy_j"]["total"], rel=1e-9)
    assert doc["overall"]["emissions_g"]["total"] == pytest.approx(last["totals"]["emissions_g"]["total"], rel=1e-9)
