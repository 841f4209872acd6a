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
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TTA_CARBON = str(Path(sys.executable).parent / "tta-carbon")
OUR_VARS = ("CARBON_", "TTA_", "NOTIFY_SOCKET", "WATCHDOG_")


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without any of our settings (they would override the test's)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(OUR_VARS)}
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (real users, mounts)")


@pytest.fixture
def world_tmp() -> Iterator[Path]:
    """A temp dir other users can traverse (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="tta-ops-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class Setup:
    """One isolated installation: empty config + env file, dirs under `root`."""

    def __init__(self, root: Path, port: int | None = None, interval: float = 1) -> None:
        self.root = root
        self.port = port or free_port()
        self.out = root / "codecarbon"
        self.state = root / "state"
        self.log = root / "carbon.log"
        self.config = root / "config.yaml"
        self.env_file = root / "environment"
        for f in (self.config, self.env_file):
            f.touch()
            f.chmod(0o644)
        self.sets = {
            "measurement_interval": f"{interval:g}", "metrics_port": str(self.port), "output_dir": str(self.out),
            "state_dir": str(self.state), "log_file": str(self.log),
        }

    def args(self, **overrides: str) -> list[str]:
        sets = {**self.sets, **overrides}
        out = ["--config", str(self.config), "--env-file", str(self.env_file)]
        for k, v in sets.items():
            out += ["--set", f"{k}={v}"]
        return out

    def check(self, *extra: str, env: dict[str, str] | None = None, wrap: list[str] | None = None,
              overrides: dict[str, str] | None = None, timeout: float = 30) -> tuple[int, list[str], float]:
        cmd = [*(wrap or []), TTA_CARBON, "check", *self.args(**(overrides or {})), *extra]
        t0 = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env or clean_env(), timeout=timeout, cwd=REPO)
        elapsed = time.monotonic() - t0
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc.returncode, proc.stdout.splitlines(), elapsed


class Daemon:
    """`tta-carbon run` as a subprocess; always stopped by the fixture that made it."""

    def __init__(self, setup: Setup, env: dict[str, str] | None = None, wrap: list[str] | None = None,
                 argv: list[str] | None = None, **overrides: str) -> None:
        """`argv` replaces `tta-carbon run <setup's settings>` (the setup then only supplies the port)."""
        self.setup = setup
        self.stderr_path = setup.root / "daemon.stderr"
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            [*(wrap or []), *(argv or [TTA_CARBON, "run", *setup.args(**overrides)])],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._stderr,
            env=env or clean_env(), cwd=setup.root, start_new_session=True,
        )

    @property
    def pid(self) -> int:
        """The daemon's own pid (under a wrapper: the one process that exec'd into it)."""
        return self.proc.pid

    def health(self, timeout: float = 2) -> dict:
        url = f"http://127.0.0.1:{self.setup.port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return json.loads(exc.read())

    def wait_for(self, predicate, what: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode} while waiting for {what}: "
                                     f"{self.stderr_path.read_text()[-2000:]}")
            try:
                last = self.health()
                if predicate(last):
                    return last
            except OSError as exc:
                last = exc
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}; last: {last}")

    def wait_records(self, n: int, timeout: float = 30) -> dict:
        return self.wait_for(lambda h: h["records_written"] >= n, f"{n} records", timeout)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGCONT)  # in case a test stopped it
                os.kill(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._stderr.close()
        return self.proc.returncode


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    """Register every Daemon here: they are all stopped, whatever the test did."""
    started: list[Daemon] = []
    yield started
    for d in started:
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
            script += [f'mkdir -p "{p}"', f'mount --move "$stage/{i}" "{p}"']
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
