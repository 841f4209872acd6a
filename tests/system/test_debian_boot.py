"""A real Debian 12 deployment, the way an operator does it (issue 13, "A test that boots a real OS").

A bookworm image made with mmdebstrap (``scripts/ci/debian_rootfs.sh``, cached in
/var/cache/tta-staging-carbon-ci) boots with systemd as PID 1 under ``systemd-nspawn -b
--private-network`` (``debian_boot.py``). Inside it, the project is installed by running
docs/deployment.md's own ``bash`` blocks, taken from the doc at test time (so the doc cannot
drift from what is tested), then docs/operations.md's runbook runs against the booted OS:
start, status, reload (a good and a bad config), restart, stop, a forced logrotate, a bad
config at start, an upgrade and both rollback routes, the Debian Prometheus scraping the
daemon and finding the Debian Alertmanager, and the health check.

Substitutions made to the doc's commands (each needs the internet, which the container has
not; everything else runs as written, in a bash with ``-e -o pipefail``, as root):

* "Python 3.12 and uv", Debian 12 block: the source build from python.org (apt-get of the
  build dependencies, curl of the tarball, configure, make, make altinstall) is replaced by
  the host's own Python 3.12 placed in the same ``make altinstall`` layout under
  ``/opt/python3.12`` (bin/python3.12, lib/python3.12, lib/libpython3.12.so*, the last found
  through /etc/ld.so.conf.d/python3.12.conf, so ``ldconfig`` runs instead); the block's last
  line (``/opt/python3.12/bin/python3.12 -c 'import ssl, ...'``) runs as written.
* "uv, on every OS": runs as written; ``pip install 'uv==X'`` installs the wheel that was
  ``pip download``-ed on the host, through the container's /etc/pip.conf
  (``no-index``, ``find-links = /var/cache/tta-wheels``): a pip.conf, not environment
  variables, because the doc's ``sudo`` drops those.
* ``uv sync --frozen`` (in the installer, the upgrade and the rollbacks) uses a uv cache
  filled on the host from the same uv.lock by the same uv version (/root/.cache/uv), with
  ``offline = true`` in /etc/uv/uv.toml.
* ``<repository-url>``: /srv/tta-staging-carbon.git, a bare copy of this checkout's HEAD
  (branch main) plus one more commit (branch next, adding RELEASE-NEXT), the upgrade;
  ``<release>`` and the rollback's ``<previous-commit-hash>`` / ``<commit>``: HEAD's commit
  id; operations.md's upgrade ``<commit>``: that next commit.
* "Steps": of the two ``UV_PYTHON=... scripts/install_staging.sh`` lines the Debian 12 one
  runs, as the doc says ("one of the two install lines").
"""

from __future__ import annotations

import json
import re
import shlex
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from debian_boot import DebianBoot, base_rootfs, git_bare_release, missing_prerequisites, payload_layer
from nsystemd import wait_for

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "docs" / "deployment.md"
OPS = REPO / "docs" / "operations.md"
UNIT = "tta-staging-carbon"
CODE = "/opt/tta/staging"
SRC = "/usr/local/src/tta-staging-carbon"
CONFIG = "/etc/tta/staging/config.yaml"
RECORDS = "/var/log/tta/staging/codecarbon"
LOG = "/var/log/tta/staging/carbon.log"
GIT_URL = "/srv/tta-staging-carbon.git"
FENCE = re.compile(r"^```(\S*)[^\n]*\n(.*?)^```$", re.M | re.S)


# ---- the doc's blocks ------------------------------------------------------------------

def section(doc: Path, heading: str) -> str:
    """The text under ``heading`` (e.g. "### Steps") up to the next heading of its level or above."""
    level = len(heading.split()[0])
    lines = doc.read_text().splitlines(keepends=True)
    start = lines.index(heading + "\n")
    fenced = False
    for i in range(start + 1, len(lines)):
        if lines[i].startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(rf"#{{1,{level}}} ", lines[i]):
            return "".join(lines[start:i])
    return "".join(lines[start:])


def bash_blocks(doc: Path, heading: str) -> list[str]:
    blocks = [body for lang, body in FENCE.findall(section(doc, heading)) if lang == "bash"]
    assert blocks, f"no ```bash block under {heading!r} in {doc.name}"
    return blocks


def block_with(doc: Path, heading: str, needle: str) -> str:
    found = [b for b in bash_blocks(doc, heading) if needle in b]
    assert len(found) == 1, f"{doc.name} {heading!r}: expected one block with {needle!r}, found {len(found)}"
    return found[0]


