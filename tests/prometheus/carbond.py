"""Run the real tta-carbon daemon as a subprocess for Prometheus tests.

The command line follows docs/architecture.md:

    tta-carbon run --local --set measurement_interval=1 --set metrics_port=<port>
        --set output_dir=<dir>/out --set state_dir=<dir>/state --set log_file=<dir>/carbon.log

with TTA_CONFIG / TTA_ENV_FILE pointing at files that do not exist (so nothing
from /etc is read) and every CARBON_* / TTA_* variable of the caller removed.
"""
from __future__ import annotations

import glob
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from promlib import REPO
from promserver import wait_for


def daemon_command() -> list[str] | None:
    """The tta-carbon console script of this venv, else `uv run tta-carbon`;
    None when the daemon's CLI is not in the tree yet."""
    if not (REPO / "src" / "service" / "cli.py").exists():
        return None
    script = Path(sys.executable).parent / "tta-carbon"
    if script.exists() and importlib.util.find_spec("src.service.cli") is not None:
        return [str(script)]
    uv = shutil.which("uv")
    return [uv, "run", "--quiet", "tta-carbon"] if uv else None


class DaemonError(RuntimeError):
    pass


class CarbonDaemon:
    def __init__(self, workdir: Path, port: int, *, interval: int = 1, extra_sets: dict[str, str] | None = None,
                 env: dict[str, str] | None = None, name: str = "carbon") -> None:
        self.name = name
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port
        self.interval = interval
        self.output_dir = self.workdir / "out"
        self.state_dir = self.workdir / "state"
        self.log_file = self.workdir / "carbon.log"
        self.stdout_path = self.workdir / "daemon.stdout"
        sets = {
            "measurement_interval": str(interval),
            "metrics_port": str(port),
            "output_dir": str(self.output_dir),
            "state_dir": str(self.state_dir),
            "log_file": str(self.log_file),
            **(extra_sets or {}),
        }
        base = daemon_command()
        if base is None:
            raise DaemonError("tta-carbon CLI not available (src/service/cli.py missing)")
        self.cmd = [*base, "run", "--local"]
        for k, v in sets.items():
            self.cmd += ["--set", f"{k}={v}"]
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("CARBON_", "TTA_"))}
        self.env.update({
            "TTA_CONFIG": str(self.workdir / "no-such-config.yaml"),
            "TTA_ENV_FILE": str(self.workdir / "no-such-environment"),
            **(env or {}),
        })
        self.env.pop("NOTIFY_SOCKET", None)
        self.proc: subprocess.Popen | None = None
        self._out = None
        self.returncode: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    def start(self, timeout: float = 30) -> "CarbonDaemon":
        self._out = open(self.stdout_path, "wb")
        self.proc = subprocess.Popen(self.cmd, stdout=self._out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=self.env, cwd=REPO, start_new_session=True)
        self.started_at = time.time()
        try:
            wait_for(self._serving, timeout, 0.2, f"{self.name} /metrics on {self.port}")
        except TimeoutError as exc:
            self.kill()
            raise DaemonError(f"{self.describe()}\n{exc}") from exc
        return self

    def _serving(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            rc = None if self.proc is None else self.proc.returncode
            raise DaemonError(f"{self.name} exited early with rc={rc}\n{self.describe()}")
        try:
            with urllib.request.urlopen(self.url, timeout=2) as r:
                return r.status == 200 and b"tta_carbon_" in r.read()
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def metrics_text(self) -> str:
        with urllib.request.urlopen(self.url, timeout=5) as r:
            return r.read().decode()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int | None:
        """Signal the daemon's process (not its group: a SIGTERM to the group
        would also hit `uv run`'s child twice) and wait. SIGKILL on timeout."""
        proc = self.proc
        if proc is None:
            return self.returncode
        if proc.poll() is None:
            try:
                proc.send_signal(sig)
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        self.returncode = proc.returncode
        self.proc = None
        if self._out is not None:
            self._out.close()
            self._out = None
        return self.returncode

    def kill(self) -> int | None:
        """SIGKILL the whole process group (simulated crash)."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return self.stop(timeout=10)

    def output(self) -> str:
        try:
            return self.stdout_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def describe(self) -> str:
        return f"command: {' '.join(self.cmd)}\noutput (tail):\n{self.output()}"

    def record_files(self) -> list[Path]:
        return sorted(Path(p) for p in glob.glob(str(self.output_dir / "emissions_*.json")))

    def records(self) -> list[dict]:
        """Every NDJSON record, in file (= time) order."""
        out = []
        for path in self.record_files():
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if line.strip():
                    try:
                        out.append(json.loads(line))
                    except ValueError as exc:
                        raise AssertionError(f"{path}:{n}: not JSON: {line[:200]!r}") from exc
        return out
