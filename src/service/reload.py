"""Reload outcomes: the daemon publishes each one, `tta-carbon reload` waits for its own.

systemd 252 has no ``Type=notify-reload``, and ``ExecReload=/bin/kill -HUP`` returns
before the daemon has even read the file, so ``systemctl reload`` said "ok" to configs
the daemon then rejected. Instead ExecReload runs ``tta-carbon reload --pid $MAINPID``:

1. read the daemon's status file (``reload-status.json``) and check it was written by
   that pid: a process that never published one (not our daemon, not ready yet, or
   started before this version) is never signalled (SIGHUP would kill most programs);
2. note CLOCK_MONOTONIC, send SIGHUP;
3. wait (bounded, 30 s by default) for a status from that pid for a reload that *began*
   after step 2's clock reading: that reload read the config after the command started,
   so it saw the operator's edit. One that was already running when the signal came is
   not taken for ours; the daemon runs another one for the signal that came meanwhile;
4. exit 0 (applied; a note names changed settings that wait for a restart), 78
   (EX_CONFIG, rejected: the reason on one line) or 75 (EX_TEMPFAIL, no outcome in time).

Where the file lives: ``$RUNTIME_DIRECTORY`` (the unit's ``RuntimeDirectory=``, which
systemd names to the daemon *and* to ExecReload, so finding it needs no config, and a
broken config is the very case to report) or, without systemd, the daemon's state dir.
The file holds the same one-line reason the journal gets (ConfigError texts never carry
secret values) and setting names, never values.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from src.service import logs
from src.service.exit_codes import EX_CONFIG, EX_FAILURE, EX_OK, EX_TEMPFAIL

STATUS_FILE = "reload-status.json"
STATUS_MODE = 0o640
DEFAULT_TIMEOUT_S = 30.0
MAX_REASON = 2000  # characters of the daemon's error shown by the command

APPLIED, REJECTED, STARTED = "applied", "rejected", "started"


def status_path(state_dir: Path, environ: dict[str, str] | None = None) -> Path:
    """``$RUNTIME_DIRECTORY/reload-status.json`` under systemd, else ``<state_dir>/reload-status.json``."""
    env = os.environ if environ is None else environ
    runtime = env.get("RUNTIME_DIRECTORY", "").split(":")[0]  # several RuntimeDirectory= entries: the first
    return (Path(runtime) if runtime else Path(state_dir)) / STATUS_FILE


def monotonic_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)  # system-wide: comparable across processes


@dataclass
class ReloadStatus:
    pid: int
    generation: int  # 0: started, no reload yet; then +1 per reload attempt
    outcome: str  # started | applied | rejected
    began_monotonic_ns: int  # when this reload started (before it read the config)
    error: str = ""
    needs_restart: list[str] = field(default_factory=list)
    at: str = ""

    @classmethod
    def from_json(cls, data: Any) -> ReloadStatus | None:
        try:
            return cls(pid=int(data["pid"]), generation=int(data["generation"]), outcome=str(data["outcome"]),
                       began_monotonic_ns=int(data["began_monotonic_ns"]), error=str(data.get("error", "")),
                       needs_restart=[str(n) for n in data.get("needs_restart", [])], at=str(data.get("at", "")))
        except (KeyError, TypeError, ValueError):
            return None


class StatusPublisher:
    """The daemon's side: one small file, replaced atomically after every reload."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.generation = 0
        self.error = ""  # why the last write failed ("" when it worked)

    def clear(self) -> None:
        """Remove a file left by an earlier process (best effort)."""
        try:
            self.path.unlink()
        except OSError:
            pass

    def publish(self, outcome: str, began_ns: int, error: str = "", needs_restart: list[str] | None = None) -> None:
        status = ReloadStatus(os.getpid(), self.generation, outcome, began_ns, error, list(needs_restart or []),
                              datetime.now(UTC).isoformat(timespec="milliseconds"))
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, STATUS_MODE)
            with os.fdopen(fd, "w") as f:
                json.dump(asdict(status), f)
            os.replace(tmp, self.path)  # readers see the old file or the new one, never half of one
            self.error = ""
        except OSError as exc:
            self.error = f"cannot write reload status {self.path}: {exc.strerror}"
            try:
                tmp.unlink()
            except OSError:
                pass


def read_status(path: Path) -> ReloadStatus | None:
    try:
        return ReloadStatus.from_json(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie (an exited child its parent has not reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return True


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_REASON else text[:MAX_REASON] + "..."


def _fail(message: str, code: int) -> int:
    logs.console(f"tta-carbon: {message}")
    return code


def run_reload(path: Path, pid: int | None, timeout_s: float = DEFAULT_TIMEOUT_S, poll_s: float = 0.05) -> int:
    """Signal the daemon, wait for the outcome of that reload, report it. Never waits past ``timeout_s``."""
    before = read_status(path)
    if pid is None:
        if before is None:
            return _fail(f"reload: no daemon status at {path} (is the daemon running? under systemd use "
                         "`systemctl reload`, or set RUNTIME_DIRECTORY to the unit's runtime directory)", EX_FAILURE)
        pid = before.pid
    if before is None or before.pid != pid:
        return _fail(f"reload: pid {pid} has not published a reload status in {path} (not a running tta-carbon "
                     "daemon, not ready yet, or started by an older version: restart it once); not signalled",
                     EX_FAILURE)
    asked = monotonic_ns()
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        return _fail(f"reload: no process {pid}", EX_FAILURE)
    except PermissionError:
        return _fail(f"reload: not permitted to signal pid {pid} (run as the daemon's user or root)", EX_FAILURE)
    deadline = time.monotonic() + timeout_s
    while True:
        status = read_status(path)
        if (status is not None and status.pid == pid and status.outcome in (APPLIED, REJECTED)
                and status.began_monotonic_ns >= asked):
            break
        if not _alive(pid):
            return _fail(f"reload: daemon pid {pid} exited before reporting the reload", EX_FAILURE)
        if time.monotonic() >= deadline:
            return _fail(f"reload: no reload outcome from pid {pid} within {timeout_s:g}s (busy or hung); it may "
                         "still apply the reload: see its log", EX_TEMPFAIL)
        time.sleep(poll_s)
    if status.outcome == REJECTED:
        return _fail(f"reload rejected: {_one_line(status.error)}; still running with the previous configuration",
                     EX_CONFIG)
    if status.needs_restart:
        logs.console(f"tta-carbon: reload applied (generation {status.generation}); changed settings that take "
                     f"effect only after a restart: {', '.join(status.needs_restart)}",
                     logs.PRIORITY["warning"], sys.stdout)
    else:
        logs.console(f"tta-carbon: reload applied (generation {status.generation})", logs.PRIORITY["info"], sys.stdout)
    return EX_OK