def ops_line(heading: str, startswith: str) -> str:
    """One command line of operations.md, as written."""
    lines = [ln for b in bash_blocks(OPS, heading) for ln in b.splitlines() if ln.startswith(startswith)]
    assert lines, f"operations.md {heading!r}: no line starting with {startswith!r}"
    return lines[0]


def python_block() -> str:
    """Debian 12's Python: the source build substituted (module docstring), its check as written."""
    block = block_with(DEPLOY, "### Python 3.12 and uv", "--prefix=/opt/python3.12")
    lines = [ln for ln in block.splitlines() if ln.strip()]
    assert "make altinstall" in block and lines[-1].startswith("/opt/python3.12/bin/python3.12 -c "), block
    return "ldconfig\n" + lines[-1]


def uv_block() -> str:
    return block_with(DEPLOY, "### Python 3.12 and uv", "python3 -m venv /opt/uv")


def release_block(release: str) -> str:
    block = block_with(DEPLOY, "### The release to deploy", "<repository-url>")
    assert "<release>" in block
    return block.replace("<repository-url>", GIT_URL).replace("<release>", release)


def steps_block() -> str:
    block = block_with(DEPLOY, "### Steps", "scripts/install_staging.sh")
    debian = [ln for ln in block.splitlines() if "install_staging.sh" in ln and "# Debian 12" in ln]
    assert len(debian) == 1, block
    return "\n".join(ln for ln in block.splitlines() if "install_staging.sh" not in ln or ln in debian)


def health_command() -> str:
    block = block_with(DEPLOY, "### 4. Health Check", "health_check_carbon.py")
    return next(ln for ln in block.splitlines() if ln.strip() and not ln.startswith("#"))


def prometheus_block() -> str:
    return block_with(DEPLOY, "### Prometheus and Alertmanager", "prometheus-alertmanager")


def rollback_by_hand_block(previous: str) -> str:
    block = block_with(DEPLOY, "## Rollback Procedure", "<previous-commit-hash>")
    return block.replace("<previous-commit-hash>", previous)


def rollback_script_block(commit: str) -> str:
    block = block_with(DEPLOY, "## Rollback Procedure", "scripts/rollback_staging.sh")
    return block.replace("<commit>", commit)


def upgrade_blocks(commit: str) -> str:
    """operations.md "Upgrade": its blocks in order (the working directory carries over)."""
    return "\n".join(bash_blocks(OPS, "## Upgrade")).replace("<commit>", commit)


def scrape_job() -> str:
    cfg = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    jobs = [j["job_name"] for j in cfg["scrape_configs"]
            if any("127.0.0.1:9880" in t for sc in j.get("static_configs", []) for t in sc["targets"])]
    assert len(jobs) == 1, jobs
    return jobs[0]


# ---- the booted OS -----------------------------------------------------------------------

