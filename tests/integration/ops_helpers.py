"""Helpers for the operations tests (tests/integration): the real daemon, the real CLI, real users.

Nothing of ours is mocked. The daemon is `tta-carbon run` in a subprocess, the
health check is `tta-carbon check` in a subprocess, file systems, signals and
users are the kernel's.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.daemon import REPO, DaemonProc, clean_env, free_port
from tests.support.daemon import TTA_CARBON as SUPPORT_CLI

# The entry point operators and systemd run (tests/support/daemon.py uses `python -m`).
TTA_CARBON = str(Path(sys.executable).parent / "tta-carbon")


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (real users, mounts)")


def _world_tmp(base: str | None) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="tta-ops-", dir=base))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def world_tmp() -> Iterator[Path]:
    """A temp dir other users can traverse (pytest's tmp_path is 0700)."""
    yield from _world_tmp(None)


@pytest.fixture
def shm_tmp() -> Iterator[Path]:
    """world_tmp in memory (/dev/shm) when there is one: for a whole install (a 250 MB venv),
    which a loaded disk takes tens of seconds to delete."""
    shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    yield from _world_tmp(shm)


@dataclass
class OpsDaemon(DaemonProc):
    """One isolated installation under `workdir` (empty config + env file, its own port), the
    CLI pointed at it (`check`), and optionally its daemon (`start`, from DaemonProc).

    `wrap` prefixes the daemon's command (as_user, read_only); `command` replaces
    `tta-carbon run <settings>` (a daemon from another install; the port must match).
    """

    wrap: list[str] = field(default_factory=list)
    command: list[str] | None = None

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()

    @property
    def output_dir(self) -> Path:
        return Path(self.settings.get("output_dir", self.workdir / "out"))

    @property
    def log_file(self) -> Path:
        return Path(self.settings.get("log_file", self.workdir / "carbon.log"))

    @property
    def config(self) -> Path:
        return self.workdir / "config.yaml"

    def argv(self) -> list[str]:
        return [*self.wrap, *(self.command or super().argv())]

    def cli_args(self, **overrides: str) -> list[str]:
        """`--config ... --env-file ... --set ...`: exactly the daemon's settings, plus overrides."""
        saved = self.settings
        self.settings = {**saved, **overrides}
        try:
            return super().argv()[len(SUPPORT_CLI) + 1:]
        finally:
            self.settings = saved

    def check(self, *extra: str, env: dict[str, str] | None = None, wrap: list[str] | None = None,
              overrides: dict[str, str] | None = None, timeout: float = 30) -> tuple[int, list[str], float]:
        """`tta-carbon check` against this installation: (exit status, stdout lines, seconds)."""
        cmd = [*(wrap or []), TTA_CARBON, "check", *self.cli_args(**(overrides or {})), *extra]
        t0 = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=clean_env(**(env or {})), timeout=timeout,
                              cwd=REPO)
        elapsed = time.monotonic() - t0
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc.returncode, proc.stdout.splitlines(), elapsed

    def start(self, wait_ready: bool = True, timeout: float = 30.0) -> OpsDaemon:
        # A wrapped daemon may run as another user, who cannot write to the root-owned notify
        # socket: wait on /healthz instead (the HTTP server is up by READY time).
        super().start(wait_ready=wait_ready and not self.wrap, timeout=timeout)
        if wait_ready and self.wrap:
            self.wait_for(lambda h: True, "/healthz", timeout)
        return self

    def health(self, timeout: float = 2) -> dict:
        try:
            with urllib.request.urlopen(self.url("/healthz"), timeout=timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:  # 503 carries the same snapshot
            return json.loads(exc.read())

    def wait_for(self, predicate: Callable[[dict], bool], what: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode} waiting for {what}: {self.stderr()}")
            try:
                last = self.health()
                if predicate(last):
                    return last
            except OSError as exc:
                last = exc
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}; last: {last}; {self.stderr()}")

    def wait_records(self, n: int, timeout: float = 30) -> dict:
        """Wait until the daemon reports n records written (its own count, files untouched)."""
        return self.wait_for(lambda h: h["records_written"] >= n, f"{n} records", timeout)

    def wait_codecarbon(self, timeout: float = 30) -> dict:
        """Wait until the default's codecarbon tracker (built after READY) has measured an interval."""
        return self.wait_for(lambda h: h["energy_method"].get("cpu") == "codecarbon_cpu_load",
                             "a codecarbon measurement", timeout)


