"""An "installed project" inside a namespaced systemd: the real installer, unit and daemon.

``StagedService`` boots :class:`nsystemd.NSystemd`, runs ``scripts/install_staging.sh``
*inside* it (users, /opt/tta/staging, /etc/tta/staging, the unit; all on the
namespace's private overlays), then adds the documented test-only drop-in
(``TEST_DROPIN``) and shortens the measurement interval in the environment file.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from nsystemd import NSystemd, wait_for

UNIT = "tta-staging-carbon.service"
INSTALL_DIR = "/opt/tta/staging"
OUTPUT_DIR = "/var/log/tta/staging/codecarbon"
CONFIG = "/etc/tta/staging/config.yaml"
ENV_FILE = "/etc/tta/staging/environment"
DROPIN_DIR = f"/etc/systemd/system/{UNIT}.d"
TEST_DROPIN = f"{DROPIN_DIR}/90-test.conf"
GIT = ["git", "-c", "user.name=nsystemd", "-c", "user.email=nsystemd@localhost", "-c", "commit.gpgsign=false"]


def test_dropin(python_home: str) -> str:
    """The ONLY changes the tests make to the shipped unit (documented in docs/systemd.md)."""
    return f"""[Service]
# Test machines' Python lives under /root/.pyenv, which ProtectHome=yes hides
# (ExecStart fails with 203/EXEC). Expose just that interpreter tree, read-only.
ProtectHome=tmpfs
BindReadOnlyPaths={python_home}
# Make watchdog and restart tests take seconds, not minutes.
WatchdogSec=3
RestartSec=1
"""


def snapshot_repo(repo: Path, dest: Path) -> tuple[str, str]:
    """Clone ``repo`` to ``dest`` with its working tree (committed or not) as one commit,
    then add a second, harmless commit. Returns (snapshot, next) commit ids.

    The installer deploys a checkout's HEAD; this way the tests deploy exactly the
    files being tested, and rollback has a real earlier commit to go back to.
    """
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(repo), str(dest)], check=True)
    def listed(*args: str) -> list[bytes]:
        out = subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True).stdout
        return out.split(b"\0")

    # Staged or not, added or deleted (diff against HEAD), plus untracked non-ignored files.
    changed = listed("diff", "--name-only", "-z", "HEAD") + listed("ls-files", "-z", "--others", "--exclude-standard")
    for rel in filter(None, changed):
        src, dst = repo / rel.decode(), dest / rel.decode()
        if src.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
        elif dst.exists():
            dst.unlink()
    subprocess.run([*GIT, "-C", str(dest), "add", "-A"], check=True)
    subprocess.run([*GIT, "-C", str(dest), "commit", "--quiet", "--allow-empty", "-m", "test snapshot"], check=True)
    snap = subprocess.run(["git", "-C", str(dest), "rev-parse", "HEAD"], check=True, capture_output=True, text=True)
    with (dest / "README.md").open("a") as f:
        f.write("\n<!-- a later deploy, for the rollback test -->\n")
    subprocess.run([*GIT, "-C", str(dest), "commit", "--quiet", "-am", "later deploy"], check=True)
    nxt = subprocess.run(["git", "-C", str(dest), "rev-parse", "HEAD"], check=True, capture_output=True, text=True)
    return snap.stdout.strip(), nxt.stdout.strip()


class StagedService:
    """The daemon installed by the real installer under the real unit, in a namespace."""

    def __init__(self, base: Path, repo: Path) -> None:
        self.base = base
        self.src = base / "src"
        self.snapshot, self.next = snapshot_repo(repo, self.src)
        (base / "ns").mkdir()
        self.sd = NSystemd(base / "ns", share=[base])
        self.install_output = ""
        self.pristine: dict[str, str] = {}

    def start_manager(self) -> None:
        sd = self.sd
        sd.start()
        # UV_OFFLINE: the namespace has no network; everything comes from uv's cache.
        r = sd.run(["bash", f"{self.src}/scripts/install_staging.sh", "--src", str(self.src)],
                   env={"UV_OFFLINE": "1"}, timeout=300, check=True)
        self.install_output = r.stdout
        home = sd.run([f"{INSTALL_DIR}/.venv/bin/python", "-c", "import sys; print(sys.base_prefix)"],
                      check=True).stdout.strip()
        sd.write(TEST_DROPIN, test_dropin(home))
        # EnvironmentFile= values beat Environment= in drop-ins, so the short interval
        # goes where an operator would put an override: the environment file. (The shipped
        # file sets nothing config.yaml sets, so the line is added; it outranks
        # config.yaml's measurement_interval.)
        env = sd.path(ENV_FILE).read_text()
        env = re.sub(r"(?m)^CARBON_MEASUREMENT_INTERVAL=.*\n?", "", env)
        sd.write(ENV_FILE, env.rstrip("\n") + "\nCARBON_MEASUREMENT_INTERVAL=1\n", 0o640)
        self.pristine = {p: sd.path(p).read_text() for p in (CONFIG, ENV_FILE)}
        sd.systemctl("daemon-reload", check=True)

    def reset(self) -> None:
        """Stopped, not failed, configs as after install, no extra drop-ins: each test starts here."""
        sd = self.sd
        sd.systemctl("stop", UNIT)
        sd.systemctl("reset-failed", UNIT)
        reload = False
        for path, text in self.pristine.items():
            if sd.path(path).read_text() != text:
                sd.write(path, text, 0o640)
        for extra in sd.path(DROPIN_DIR).glob("9[1-9]-*.conf"):
            extra.unlink()
            reload = True
        if reload:
            sd.systemctl("daemon-reload", check=True)

    # ---- observations -------------------------------------------------------------------

    def records(self) -> list[dict[str, Any]]:
        """Every NDJSON record written so far, in file order."""
        out = []
        for f in sorted(self.sd.path(OUTPUT_DIR).glob("emissions_*.json")):
            out += [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        return out

    def wait_records(self, n: int, run_id: str | None = None, timeout: float = 15) -> list[dict[str, Any]]:
        """Wait for at least ``n`` records (of ``run_id`` when given); return those."""

        def enough() -> list[dict[str, Any]] | None:
            recs = [r for r in self.records() if run_id is None or r["run_id"] == run_id]
            return recs if len(recs) >= n else None

        return wait_for(enough, timeout, interval=0.2, what=f"{n} records")

    def cursor(self) -> str:
        """Journal position now; pass to ``journal(after=...)`` to read only what follows."""
        out = self.sd.journalctl("-n", "1", "--show-cursor", "-o", "cat")
        return out.strip().splitlines()[-1].removeprefix("-- cursor: ")

    def journal(self, after: str | None = None, *, unit_only: bool = True) -> str:
        args = ["-o", "cat"]
        if unit_only:
            args += ["-u", UNIT]
        if after:
            args.append(f"--after-cursor={after}")
        return self.sd.journalctl(*args)

    def events(self, after: str | None = None) -> list[dict[str, Any]]:
        """The daemon's structured (JSON) log lines from the journal."""
        out = []
        for line in self.journal(after).splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out

    def props(self, *names: str) -> dict[str, str]:
        return self.sd.show(UNIT, *names)

    def main_pid(self) -> int:
        return int(self.props("MainPID")["MainPID"])

    def run_id(self) -> str:
        """run_id of the current process, from its "started" log line."""
        pid = self.main_pid()

        def find() -> str | None:
            for e in self.events():
                if e.get("event") == "started" and e.get("pid") == pid:
                    return str(e["run_id"])
            return None

        return wait_for(find, 10, interval=0.1, what="the daemon's started line")

    def metrics(self) -> str:
        r = self.sd.run(["curl", "-sf", "--max-time", "5", "http://127.0.0.1:9880/metrics"], check=True)
        return r.stdout


def exposure(output: str) -> float:
    """The overall exposure figure from ``systemd-analyze security`` output."""
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", output)
    if not m:
        raise AssertionError(f"no exposure score in:\n{output}")
    return float(m.group(1))