class Box:
    """The booted container plus what the tests share (commits, counts)."""

    def __init__(self, boot: DebianBoot, release: str, nxt: str) -> None:
        self.boot, self.release, self.next = boot, release, nxt
        self.stops = 0

    def sh(self, script: str, timeout: float = 300, cwd: str = "/root") -> tuple[int, str, str]:
        r = self.boot.sh(f"cd {shlex.quote(cwd)}\n{script}", timeout=timeout)
        return r.returncode, r.stdout, r.stderr

    def ok(self, script: str, timeout: float = 300, cwd: str = "/root") -> str:
        rc, out, err = self.sh(script, timeout, cwd)
        assert rc == 0, f"exit {rc}:\n{script}\n--- stdout\n{out[-4000:]}\n--- stderr\n{err[-4000:]}"
        return out

    def prop(self, name: str, unit: str = UNIT) -> str:
        return self.ok(f"systemctl show -p {name} --value {unit}").strip()

    def cursor(self) -> str:
        return json.loads(self.ok("journalctl -n 1 -o json")).get("__CURSOR", "")

    def journal(self, cursor: str, *args: str) -> list[dict]:
        out = self.ok(f"journalctl -u {UNIT} -o json --after-cursor={shlex.quote(cursor)} {' '.join(args)}")
        return [json.loads(ln) for ln in out.splitlines() if ln.strip()]

    def events(self, cursor: str) -> list[dict]:
        """The daemon's JSON log lines in the journal since ``cursor``."""
        found = []
        for e in self.journal(cursor):
            msg = e.get("MESSAGE")
            if e.get("SYSLOG_IDENTIFIER") == "tta-carbon" and isinstance(msg, str) and msg.startswith("{"):
                try:
                    found.append(json.loads(msg))
                except ValueError:
                    pass
        return found

    def records(self) -> list[dict]:
        out = self.ok(f"cat {RECORDS}/emissions_*.json")
        return [json.loads(ln) for ln in out.splitlines() if ln.strip()]

    def wait_record(self, after_seq: int, timeout: float = 40, **match: object) -> dict:
        def newer() -> dict | None:
            for r in self.records():
                if r["seq"] > after_seq and all(r.get(k) == v for k, v in match.items()):
                    return r
            return None
        return wait_for(newer, timeout, 1.0, what=f"a record after seq {after_seq} with {match}")

    def last_seq(self) -> int:
        return max((r["seq"] for r in self.records()), default=0)

    def health_until_measured(self, timeout: float = 60) -> str:
        """The guide's health check, retried until it passes *with* a measurement recorded."""
        cmd = health_command()
        deadline = time.monotonic() + timeout
        while True:
            rc, out, err = self.sh(cmd, cwd=CODE, timeout=60)
            if rc == 0 and "✅ Last measurement:" in out:
                return out
            if time.monotonic() > deadline:
                raise AssertionError(f"{cmd} never passed with a measurement (last exit {rc}):\n{out}\n{err}")
            time.sleep(2)

    def diagnostics(self) -> str:
        parts = []
        for cmd in (f"systemctl status {UNIT} --no-pager -l", f"journalctl -u {UNIT} -n 50 --no-pager",
                    "systemctl --failed --no-pager"):
            try:
                r = self.boot.sh(cmd + " 2>&1 || true", timeout=30)
                parts.append(f"$ {cmd}\n{r.stdout}")
            except Exception as exc:  # the container itself may be gone
                parts.append(f"$ {cmd}\n(failed: {exc})")
        return "\n".join(parts)

    @contextmanager
    def explained(self) -> Iterator[None]:
        """On failure, add the unit's status and journal from inside to the message."""
        try:
            yield
        except Exception as exc:
            raise AssertionError(f"{exc}\n\n===== inside the container =====\n{self.diagnostics()}") from exc


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    why = missing_prerequisites()
    if why:
        pytest.skip(f"Debian boot unavailable: {why}")
    uv_version = re.search(r"pip install --quiet 'uv==([0-9.]+)'", uv_block()).group(1)
    work = tmp_path_factory.mktemp("debian_boot")
    boot = DebianBoot(work, [payload_layer(uv_version), base_rootfs()])
    release, nxt = git_bare_release(REPO, boot.upper / GIT_URL.lstrip("/"))
    try:
        boot.start()
        yield Box(boot, release, nxt)
    finally:
        boot.stop()


# ---- the deployment ----------------------------------------------------------------------

def test_install_by_the_guide(box: Box) -> None:
    with box.explained():
        assert box.ok(python_block()).strip().endswith("ok")
        assert "uv 0." in box.ok(uv_block())
        out = box.ok(release_block(box.release))
        assert box.release[:7] in out  # git describe --tags --always: the release
        out = box.ok(steps_block(), timeout=600)
        assert "venv: synced" in out, out
        assert box.prop("ActiveState") == "active"
        assert box.ok(f"systemctl is-enabled {UNIT} tta-staging-carbon-prune.timer").split() == ["enabled"] * 2
        assert box.ok(f"git -C {CODE} rev-parse HEAD").strip() == box.release
        assert box.ok(f"realpath {CODE}/.venv/bin/python").strip() == "/opt/python3.12/bin/python3.12"
        # Root's and writable by root only (the guide's checklist).
        assert box.ok(f"find {CODE} ! -user root -o ! -type l -perm /022") == ""
        out = box.health_until_measured()
        assert "✅ Daemon: /metrics reachable" in out and "❌" not in out, out


def test_prometheus_and_alertmanager_block(box: Box) -> None:
    with box.explained():
        out = box.ok(prometheus_block(), timeout=300, cwd="/root")
        assert "SUCCESS" in out, out
        for svc in ("prometheus", "prometheus-alertmanager"):
            assert box.prop("ActiveState", svc) == "active", svc
        # Checked again (after Prometheus has had time to scrape) in test_prometheus_scrapes_the_daemon.


