"""The operator's systemd side, for real: docs/operations.md's `bash systemd` blocks as written,
and the installed /etc/logrotate.d/tta-staging rotating under the running unit.

Same set-up as test_systemd_service.py (the real installer in a namespaced systemd); its own
manager, so the two modules do not depend on each other's order.
"""

from __future__ import annotations

import json
import gzip
import re
from pathlib import Path


from nsystemd import wait_for
from staged import UNIT, StagedService

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "operations.md"
LOGDIR = "/var/log/tta/staging"
ROTATE_CONF = "/etc/logrotate.d/tta-staging"




def systemd_lines() -> list[str]:
    text = DOC.read_text()
    blocks = re.findall(r"^```bash systemd\n(.*?)^```$", text, re.M | re.S)
    return [ln for body in blocks for ln in body.splitlines() if ln.strip()]


def test_operations_doc_systemd_blocks_run_as_written(svc: StagedService) -> None:
    lines = systemd_lines()
    assert len(lines) >= 10
    for line in lines:
        before_pid = svc.main_pid()
        cur = svc.cursor()
        follow = line.endswith(" -f")
        r = svc.sd.run(["bash", "-c", f"timeout 2 {line}" if follow else line], timeout=60)
        assert r.returncode == (124 if follow else 0), f"{line}\n{r.stdout}\n{r.stderr}"
        verb = line.split()[1]
        state = svc.props("ActiveState")["ActiveState"]
        if verb in ("start", "restart", "reload", "status"):
            assert state == "active", (line, svc.sd.status(UNIT))
        if verb == "stop":
            assert state == "inactive", line
        if verb == "restart":
            assert svc.main_pid() not in (0, before_pid), line
        if verb == "reload":  # a SIGHUP to the same process, which says so
            assert svc.main_pid() == before_pid
            wait_for(lambda c=cur: any(e.get("event") == "reloaded" for e in svc.events(c)), 5, what="reloaded")
        if verb == "status":
            assert "Active: active (running)" in r.stdout and "Status:" in r.stdout, r.stdout
        if line.startswith("journalctl") and "--since" in line and "-p" not in line:
            assert '"event": "started"' in r.stdout, r.stdout[-2000:]


def read_all(svc: StagedService, name: str) -> bytes:
    data = svc.sd.path(f"{LOGDIR}/{name}").read_bytes()
    return gzip.decompress(data) if name.endswith(".gz") else data


def test_installed_logrotate_file_rotates_the_running_unit(svc: StagedService) -> None:
    sd = svc.sd
    assert sd.path(ROTATE_CONF).read_text() == (REPO / "deploy/logrotate/tta-staging").read_text()
    dry = sd.run(["logrotate", "-d", ROTATE_CONF])
    assert dry.returncode == 0 and "error" not in dry.stderr.lower(), dry.stderr

    sd.systemctl("start", UNIT, check=True)
    pid = svc.main_pid()
    svc.wait_records(1)
    uid = next(int(ln.split(":")[2]) for ln in sd.path("/etc/passwd").read_text().splitlines()
               if ln.startswith("tta-user:"))
    for _rotation in (1, 2):
        cur = svc.cursor()
        r = sd.run(["logrotate", "-f", "-s", "/run/logrotate.status", ROTATE_CONF])
        assert r.returncode == 0, r.stderr
        # postrotate: is-active, then SIGHUP to the main process: a reload, not a restart.
        wait_for(lambda c=cur: any(e.get("event") == "reloaded" for e in svc.events(c)), 10, what="reloaded")
        assert svc.main_pid() == pid
        log = sd.path(f"{LOGDIR}/carbon.log")
        wait_for(log.exists, 5, what="carbon.log recreated")
        st = log.stat()
        assert (st.st_uid, st.st_mode & 0o777) == (uid, 0o640)
    names = sorted(p.name for p in sd.path(LOGDIR).glob("carbon.log*"))
    assert names == ["carbon.log", "carbon.log.1", "carbon.log.2.gz"]  # compressed on the second rotation
    events = {n: [json.loads(x) for x in read_all(svc, n).splitlines()] for n in names}  # all whole JSON lines
    # Each file the daemon reopened after a rotation holds its "reloaded" line.
    assert all(any(e.get("event") == "reloaded" for e in events[n]) for n in ("carbon.log", "carbon.log.1"))
