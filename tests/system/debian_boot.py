"""Boot a real Debian 12 with systemd as PID 1 (systemd-nspawn), for tests/system/test_debian_boot.py.

Three read-only layers under one overlayfs root, so each test run boots a fresh copy in
well under a second and never changes the cached ones:

* the base image: ``scripts/ci/debian_rootfs.sh`` (mmdebstrap, bookworm), cached in
  ``/var/cache/tta-staging-carbon-ci/rootfs-bookworm-<hash of the script>``;
* the payload: what the deployment guide fetches from the internet and the private
  network cannot reach: a Python 3.12 at ``/opt/python3.12`` (the host's own interpreter,
  standing in for the guide's python.org source build), uv's cache pre-filled from
  ``uv.lock`` (``/root/.cache/uv``), the uv wheel the guide pip-installs
  (``/var/cache/tta-wheels``), and ``/etc/uv/uv.toml`` + ``/etc/pip.conf`` that make uv and
  pip use only those (``offline``, ``no-index``). Cached in ``payload-<hash>``, keyed by
  uv.lock, pyproject.toml, the interpreter and the uv version;
* the run's own upper directory in the test's tmp dir (a machine id, the release repository).

Safety (the environment notes: a careless systemd boot once wiped the host's /tmp):
the host's root is never booted; nothing of the host is bound into the container; the
starter joins its own cgroups before systemd-nspawn runs (``nsystemd.make_own_cgroups``),
mounts the overlay in a private mount namespace of its own (gone with the last process in
it), and ``stop()`` (always in a ``finally``) powers the container off, SIGKILLs what is
left and removes the cgroups.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from nsystemd import make_own_cgroups, missing_prerequisites as nsystemd_missing, remove_cgroup_tree, wait_for

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("TTA_CI_CACHE", "/var/cache/tta-staging-carbon-ci"))
ROOTFS_SCRIPT = REPO / "scripts" / "ci" / "debian_rootfs.sh"
WHEELS = "/var/cache/tta-wheels"
PREFIX = "tta-boot-"
# Bump when the payload's recipe below changes (its inputs are hashed too).
PAYLOAD_RECIPE = "1"
# Commands inside run with this environment only: nothing of pytest's leaks in.
INSIDE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "USER": "root",
    "LOGNAME": "root",
    "LANG": "C.UTF-8",
    "TERM": "dumb",
    "SYSTEMD_PAGER": "cat",
    "SYSTEMD_COLORS": "0",
}


class BootError(RuntimeError):
    """The container did not boot, or a command inside it failed."""


def missing_prerequisites() -> str | None:
    """Why this machine cannot boot the Debian container, or None when it can."""
    why = nsystemd_missing()
    if why:
        return why
    for tool in ("systemd-nspawn", "mmdebstrap", "git"):
        if shutil.which(tool) is None:
            return f"{tool} not found (scripts/run_tests.sh installs systemd-container and mmdebstrap)"
    if "overlay" not in Path("/proc/filesystems").read_text():
        return "overlayfs not available"
    if host_python312() is None:
        return "no Python 3.12 on this host to place under /opt/python3.12"
    return None


def host_python312() -> Path | None:
    """Installation prefix of a Python 3.12 on this host (the one running the tests, if 3.12)."""
    candidates = []
    if sys.version_info[:2] == (3, 12):
        candidates.append(Path(sys.base_prefix))
    candidates += sorted(Path("/root/.pyenv/versions").glob("3.12.*"), reverse=True)
    for prefix in candidates:
        if (prefix / "bin/python3.12").exists() and (prefix / "lib/python3.12/os.py").exists():
            return prefix
    return None


@contextmanager
def _locked(name: str) -> Iterator[None]:
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f".{name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def base_rootfs(timeout: float = 900) -> Path:
    """The cached pristine bookworm image (built by scripts/ci/debian_rootfs.sh when absent)."""
    r = subprocess.run(["bash", str(ROOTFS_SCRIPT)], capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise BootError(f"{ROOTFS_SCRIPT.name} failed ({r.returncode}):\n{r.stderr[-4000:]}")
    return Path(r.stdout.strip().splitlines()[-1])


def _hash(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(hashlib.sha256(p).digest())
    return h.hexdigest()[:16]


def payload_layer(uv_version: str, timeout: float = 600) -> Path:
    """The cached layer with Python 3.12, uv's filled cache and the uv wheel (see module doc)."""
    prefix = host_python312()
    assert prefix is not None
    key = _hash(PAYLOAD_RECIPE.encode(), (REPO / "uv.lock").read_bytes(), (REPO / "pyproject.toml").read_bytes(),
                str(prefix.resolve()).encode(), (prefix / "bin/python3.12").read_bytes()[:1 << 20],
                uv_version.encode(), Path(__file__).read_bytes())
    dest = CACHE / f"payload-{key}"
    with _locked("payload"):
        if (dest / ".complete").exists():
            return dest
        tmp = CACHE / f"payload-{key}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        _build_payload(tmp, prefix, uv_version, timeout)
        (tmp / ".complete").touch()
        for old in CACHE.glob("payload-*"):
            if old != tmp:
                shutil.rmtree(old, ignore_errors=True)
        tmp.rename(dest)
    return dest


