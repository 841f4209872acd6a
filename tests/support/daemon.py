"""Run the real daemon as a subprocess, the way systemd would, for tests.

READY=1 is read from a real AF_UNIX datagram socket passed as NOTIFY_SOCKET,
so tests wait on the same signal systemd waits on, not on sleeps.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
TTA_CARBON = [sys.executable, "-m", "src.service.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment minus anything that would leak host config into the daemon."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CARBON_", "TTA_", "NOTIFY_SOCKET", "WATCHDOG"))}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


@dataclass
class DaemonProc:
    workdir: Path
    interval: float = 1.0
    settings: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    port: int = 0
    notifications: list[str] = field(default_factory=list)

    @property
    def output_dir(self) -> Path:
        return self.workdir / "out"

    @property
    def state_dir(self) -> Path:
        return self.workdir / "state"

    @property
    def log_file(self) -> Path:
        return self.workdir / "carbon.log"

    def argv(self) -> list[str]:
        config = self.workdir / "config.yaml"
        envfile = self.workdir / "environment"
        config.touch()
        envfile.touch()
        args = [*TTA_CARBON, "run", "--config", str(config), "--env-file", str(envfile)]
        base = {
            "measurement_interval": str(self.interval),
            "metrics_port": str(self.port),
            "output_dir": str(self.output_dir),
            "state_dir": str(self.state_dir),
            "log_file": str(self.log_file),
            "country_iso_code": "FRA",
        }
        for key, value in {**base, **self.settings}.items():
            args += ["--set", f"{key}={value}"]
        return args

    def start(self, wait_ready: bool = True, timeout: float = 20.0) -> DaemonProc:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        sock_path = self.workdir / "notify.sock"
        sock_path.unlink(missing_ok=True)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(sock_path))
        self.stderr_path = self.workdir / "stderr.log"
        self._stderr = open(self.stderr_path, "wb")
        env = clean_env(NOTIFY_SOCKET=str(sock_path), **self.env)
        self.proc = subprocess.Popen(self.argv(), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=self._stderr)
        if wait_ready:
            self.wait_for_notification("READY=1", timeout)
        return self

    def drain_notifications(self, timeout: float = 0.0) -> list[str]:
        if self._sock.fileno() == -1:
            return []
        self._sock.settimeout(timeout if timeout > 0 else 0.0001)
        got = []
        try:
            while True:
                got.append(self._sock.recv(65536).decode())
                self._sock.settimeout(0.0001)
        except (TimeoutError, BlockingIOError):
            pass
        self.notifications.extend(got)
        return got

    def wait_for_notification(self, needle: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for msg in self.drain_notifications(0.2):
                if needle in msg:
                    return msg
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode} before {needle!r}: {self.stderr()}")
        raise AssertionError(f"no {needle!r} within {timeout}s; got {self.notifications[-5:]}; {self.stderr()}")

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def records(self) -> list[dict[str, Any]]:
        out = []
        for path in sorted(self.output_dir.glob("emissions_*.json")):
            for line in path.read_text().splitlines():
                out.append(json.loads(line))
        return out

    def wait_for_records(self, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            recs = self.records() if self.output_dir.exists() else []
            if len(recs) >= count:
                return recs
            time.sleep(0.1)
        raise AssertionError(f"fewer than {count} records after {timeout}s; stderr: {self.stderr()}")

    def wait_for_record(self, predicate: Any, what: str, timeout: float = 30.0) -> dict[str, Any]:
        """The first record for which ``predicate(record)`` holds (e.g. the default's first codecarbon one)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for r in self.records() if self.output_dir.exists() else []:
                if predicate(r):
                    return r
            time.sleep(0.1)
        raise AssertionError(f"no record with {what} after {timeout}s; stderr: {self.stderr()}")

    def wait_for_codecarbon(self, timeout: float = 30.0) -> dict[str, Any]:
        """The default builds codecarbon's tracker after READY; its estimate counts until then."""
        return self.wait_for_record(lambda r: r["energy_method"].get("cpu") == "codecarbon_cpu_load",
                                    "a codecarbon measurement", timeout)

    def url(self, path: str = "/metrics") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def send(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Signal, wait, and keep every notification the daemon sent on the way out."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        if self._sock.fileno() != -1:
            self.drain_notifications()
            self._sock.close()
        self._stderr.close()
        return rc


@dataclass
class PrefixedDaemon(DaemonProc):
    """The daemon under a command prefix (unshare ..., strace ...). ``proc`` is the prefix's process:
    the daemon's own pid when the prefix execs, the tracer's when it is strace."""

    prefix: list[str] = field(default_factory=list)

    def argv(self) -> list[str]:
        return [*self.prefix, *super().argv()]