def test_status_and_restart_with_a_changed_interval(box: Box) -> None:
    with box.explained():
        out = box.ok(ops_line("## Status", "systemctl status"))
        assert "Active: active (running)" in out and "Status:" in out, out
        before = box.prop("MainPID")
        # measurement_interval needs a restart (operations.md, Reload): the runbook's restart.
        box.ok(f"sed -i 's/^measurement_interval: .*/measurement_interval: 5/' {CONFIG}")
        seq = box.last_seq()
        box.ok(ops_line("## Start, stop, restart", "systemctl restart"))
        box.stops += 1
        assert box.prop("ActiveState") == "active"
        pid = box.prop("MainPID")
        assert pid not in ("0", before)
        rec = box.wait_record(seq)   # the final record of the old process
        assert rec["final"] is True, rec
        a = box.wait_record(rec["seq"])
        b = box.wait_record(a["seq"])
        assert 3 <= b["duration_s"] <= 8, b  # the new interval is in force


def test_reload_applies_a_good_change(box: Box) -> None:
    with box.explained():
        pid = box.prop("MainPID")
        cur = box.cursor()
        box.ok(f"sed -i 's/^project_name: .*/project_name: TTA-Staging-Boot/' {CONFIG}")
        seq = box.last_seq()
        rc, out, err = box.sh(ops_line("## Reload", "systemctl reload"))
        assert rc == 0, err
        assert box.prop("MainPID") == pid and box.prop("ActiveState") == "active"
        assert any(e.get("event") == "reloaded" for e in box.events(cur)), box.events(cur)
        box.wait_record(seq, project="TTA-Staging-Boot")


def test_reload_rejects_a_bad_config_and_keeps_running(box: Box) -> None:
    with box.explained():
        pid = box.prop("MainPID")
        good = box.boot.read(CONFIG)
        cur = box.cursor()
        box.boot.write(CONFIG, good.replace("project_name: TTA-Staging-Boot", "project_name: [unclosed"))
        rc, out, err = box.sh(ops_line("## Reload", "systemctl reload"))
        assert rc != 0, "systemctl reload accepted a config with a YAML syntax error"
        assert f"Job for {UNIT}.service failed" in err, err
        errors = [e["MESSAGE"] for e in box.journal(cur, "-p", "err")]
        assert any("reload rejected" in m and "YAML syntax error" in m and CONFIG in m for m in errors), errors
        status = box.ok(f"systemctl status {UNIT} --no-pager -l || true")
        assert "status=78" in status and "reload rejected" in status, status
        # Still running, same process, old settings: the next record has the old project name.
        assert box.prop("MainPID") == pid and box.prop("ActiveState") == "active"
        box.wait_record(box.last_seq(), project="TTA-Staging-Boot")
        box.boot.write(CONFIG, good)
        box.ok(ops_line("## Reload", "systemctl reload"))


def test_logrotate_loses_no_record(box: Box) -> None:
    with box.explained():
        rotate = next(ln for b in bash_blocks(OPS, "## Log rotation") for ln in b.splitlines()
                      if ln.startswith("logrotate -f "))
        pid = box.prop("MainPID")
        cur = box.cursor()
        seq = box.last_seq()
        lines_before = box.ok(f"wc -l < {LOG}").strip()
        box.ok(rotate)
        wait_for(lambda: any(e.get("event") == "reloaded" for e in box.events(cur)), 15, 0.5,
                 what="the daemon reopening its log (postrotate SIGHUP)")
        assert box.prop("MainPID") == pid
        assert int(box.ok(f"wc -l < {LOG}.1").strip()) >= int(lines_before)
        wait_for(lambda: box.sh(f"test -s {LOG}")[0] == 0, 15, 0.5, what="a new carbon.log")
        assert box.ok(f"stat -c '%U %a' {LOG}").split() == ["tta-user", "640"]
        box.wait_record(box.wait_record(seq)["seq"])
        assert_seq_contiguous(box)