@pytest.fixture
def daemons() -> Iterator[list[OpsDaemon]]:
    """Append every started OpsDaemon here: all are stopped, whatever the test did."""
    started: list[OpsDaemon] = []
    yield started
    for d in started:
        if d.proc is not None and d.proc.poll() is None:
            d.proc.send_signal(signal.SIGCONT)  # in case a test stopped it
        d.stop()


# -- running as another user ----------------------------------------------------------------

def _hidden_ancestor(path: Path) -> Path | None:
    """The first directory above `path` that other users cannot traverse (e.g. /root, 0700)."""
    for parent in reversed(path.parents):
        if parent != Path("/") and not parent.stat().st_mode & 0o001:
            return parent
    return None


def as_user(user: str, group: str) -> list[str]:
    """A command prefix that runs the rest as `user`, really (setpriv), with our interpreter reachable.

    The venv's interpreter may live under a 0700 home (pyenv under /root here). In a private
    mount namespace a 0755 tmpfs replaces that home and the interpreter tree (and the repo,
    if it sits there too) are bound back at their own paths; nothing outside the namespace changes.
    """
    require_root()
    needed = [Path(sys.base_prefix).resolve(), REPO]
    hidden = {h for h in (_hidden_ancestor(p) for p in needed) if h is not None}
    script = ["set -e", 'stage="$(mktemp -d)"']
    for h in sorted(hidden):
        inside = [p for p in needed if h in p.parents]
        for i, p in enumerate(inside):
            script += [f'mkdir "$stage/{i}"', f'mount --bind "{p}" "$stage/{i}"']
        script.append(f'mount -t tmpfs -o mode=0755,size=1m tmpfs "{h}"')
        for i, p in enumerate(inside):
            script += [f'mkdir -p "{p}"', f'mount --move "$stage/{i}" "{p}"', f'rmdir "$stage/{i}"']
    script.append('rmdir "$stage"')
    script.append(f'exec setpriv --reuid={user} --regid={group} --clear-groups -- "$@"')
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", "\n".join(script), "as_user"]


def read_only(path: Path) -> list[str]:
    """A command prefix that runs the rest with `path` bind-mounted read-only (private namespace)."""
    require_root()
    script = f'set -e\nmount --bind "{path}" "{path}"\nmount -o remount,bind,ro "{path}"\nexec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "read_only"]


class SystemUsers:
    """Real system users/groups, created with useradd/groupadd and removed afterwards.

    Only what this object created is removed: an existing account is used, never deleted.
    """

    def __init__(self) -> None:
        self.created_users: list[str] = []
        self.created_groups: list[str] = []

    def ensure(self, user: str, group: str) -> None:
        require_root()
        try:
            grp.getgrnam(group)
        except KeyError:
            subprocess.run(["groupadd", "--system", group], check=True)
            self.created_groups.append(group)
        try:
            pwd.getpwnam(user)
        except KeyError:
            subprocess.run(["useradd", "--system", "--gid", group, "--no-create-home", "--home-dir", "/nonexistent",
                            "--shell", "/usr/sbin/nologin", user], check=True)
            self.created_users.append(user)

    def remove(self) -> None:
        for user in reversed(self.created_users):
            # --force: a process of another PID namespace may hold the same uid number (not ours).
            subprocess.run(["userdel", "--force", user], check=True)
        for group in reversed(self.created_groups):
            try:
                grp.getgrnam(group)
            except KeyError:
                continue  # userdel removed it with its same-named user (USERGROUPS_ENAB)
            subprocess.run(["groupdel", group], check=True)
        self.created_users.clear()
        self.created_groups.clear()


@pytest.fixture
def tta_users() -> Iterator[tuple[str, str]]:
    """The accounts the shipped files name (deploy/logrotate/tta-staging): tta-user:tta-group.

    Only for checks that need those exact names (logrotate -d on the unmodified file); held
    for one test, and removed unless they existed before.
    """
    users = SystemUsers()
    users.ensure("tta-user", "tta-group")
    try:
        yield "tta-user", "tta-group"
    finally:
        users.remove()


@pytest.fixture
def service_account() -> Iterator[tuple[str, str]]:
    """A real system user + group with a name of its own, for tests that run processes as the
    service account: other sessions on this host may create or use tta-user concurrently."""
    name = f"ttaops{os.getpid()}"
    users = SystemUsers()
    users.ensure(name, name)
    try:
        yield name, name
    finally:
        users.remove()
