"""Boot a real systemd 252 as PID 1 inside fresh namespaces, for system tests.

This follows the safe recipe in the project's environment notes (a careless first
try let the distribution's sysinit.target run ``systemd-tmpfiles --remove`` and
wiped the host's /tmp). What keeps the host safe, in order:

* The starter moves itself into its own cgroups (v1 ``name=systemd`` and the
  unified v2 hierarchy) before ``unshare --cgroup``, so the namespaced systemd only
  ever sees and creates cgroups below ``nsystemd-<id>``.
* ``unshare --pid --fork --mount --uts --ipc --net --cgroup --propagation private
  --kill-child``: nothing mounted inside propagates out, the manager is PID 1 of
  its own pid namespace (killing it kills everything in it), and ``--net`` gives it
  a private loopback (port 9880 never clashes with the host).
* The INNER script (``set -eu``: any failed mount aborts *before* systemd starts)
  mounts private copies of everything systemd or the units write to: proc, /run,
  /tmp (the test's work dir is bound back in), /var/tmp, /var/log, /var/lib, /dev,
  copy-on-write overlays of /etc, /opt and /var (so ``useradd``, the installer and
  the manager's machine-id never reach the host's files), an empty
  /etc/systemd/system, a read-only /sys and /proc/sys (sysctls are host-global),
  and fresh cgroup mounts on a tmpfs at /sys/fs/cgroup.
* The manager only sees a unit directory holding stub targets with
  ``DefaultDependencies=no``, our own target, copies of the journald units and the
  units under test; generators are disabled. No tmpfiles, no sysinit, no
  multi-user.target from the distribution can run.
* Teardown (always, in ``finally``/``__exit__``): SIGKILL the manager, wait for the
  starter, then rmdir our cgroups depth-first.

Use it as a context manager or through the ``nsystemd`` fixture in conftest.py::

    with NSystemd(tmp_path, units={"toy.service": TEXT}) as sd:
        sd.systemctl("start", "toy.service", check=True)
        sd.wait_active("toy.service")
        print(sd.journalctl("-u", "toy.service"))
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

CGROUP_V1 = Path("/sys/fs/cgroup/systemd")
CGROUP_V2 = Path("/sys/fs/cgroup/unified")
SYSTEMD = Path("/lib/systemd/systemd")
DISTRO_UNITS = Path("/lib/systemd/system")
JOURNALD_UNITS = (
    "systemd-journald.service",
    "systemd-journald.socket",
    "systemd-journald-dev-log.socket",
)
STUB_TARGETS = ("sysinit", "basic", "sockets", "paths", "timers", "multi-user", "shutdown")
TARGET = "nsystemd.target"
PREFIX = "nsystemd-"
# Directories that get a copy-on-write overlay (tmpfs upper) inside the namespace:
# anything written there (users, /etc/tta, /opt/tta, the installed unit) stays inside.
DEFAULT_OVERLAYS = ("/etc", "/opt", "/var")
# Host paths under these are hidden by a fresh tmpfs inside; a work dir there would vanish.
HIDDEN = ("/run", "/var/tmp", "/var/log", "/var/lib", "/dev", "/sys")
# Environment for commands run inside: nothing from pytest's own env leaks in
# (NOTIFY_SOCKET, VIRTUAL_ENV, ...), and systemctl/journalctl never page or colour.
INNER_ENV = {
    "PATH": "/root/.pyenv/shims:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "TERM": "dumb",
    "SYSTEMD_PAGER": "cat",
    "SYSTEMD_COLORS": "0",
    "SYSTEMD_LOG_COLOR": "0",
    "PYTHONDONTWRITEBYTECODE": "1",
}

T = TypeVar("T")


class NSystemdError(RuntimeError):
    """The namespaced manager failed to boot or a command inside it failed."""


def missing_prerequisites() -> str | None:
    """Why this machine cannot boot a namespaced systemd, or None when it can."""
    if os.geteuid() != 0:
        return "needs root (mount, unshare and cgroup writes)"
    for tool in ("unshare", "nsenter", "mount", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} not found"
    if not SYSTEMD.exists():
        return f"{SYSTEMD} not found (systemd not installed)"
    if not (CGROUP_V1 / "cgroup.procs").exists() or not (CGROUP_V2 / "cgroup.procs").exists():
        return "needs the hybrid cgroup layout (/sys/fs/cgroup/systemd and /sys/fs/cgroup/unified)"
    return None


def wait_for(predicate: Callable[[], T], timeout: float, interval: float = 0.05, what: str = "condition") -> T:
    """Poll ``predicate`` until it returns something truthy; raise TimeoutError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