def test_stop_then_a_bad_config_fails_the_start_with_one_line(box: Box) -> None:
    with box.explained():
        seq = box.last_seq()
        box.ok(ops_line("## Start, stop, restart", "systemctl stop"))
        box.stops += 1
        assert box.prop("ActiveState") == "inactive"
        final = box.wait_record(seq, timeout=5)
        assert final["final"] is True, final
        good = box.boot.read(CONFIG)
        box.boot.write(CONFIG, good.replace("measurement_interval: 5", "measurement_interval: 0"))
        cur = box.cursor()
        rc, out, err = box.sh(ops_line("## Start, stop, restart", "systemctl start"))
        assert rc != 0, "systemctl start succeeded with measurement_interval: 0"
        assert box.prop("ActiveState") == "failed" and box.prop("ExecMainStatus") == "78"
        def reason() -> list[str]:  # journald gets the process's stderr a moment later
            return [e["MESSAGE"] for e in box.journal(cur)
                    if e.get("SYSLOG_IDENTIFIER") == "tta-carbon" and int(e.get("PRIORITY", 6)) <= 3]
        try:
            ours = wait_for(reason, 10, 0.5, what="the reason at priority err")
        except TimeoutError:
            raise AssertionError("no err-priority line from tta-carbon; all lines since the start: " + repr(
                [(e.get("PRIORITY"), e.get("SYSLOG_IDENTIFIER"), e["MESSAGE"]) for e in box.journal(cur)])) from None
        assert len(ours) == 1 and "measurement_interval" in ours[0] and "\n" not in ours[0], ours
        # The runbook's own command shows it.
        shown = box.ok(ops_line("## Logs", "journalctl -u tta-staging-carbon -p err"))
        assert ours[0][:60] in shown, shown
        assert box.last_seq() == final["seq"]  # nothing measured by the failed start
        box.boot.write(CONFIG, good)
        box.ok(ops_line("## Start, stop, restart", "systemctl start"))
        assert box.prop("ActiveState") == "active"
        box.wait_record(final["seq"])


def test_prometheus_scrapes_the_daemon(box: Box) -> None:
    job = scrape_job()

    def query(q: str) -> list:
        out = box.ok(f"curl -fsS --get http://localhost:9090/api/v1/query --data-urlencode {shlex.quote('query=' + q)}")
        return json.loads(out)["data"]["result"]

    with box.explained():
        up = wait_for(lambda: [r for r in query(f'up{{job="{job}"}}') if r["value"][1] == "1"], 90, 2,
                      what=f'up{{job="{job}"}} == 1 in Prometheus')
        assert up[0]["metric"]["instance"] == "127.0.0.1:9880", up
        series = query(f'{{__name__=~"tta_carbon_.+",job="{job}"}}')
        names = {s["metric"]["__name__"] for s in series}
        assert "tta_carbon_measurements_total" in names, names
        ams = json.loads(box.ok("curl -fsS http://localhost:9090/api/v1/alertmanagers"))
        active = [a["url"] for a in ams["data"]["activeAlertmanagers"]]
        assert active == ["http://localhost:9093/api/v2/alerts"], ams
        assert box.ok("curl -fsS http://localhost:9093/-/ready").strip() != ""


def test_upgrade_then_rollback_by_hand(box: Box) -> None:
    with box.explained():
        out = box.ok(upgrade_blocks(box.next), timeout=600)
        box.stops += 1
        assert box.ok(f"git -C {CODE} rev-parse HEAD").strip() == box.next, out
        assert box.sh(f"test -f {CODE}/RELEASE-NEXT")[0] == 0
        assert box.prop("ActiveState") == "active"
        box.ok(rollback_by_hand_block(box.release), timeout=600, cwd=SRC)
        box.stops += 1
        assert box.ok(f"git -C {CODE} rev-parse HEAD").strip() == box.release
        assert box.sh(f"test -e {CODE}/RELEASE-NEXT")[0] != 0
        assert box.prop("ActiveState") == "active"
        assert box.ok(f"find {CODE} ! -user root -o ! -type l -perm /022") == ""
        box.health_until_measured()


def test_upgrade_then_rollback_script(box: Box) -> None:
    with box.explained():
        box.ok(upgrade_blocks(box.next), timeout=600)
        box.stops += 1
        assert box.ok(f"git -C {CODE} rev-parse HEAD").strip() == box.next
        out = box.ok(rollback_script_block(box.release), timeout=600, cwd=SRC)
        box.stops += 1
        assert "health check OK and a measurement was recorded" in out, out
        assert box.ok(f"git -C {CODE} rev-parse HEAD").strip() == box.release
        assert box.prop("ActiveState") == "active"


def assert_seq_contiguous(box: Box) -> None:
    seqs = sorted(r["seq"] for r in box.records())
    assert seqs == list(range(1, len(seqs) + 1)), f"records lost or doubled: {seqs}"


def test_records_contiguous_across_everything(box: Box) -> None:
    with box.explained():
        box.health_until_measured()
        recs = box.records()
        assert_seq_contiguous(box)
        # One final record per stop (restart, stop, upgrade, rollback), none lost.
        assert sum(1 for r in recs if r["final"]) == box.stops, [(r["seq"], r["final"]) for r in recs]
        assert len({r["run_id"] for r in recs}) == box.stops + 1