def _build_payload(layer: Path, prefix: Path, uv_version: str, timeout: float) -> None:
    # 1. Python 3.12 in a `make altinstall` layout under /opt/python3.12. The interpreter finds
    #    its stdlib relative to bin/ (getpath's landmark search); its libpython (a shared
    #    build: pyenv's RUNPATH points into /root) through an ld.so.conf.d entry + ldconfig.
    opt = layer / "opt/python3.12"
    (opt / "bin").mkdir(parents=True)
    shutil.copy2(prefix / "bin/python3.12", opt / "bin/python3.12")
    (opt / "lib").mkdir()
    for lib in (prefix / "lib").glob("libpython3.12*.so*"):
        shutil.copy2(lib, opt / "lib" / lib.name, follow_symlinks=False)
    skip = shutil.ignore_patterns("test", "__pycache__", "idlelib", "turtledemo")
    shutil.copytree(prefix / "lib/python3.12", opt / "lib/python3.12", symlinks=True,
                    ignore=lambda d, names: (set(names) if Path(d).name == "site-packages" else skip(d, names)))
    (layer / "etc/ld.so.conf.d").mkdir(parents=True)
    (layer / "etc/ld.so.conf.d/python3.12.conf").write_text("/opt/python3.12/lib\n")
    # 2. The uv wheel the guide's `pip install 'uv==X'` wants, and uv itself from it.
    wheels = layer / WHEELS.lstrip("/")
    wheels.mkdir(parents=True)
    def run(*cmd: str, **kw: object) -> None:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)  # type: ignore[call-overload]
        if r.returncode != 0:
            raise BootError(f"payload: {shlex.join(cmd)} exited {r.returncode}:\n{r.stdout[-2000:]}{r.stderr[-3000:]}")

    has_pip = subprocess.run([str(prefix / "bin/python3.12"), "-m", "pip", "--version"], capture_output=True).returncode == 0
    pip = [str(prefix / "bin/python3.12"), "-m", "pip"] if has_pip else ["uv", "tool", "run", "--from", "pip", "pip"]
    run(*pip, "download", "--quiet", "--no-deps", "--only-binary", ":all:", "--dest", str(wheels), f"uv=={uv_version}")
    whl = next(wheels.glob(f"uv-{uv_version}-*.whl"))
    tools = layer.parent / (layer.name + ".tools")
    shutil.rmtree(tools, ignore_errors=True)
    tools.mkdir()
    with zipfile.ZipFile(whl) as z:
        member = next(n for n in z.namelist() if n.endswith(".data/scripts/uv"))
        (tools / "uv").write_bytes(z.read(member))
    (tools / "uv").chmod(0o755)
    # 3. uv's cache, filled by that very uv from a clone of this checkout: the locked runtime
    #    dependencies (built for this interpreter) and the build backend (hatchling).
    cache = layer / "root/.cache/uv"
    src = tools / "src"
    run("git", "clone", "--quiet", "--no-hardlinks", str(REPO), str(src))
    env = {**os.environ, "UV_CACHE_DIR": str(cache), "UV_PYTHON": str(prefix / "bin/python3.12"),
           "UV_PYTHON_DOWNLOADS": "never", "UV_LINK_MODE": "copy"}
    env.pop("VIRTUAL_ENV", None)
    env.pop("UV_OFFLINE", None)
    run(str(tools / "uv"), "sync", "--frozen", "--no-dev", "--quiet", cwd=src, env=env)
    shutil.rmtree(tools)
    # 4. The site's package configuration: this host has no route to PyPI, so uv works from
    #    its cache and pip from the wheel directory (also through sudo, which drops env vars).
    (layer / "etc/uv").mkdir(parents=True)
    (layer / "etc/uv/uv.toml").write_text("# tta-staging-carbon CI: no network in this container\noffline = true\n")
    (layer / "etc/pip.conf").write_text(f"[global]\nno-index = true\nfind-links = {WHEELS}\n")