def _stub_target(name: str) -> str:
    return f"[Unit]\nDescription=nsystemd stub {name}\nDefaultDependencies=no\n"


def remove_cgroup_tree(root: Path, timeout: float = 5.0) -> None:
    """rmdir a cgroup and all its children, deepest first.

    cgroup directories can only be removed once empty of processes; right after a
    SIGKILL the kernel may still be tearing tasks down, so retry until ``timeout``.
    """
    deadline = time.monotonic() + timeout
    while root.exists():
        dirs = sorted((Path(d) for d, _, _ in os.walk(root)), key=lambda p: len(p.parts), reverse=True)
        busy = False
        for d in dirs:
            try:
                d.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                busy = True
        if not busy:
            return
        if time.monotonic() > deadline:
            raise NSystemdError(f"could not remove cgroup {root} (still busy)")
        time.sleep(0.05)


def make_own_cgroups(name: str, made: list[Path]) -> str:
    """Create ``name`` below this process's cgroup in every hierarchy, appending each to ``made``
    (as it goes, so a failure half-way can still be cleaned up); return the shell command that
    moves the shell running it (``$$``) into all of them."""
    for parent in current_cgroup_dirs():
        cg = parent / name
        cg.mkdir()
        made.append(cg)
        if (parent / "cpuset.cpus").exists():
            # A v1 cpuset child starts empty and refuses tasks until it has CPUs/mems.
            for f in ("cpuset.cpus", "cpuset.mems"):
                (cg / f).write_text((parent / f).read_text())
    return " && ".join(f"echo $$ > {shlex.quote(str(cg))}/cgroup.procs" for cg in made)