class DebianBoot:
    """A Debian 12 booted with ``systemd-nspawn -b`` on an overlay of ``lowers`` (top first).

    ``workdir`` is the test's own directory: the overlay's upper and work dirs live there,
    and whatever is placed in ``upper`` before ``start()`` appears in the container.
    """

    def __init__(self, workdir: Path, lowers: list[Path], *, boot_timeout: float = 120) -> None:
        self.workdir = Path(workdir).resolve()
        self.lowers = [Path(p).resolve() for p in lowers]
        self.upper = self.workdir / "upper"
        self.root = self.workdir / "root"
        self.console_log = self.workdir / "console.log"
        self.name = PREFIX + uuid.uuid4().hex[:10]
        self.boot_timeout = boot_timeout
        self.upper.mkdir(parents=True, exist_ok=True)
        self._starter: subprocess.Popen[bytes] | None = None
        self._leader: int | None = None
        self._cgroups: list[Path] = []

    @property
    def leader(self) -> int:
        if self._leader is None:
            raise BootError("container is not running")
        return self._leader

    def __enter__(self) -> DebianBoot:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> str:
        """Boot; returns ``systemctl is-system-running --wait``'s answer (running or degraded)."""
        (self.upper / "etc").mkdir(exist_ok=True)
        (self.upper / "etc/machine-id").write_text(uuid.uuid4().hex + "\n")  # no first-boot
        work = self.workdir / "ovl-work"
        work.mkdir(exist_ok=True)
        self.root.mkdir(exist_ok=True)
        opts = f"lowerdir={':'.join(map(str, self.lowers))},upperdir={self.upper},workdir={work}"
        inner = (f"mount -t overlay overlay -o {shlex.quote(opts)} {shlex.quote(str(self.root))} && "
                 f"exec systemd-nspawn --quiet -b -D {shlex.quote(str(self.root))} -M {self.name} "
                 "--private-network --register=no --keep-unit --console=read-only")
        try:
            join = make_own_cgroups(self.name, self._cgroups)
            starter = f"{join} && exec unshare --mount --propagation private /bin/sh -c {shlex.quote(inner)}"
            with self.console_log.open("wb") as log:
                self._starter = subprocess.Popen(
                    ["/bin/sh", "-c", starter], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True,  # a Ctrl-C aimed at pytest must not reach the container
                    env={"PATH": INSIDE_ENV["PATH"], "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"})
            self._leader = wait_for(self._find_leader, 30, 0.05, what="systemd-nspawn's PID 1")
            wait_for(lambda: Path(f"/proc/{self._leader}/root/run/systemd/private").exists(), self.boot_timeout,
                     what="the container's systemd bus")
            r = self.run(["systemctl", "is-system-running", "--wait"], timeout=self.boot_timeout)
            state = r.stdout.strip()
            if state not in ("running", "degraded"):
                raise BootError(f"boot ended {state!r}")
            return state
        except BaseException as exc:
            console = self.console_log.read_text(errors="replace")[-4000:] if self.console_log.exists() else ""
            self.stop()
            if isinstance(exc, Exception):
                raise BootError(f"boot failed: {exc}\nconsole:\n{console}") from exc
            raise

    def _find_leader(self) -> int | None:
        assert self._starter is not None
        if self._starter.poll() is not None:
            raise BootError(f"starter exited with {self._starter.returncode}: "
                            f"{self.console_log.read_text(errors='replace')[-2000:]}")
        mine = os.readlink("/proc/self/ns/pid")
        todo = [self._starter.pid]
        while todo:
            pid = todo.pop()
            try:
                if os.readlink(f"/proc/{pid}/ns/pid") != mine:
                    return pid
                for task in Path(f"/proc/{pid}/task").iterdir():
                    todo += [int(c) for c in (task / "children").read_text().split()]
            except (FileNotFoundError, ProcessLookupError):
                continue
        return None

    def run(self, argv: list[str], *, check: bool = False, timeout: float = 120, input: str | None = None,
            env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """``argv`` inside the container as root, in a clean login-like environment, cwd / (PID 1's)."""
        cmd = ["nsenter", "-t", str(self.leader), "-a", "--wd", "env", "-i",
               *(f"{k}={v}" for k, v in {**INSIDE_ENV, **(env or {})}.items()), *argv]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=input,
                           stdin=None if input is not None else subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise BootError(f"{shlex.join(argv)[:300]} exited {r.returncode}\n--- stdout\n{r.stdout[-3000:]}"
                            f"\n--- stderr\n{r.stderr[-3000:]}")
        return r

    def sh(self, script: str, **kw: object) -> subprocess.CompletedProcess[str]:
        """A bash script inside (``-e -o pipefail``: the first failing command fails it)."""
        return self.run(["bash", "-e", "-o", "pipefail", "-c", script], **kw)  # type: ignore[arg-type]

    def read(self, path: str) -> str:
        return self.run(["cat", path], check=True).stdout

    def write(self, path: str, text: str) -> None:
        """Replace a file's content in place (owner and mode kept), as an editor would."""
        self.run(["sh", "-c", 'cat > "$1"', "sh", path], check=True, input=text)

    def stop(self) -> None:
        """Power off (20 s), then SIGKILL whatever is left, and remove our cgroups. Idempotent."""
        starter, leader = self._starter, self._leader
        self._leader = None
        if starter is not None and starter.poll() is None:
            if leader is not None:
                try:
                    subprocess.run(["nsenter", "-t", str(leader), "-a", "systemctl", "poweroff", "--no-block"],
                                   capture_output=True, timeout=10)
                    starter.wait(timeout=20)
                except (subprocess.TimeoutExpired, OSError):
                    pass
            for pid in (leader, starter.pid):
                if pid is not None:
                    try:
                        os.kill(pid, signal.SIGKILL)  # PID 1 of the container: takes all of it along
                    except ProcessLookupError:
                        pass
            try:
                starter.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        self._starter = None
        for cg in reversed(self._cgroups):
            # Processes still dying: kill what is left in our cgroup tree, then rmdir depth-first.
            deadline = time.monotonic() + 15
            while True:
                try:
                    remove_cgroup_tree(cg, timeout=1)
                    break
                except Exception:
                    for procs in cg.rglob("cgroup.procs"):
                        for pid in procs.read_text().split():
                            try:
                                os.kill(int(pid), signal.SIGKILL)
                            except (ProcessLookupError, ValueError):
                                pass
                    if time.monotonic() > deadline:
                        raise
        self._cgroups = []


def git_bare_release(repo: Path, dest: Path) -> tuple[str, str]:
    """A bare "Git server" copy of ``repo``'s HEAD at ``dest``: branch main = HEAD (the release
    to deploy), and branch ``next`` = one more commit on top of it (the upgrade to roll back).
    Returns (release commit, next commit)."""
    release = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], check=True, capture_output=True,
                             text=True).stdout.strip()
    subprocess.run(["git", "init", "--quiet", "--bare", "--initial-branch=main", str(dest)], check=True)
    subprocess.run(["git", "-C", str(repo), "push", "--quiet", str(dest), f"{release}:refs/heads/main"],
                   check=True, capture_output=True)
    env = {**os.environ, "GIT_AUTHOR_NAME": "ci", "GIT_AUTHOR_EMAIL": "ci@localhost", "GIT_COMMITTER_NAME": "ci",
           "GIT_COMMITTER_EMAIL": "ci@localhost", "GIT_INDEX_FILE": str(dest / "next.index")}
    g = lambda *a, **kw: subprocess.run(["git", "--git-dir", str(dest), *a], check=True, capture_output=True,  # noqa: E731
                                        text=True, env=env, **kw).stdout.strip()
    g("read-tree", release)
    blob = g("hash-object", "-w", "--stdin", input="upgrade marker for test_debian_boot\n")
    g("update-index", "--add", "--cacheinfo", f"100644,{blob},RELEASE-NEXT")
    tree = g("write-tree")
    nxt = g("commit-tree", tree, "-p", release, "-m", "test_debian_boot: the next release")
    g("update-ref", "refs/heads/next", nxt)
    (dest / "next.index").unlink()
    return release, nxt