def current_cgroup_dirs() -> list[Path]:
    """The directory of this process's own cgroup in every mounted hierarchy (v1 and v2).

    Why all of them and not only ``name=systemd`` + unified (the notes' recipe): in
    hybrid mode the namespaced systemd also mounts the v1 ``devices``, ``memory``,
    ``pids`` and ``blkio`` controllers and creates ``init.scope``/``system.slice`` at
    its cgroup-namespace root there. Unless the starter owns a cgroup in those
    hierarchies too, that root is the *host's* cgroup and the manager writes into it.
    """
    mine: dict[frozenset[str], str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        mine[frozenset(ctrls.split(",")) if ctrls else frozenset()] = path
    dirs = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        pre, post = line.split(" - ", 1)
        fields, (fstype, _src, opts) = pre.split(), post.split()[:3]
        root, mountpoint = fields[3], fields[4]
        if fstype == "cgroup2":
            key: frozenset[str] = frozenset()
        elif fstype == "cgroup":
            key = frozenset(o for o in opts.split(",") if o in _V1_CONTROLLERS or o.startswith("name="))
        else:
            continue
        if key not in mine or not mountpoint.startswith("/sys/fs/cgroup/"):
            continue
        rel = os.path.relpath(mine[key], root)
        if rel.startswith(".."):
            continue  # our cgroup is not visible through this mount
        dirs.append(Path(os.path.normpath(Path(mountpoint) / rel)))
    return dirs


_V1_CONTROLLERS = {
    "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "net_cls", "net_prio",
    "blkio", "perf_event", "hugetlb", "pids", "rdma", "misc",
}


def reap_stale_cgroups() -> None:
    """Remove empty ``nsystemd-*`` cgroups left by a test run that was itself SIGKILLed.

    rmdir only succeeds on cgroups without processes, so a live run is never harmed.
    """
    for parent in current_cgroup_dirs():
        for d in parent.glob(PREFIX + "*"):
            try:
                remove_cgroup_tree(d, timeout=0)
            except NSystemdError:
                pass


class NSystemd:
    """A systemd manager running as PID 1 in private namespaces.

    ``workdir`` must be a host directory the test owns (pytest's ``tmp_path``); it is
    visible at the same path inside. ``units`` maps unit file names (drop-in dirs
    allowed: ``"x.service.d/t.conf"``) to their text; they go into the manager's
    unit directory together with the stubs. Units installed later into
    ``/etc/systemd/system`` or ``/run/systemd/system`` *inside* the namespace are
    found too (both are on the manager's unit path and start out empty).
    """

    def __init__(
        self,
        workdir: Path,
        units: Mapping[str, str] | None = None,
        *,
        share: Sequence[Path] = (),
        overlays: Sequence[str] = DEFAULT_OVERLAYS,
        boot_timeout: float = 20.0,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        # Host dirs visible inside at the same path: the work dir plus ``share``. Those
        # under /tmp are bound back into the fresh /tmp; others are visible anyway.
        self.share = [self.workdir, *(Path(p).resolve() for p in share)]
        for d in self.share:
            for hidden in HIDDEN:
                if d == Path(hidden) or Path(hidden) in d.parents:
                    raise ValueError(f"{d} would be hidden by the private mount on {hidden}")
        self.units = dict(units or {})
        self.overlays = tuple(overlays)
        self.boot_timeout = boot_timeout
        self.name = PREFIX + uuid.uuid4().hex[:12]
        self.unit_dir = self.workdir / "nsystemd-units"
        self.empty_dir = self.workdir / "nsystemd-empty"
        self.console_log = self.workdir / "nsystemd-console.log"
        self._starter: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None
        self._cgroups: list[Path] = []

    # ---- lifecycle -------------------------------------------------------------------

    def __enter__(self) -> NSystemd:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        """Host pid of the namespaced systemd (PID 1 inside)."""
        if self._pid is None:
            raise NSystemdError("manager is not running")
        return self._pid

    def start(self) -> None:
        """Boot the manager; returns once it reports its start-up finished."""
        try:
            self._write_unit_dir()
            inner = self.workdir / "nsystemd-inner.sh"
            inner.write_text(self._inner_script())
            reap_stale_cgroups()
            # The starter joins its own cgroups *before* unshare --cgroup, so the new
            # cgroup namespace (and everything systemd creates) is rooted below them.
            join = make_own_cgroups(self.name, self._cgroups)
            starter = (
                f"{join} && exec unshare --pid --fork --mount --uts --ipc --net --cgroup "
                f"--propagation private --kill-child /bin/sh {shlex.quote(str(inner))}"
            )
            with self.console_log.open("wb") as log:
                self._starter = subprocess.Popen(
                    ["/bin/sh", "-c", starter],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # a Ctrl-C aimed at pytest must not hit PID 1
                    env={"PATH": INNER_ENV["PATH"]},
                )
            self._pid = wait_for(self._find_manager, self.boot_timeout, what="systemd to exec as PID 1")
            wait_for(
                lambda: Path(f"/proc/{self._pid}/root/run/systemd/private").exists(),
                self.boot_timeout,
                what="the manager's private bus socket",
            )
            state = self.systemctl("is-system-running", "--wait", timeout=self.boot_timeout)
            if state.stdout.strip() not in ("running", "degraded"):
                raise NSystemdError(f"manager did not come up: {state.stdout!r} {state.stderr!r}")
        except BaseException:
            console = self.console_log.read_text(errors="replace") if self.console_log.exists() else ""
            self.stop()
            if console:
                raise NSystemdError(f"boot failed; console output:\n{console[-4000:]}")
            raise

    def _find_manager(self) -> int | None:
        """pid of unshare's child once it has exec'ed systemd; raise if the starter died."""
        assert self._starter is not None
        if self._starter.poll() is not None:
            raise NSystemdError(f"starter exited with {self._starter.returncode} before systemd ran")
        try:
            children = Path(f"/proc/{self._starter.pid}/task/{self._starter.pid}/children").read_text().split()
            for child in children:
                if Path(f"/proc/{child}/comm").read_text().strip() == "systemd":
                    return int(child)
        except (FileNotFoundError, ProcessLookupError):
            pass
        return None

    def stop(self) -> None:
        """SIGKILL the manager (its pid namespace dies with it) and remove our cgroups.

        Safe to call more than once and after a failed start.
        """
        try:
            if self._pid is not None:
                try:
                    os.kill(self._pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if self._starter is not None:
                if self._starter.poll() is None:
                    try:
                        self._starter.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        # unshare --kill-child: killing unshare SIGKILLs PID 1 as well.
                        self._starter.kill()
                        self._starter.wait(timeout=10)
        finally:
            self._pid = None
            self._starter = None
            # Depth-first per hierarchy; children systemd made inside go first.
            cgroups, self._cgroups = self._cgroups, []
            for cg in cgroups:
                remove_cgroup_tree(cg)

    # ---- setup -----------------------------------------------------------------------

    def _write_unit_dir(self) -> None:
        self.unit_dir.mkdir(parents=True, exist_ok=True)
        self.empty_dir.mkdir(parents=True, exist_ok=True)
        for stub in STUB_TARGETS:
            (self.unit_dir / f"{stub}.target").write_text(_stub_target(stub))
        (self.unit_dir / TARGET).write_text(
            "[Unit]\nDescription=nsystemd test target\nDefaultDependencies=no\n"
            "Wants=systemd-journald.socket systemd-journald-dev-log.socket\n"
            "After=systemd-journald.socket systemd-journald-dev-log.socket\n"
        )
        for unit in JOURNALD_UNITS:
            shutil.copyfile(DISTRO_UNITS / unit, self.unit_dir / unit)
        for name, text in self.units.items():
            path = self.unit_dir / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)

    def _inner_script(self) -> str:
        q = shlex.quote
        lines = [
            "#!/bin/sh",
            "# Generated by tests/system/nsystemd.py: runs as PID 1 of a new pid namespace,",
            "# in a private mount namespace. set -e: any failed mount stops here, before systemd.",
            "set -eu",
            "mount -t proc -o nosuid,nodev,noexec proc /proc",
            "mount -t tmpfs -o mode=755,nosuid,nodev tmpfs /run",
            "mkdir -p /run/nsystemd/ov /run/nsystemd/dev",
        ]
        # Keep the test's dirs across the fresh /tmp: bind aside, mount /tmp, move back.
        kept = [d for d in self.share if Path("/tmp") in d.parents]
        for i, d in enumerate(kept):
            lines += [f"mkdir -p /run/nsystemd/keep/{i}", f"mount --bind {q(str(d))} /run/nsystemd/keep/{i}"]
        lines.append("mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp")
        for i, d in enumerate(kept):
            lines += [f"mkdir -p {q(str(d))}", f"mount --move /run/nsystemd/keep/{i} {q(str(d))}"]
        # Copy-on-write overlays with their upper layer in our /run tmpfs.
        for i, d in enumerate(self.overlays):
            up, wk = f"/run/nsystemd/ov/{i}/upper", f"/run/nsystemd/ov/{i}/work"
            lines += [
                f"mkdir -p {up} {wk}",
                f"mount -t overlay overlay -o lowerdir={q(d)},upperdir={up},workdir={wk} {q(d)}",
            ]
        lines += [
            "mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /var/tmp",
            "mount -t tmpfs -o mode=755,nosuid,nodev tmpfs /var/log",
            "mount -t tmpfs -o mode=755,nosuid,nodev tmpfs /var/lib",
            # Only units we put there: no host enablement symlinks (sysinit.target.wants...).
            "mkdir -p /etc/systemd/system",
            "mount -t tmpfs -o mode=755,nosuid,nodev tmpfs /etc/systemd/system",
            # Private /dev: journald's /dev/log symlink and anything else created in /dev
            # stays inside; no /dev/kmsg, so journald does not import the host's kernel log.
            "D=/run/nsystemd/dev",
            "mount -t tmpfs -o mode=755,nosuid tmpfs $D",
            "for n in null zero full random urandom tty; do touch $D/$n; mount --bind /dev/$n $D/$n; done",
            "mkdir -p $D/pts $D/shm $D/mqueue",
            "mount -t devpts -o newinstance,ptmxmode=0666,mode=620,nosuid,noexec devpts $D/pts",
            "ln -s pts/ptmx $D/ptmx",
            "mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs $D/shm",
            "ln -s /proc/self/fd $D/fd",
            "ln -s /proc/self/fd/0 $D/stdin; ln -s /proc/self/fd/1 $D/stdout; ln -s /proc/self/fd/2 $D/stderr",
            "mount --move $D /dev",
            # sysfs read-only; fresh cgroup hierarchies rooted at our cgroup namespace.
            "mount -o remount,bind,ro /sys",
            "mount -t tmpfs -o mode=755,nosuid,nodev,noexec tmpfs /sys/fs/cgroup",
            "mkdir /sys/fs/cgroup/systemd /sys/fs/cgroup/unified",
            "mount -t cgroup -o none,name=systemd,nosuid,nodev,noexec cgroup /sys/fs/cgroup/systemd",
            "mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 /sys/fs/cgroup/unified",
            # sysctls are host-global: the manager must not be able to change them.
            "mount --bind /proc/sys /proc/sys",
            "mount -o remount,bind,ro /proc/sys",
            "ip link set lo up",
            f"hostname {q(self.name)}",
            f"export container={q(self.name)}",
            f"export SYSTEMD_UNIT_PATH=/etc/systemd/system:/run/systemd/system:{q(str(self.unit_dir))}",
            f"export SYSTEMD_GENERATOR_PATH={q(str(self.empty_dir))}",
            f"export SYSTEMD_ENVIRONMENT_GENERATOR_PATH={q(str(self.empty_dir))}",
            f"exec {SYSTEMD} --system --unit={TARGET} --log-target=journal-or-kmsg",
        ]
        return "\n".join(lines) + "\n"

    # ---- talking to it -----------------------------------------------------------------

    def run(
        self,
        cmd: Sequence[str] | str,
        *,
        check: bool = False,
        timeout: float = 30.0,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` inside all the manager's namespaces (``nsenter -a``).

        A string is run with ``/bin/sh -c``. ``-a`` matters: joining only the mount
        namespace gives "Transport endpoint is not connected" from systemctl.
        """
        argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        full = ["nsenter", "-t", str(self.pid), "-a", *argv]
        result = subprocess.run(
            full,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**INNER_ENV, **(env or {})},
            cwd="/",
        )
        if check and result.returncode != 0:
            raise NSystemdError(
                f"{shlex.join(argv)} exited {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result

    def systemctl(self, *args: str, check: bool = False, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """``systemctl ARGS`` against the namespaced manager."""
        return self.run(["systemctl", "--no-pager", *args], check=check, timeout=timeout)

    def journalctl(self, *args: str, timeout: float = 30.0) -> str:
        """stdout of ``journalctl --no-pager ARGS`` inside the namespace."""
        return self.run(["journalctl", "--no-pager", *args], check=True, timeout=timeout).stdout

    def show(self, unit: str, *props: str) -> dict[str, str]:
        """``systemctl show -p ...`` as a dict."""
        out = self.systemctl("show", unit, *(f"-p{p}" for p in props), check=True).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def wait_active(self, unit: str, timeout: float = 20.0) -> None:
        """Wait until ``unit`` is active; fail fast with its status if it failed instead."""

        def state() -> bool:
            s = self.show(unit, "ActiveState", "SubState")
            if s["ActiveState"] == "failed":
                raise NSystemdError(f"{unit} failed:\n{self.status(unit)}")
            return s["ActiveState"] == "active"

        try:
            wait_for(state, timeout, interval=0.1, what=f"{unit} active")
        except TimeoutError as e:
            raise TimeoutError(f"{e}\n{self.status(unit)}") from None

    def wait_state(self, unit: str, states: Iterable[str], timeout: float = 20.0) -> str:
        """Wait until ActiveState is one of ``states``; return it."""
        wanted = set(states)

        def check() -> str | None:
            s = self.show(unit, "ActiveState")["ActiveState"]
            return s if s in wanted else None

        try:
            return wait_for(check, timeout, interval=0.1, what=f"{unit} in {sorted(wanted)}")
        except TimeoutError as e:
            raise TimeoutError(f"{e}\n{self.status(unit)}") from None

    def status(self, unit: str) -> str:
        """``systemctl status`` text (never raises: it exits non-zero for inactive units)."""
        r = self.systemctl("status", "--lines=30", "--full", unit)
        return r.stdout + r.stderr

    # ---- files inside --------------------------------------------------------------------

    def path(self, inside: str) -> Path:
        """Host path that reaches ``inside`` through /proc/<pid>/root (our mount namespace)."""
        return Path(f"/proc/{self.pid}/root") / inside.lstrip("/")

    def write(self, inside: str, text: str, mode: int = 0o644) -> None:
        """Create/replace a file inside the namespace (parents created)."""
        p = self.path(inside)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        p.chmod(mode)
