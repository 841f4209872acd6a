"""scripts/install_staging.sh into a temporary root (no systemd needed): idempotency, what
happens to an operator's edited config, who owns the code and the venv, and which
interpreters it refuses. The in-namespace run with daemon-reload and the real service is in
test_systemd_service.py."""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from staged import snapshot_repo

REPO = Path(__file__).resolve().parents[2]
UNIT = "etc/systemd/system/tta-staging-carbon.service"


@pytest.fixture(scope="module")
def src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.geteuid() != 0:
        pytest.skip("the installer needs root (useradd, chown)")
    dest = tmp_path_factory.mktemp("src") / "repo"
    snapshot_repo(REPO, dest)
    return dest


@pytest.fixture
def root(tmp_path: Path) -> Path:
    # Minimal account files of our own: the host's may already list tta-user.
    r = tmp_path / "root"
    (r / "etc").mkdir(parents=True)
    (r / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (r / "etc/group").write_text("root:x:0:\n")
    (r / "etc/shadow").write_text("root:*:19000:0:99999:7:::\n")
    (r / "etc/gshadow").write_text("root:*::\n")
    for f in ("shadow", "gshadow"):
        (r / "etc" / f).chmod(0o640)
    return r


def install(src: Path, root: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(src / "scripts/install_staging.sh"), "--root", str(root), "--src", str(src), "--no-sync", *extra],
        capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})},
    )


def not_root_only(top: Path) -> list[str]:
    """Everything under ``top`` (itself included) not owned by root:root, or writable by group
    or others (symbolic links: owner only; their mode means nothing)."""
    bad = []
    for p in [top, *top.rglob("*")]:
        st = p.lstat()
        if (st.st_uid, st.st_gid) != (0, 0):
            bad.append(f"{p}: owner {st.st_uid}:{st.st_gid}")
        elif not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o022:
            bad.append(f"{p}: mode {oct(st.st_mode & 0o7777)}")
    return bad


def tree(root: Path) -> dict[str, tuple]:
    """Everything a second run could change: type, mode, owner, mtime, content, link target."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            body = ""
            if stat.S_ISREG(st.st_mode):
                body = hashlib.sha256(p.read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                body = os.readlink(p)
            out[str(p.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, body)
    return out


def ids(root: Path) -> tuple[int, int]:
    user = next(ln for ln in (root / "etc/passwd").read_text().splitlines() if ln.startswith("tta-user:"))
    group = next(ln for ln in (root / "etc/group").read_text().splitlines() if ln.startswith("tta-group:"))
    return int(user.split(":")[2]), int(group.split(":")[2])


def mode_owner(p: Path) -> tuple[str, int, int]:
    st = p.stat()
    return oct(st.st_mode & 0o7777), st.st_uid, st.st_gid


def test_first_run_lays_out_the_guide_and_second_run_changes_nothing(src: Path, root: Path) -> None:
    first = install(src, root)
    assert first.returncode == 0, first.stderr
    for line in ("group tta-group: created", "user tta-user: created", "dir /var/log/tta/staging/codecarbon: created",
                 "config /etc/tta/staging/config.yaml: created", f"file /{UNIT}: created"):
        assert line in first.stdout, first.stdout
    uid, gid = ids(root)
    user = next(ln for ln in (root / "etc/passwd").read_text().splitlines() if ln.startswith("tta-user:"))
    assert user.endswith(":/nonexistent:/usr/sbin/nologin") and uid < 1000  # system user, no login
    assert mode_owner(root / "var/log/tta/staging/codecarbon") == ("0o755", uid, gid)
    assert mode_owner(root / "var/lib/tta/staging") == ("0o750", uid, gid)
    assert mode_owner(root / "opt/tta/staging") == ("0o755", 0, 0)
    assert mode_owner(root / "etc/tta/staging") == ("0o750", 0, gid)
    assert mode_owner(root / "etc/tta/staging/config.yaml") == ("0o640", 0, gid)
    assert mode_owner(root / UNIT) == ("0o644", 0, 0)
    assert (root / UNIT).read_bytes() == (src / "deploy/systemd/tta-staging-carbon.service").read_bytes()
    assert (root / f"{UNIT}.d/10-rapl-read.conf").is_file()
    # The deployed code is a git checkout (rollback needs one): root's, writable by root only,
    # not tta-user's as the guide had it (issue 13, item 7). Only data, logs and state are tta-user's.
    assert (root / "opt/tta/staging/.git").is_dir()
    assert not_root_only(root / "opt/tta/staging") == []
    for d in ("var/log/tta/staging", "var/log/tta/staging/codecarbon", "var/lib/tta/staging"):
        assert (root / d).stat().st_uid == uid, d
    # The retention timer and its service are installed beside the daemon's unit.
    for name in ("tta-staging-carbon-prune.service", "tta-staging-carbon-prune.timer"):
        f = root / "etc/systemd/system" / name
        assert mode_owner(f) == ("0o644", 0, 0)
        assert f.read_bytes() == (src / "deploy/systemd" / name).read_bytes()

    before = tree(root)
    second = install(src, root)
    assert second.returncode == 0, second.stderr
    steps = [ln for ln in second.stdout.splitlines() if ": " in ln and not ln.startswith(("done", "skipped"))]
    assert steps and all(ln.endswith(": unchanged") or ": unchanged (" in ln for ln in steps), second.stdout
    assert tree(root) == before


def test_edited_config_is_kept_reported_and_dist_written(src: Path, root: Path) -> None:
    assert install(src, root).returncode == 0
    cfg = root / "etc/tta/staging/config.yaml"
    edited = cfg.read_text().replace("measurement_interval: 15", "measurement_interval: 30")
    assert edited != cfg.read_text()
    cfg.write_text(edited)
    r = install(src, root)
    assert r.returncode == 0
    assert ("config /etc/tta/staging/config.yaml: kept your edited file; the shipped version is in "
            "/etc/tta/staging/config.yaml.dist (diff them to review)") in r.stdout
    assert cfg.read_text() == edited
    dist = cfg.with_name("config.yaml.dist")
    assert dist.read_bytes() == (src / "config/staging.yaml").read_bytes()
    # Reported again on the next run, but nothing is rewritten.
    before = tree(root)
    again = install(src, root)
    assert "kept your edited file" in again.stdout and tree(root) == before


def test_locally_edited_unit_is_restored(src: Path, root: Path) -> None:
    # Our files are authoritative; local changes belong in drop-ins (docs/systemd.md).
    assert install(src, root).returncode == 0
    (root / UNIT).write_text((root / UNIT).read_text().replace("WatchdogSec=60", "WatchdogSec=0"))
    r = install(src, root)
    assert f"file /{UNIT}: updated" in r.stdout
    assert (root / UNIT).read_bytes() == (src / "deploy/systemd/tta-staging-carbon.service").read_bytes()


def test_root_without_passwd_is_refused(src: Path, tmp_path: Path) -> None:
    r = install(src, tmp_path)
    assert r.returncode == 1 and "etc/passwd" in r.stderr
    assert not (tmp_path / "opt").exists()


def test_an_install_owned_by_tta_user_is_moved_to_root(src: Path, root: Path) -> None:
    """What the guide (and the previous installer) left: the checkout chowned to tta-user,
    a group-writable file in it. The installer hands it back to root."""
    assert install(src, root).returncode == 0
    uid, gid = ids(root)
    code = root / "opt/tta/staging"
    subprocess.run(["chown", "-R", f"{uid}:{gid}", str(code)], check=True)
    (code / "scripts/health_check_carbon.py").chmod(0o775)
    r = install(src, root)
    assert r.returncode == 0, r.stderr
    assert "code: unchanged" in r.stdout  # git still works in it (safe.directory) before the chown
    assert not_root_only(code) == []


# ---- the venv and the interpreter (UV_PYTHON) ---------------------------------------------------

PYVER = f"python{sys.version_info.major}.{sys.version_info.minor}"
VISIBLE_PY = f"/srv/python3.12/bin/{PYVER}"  # where the test interpreter is bound, outside /root


def in_srv_namespace(script: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a private mount namespace where /srv (a fresh tmpfs) holds the
    interpreter running these tests at /srv/python3.12 (bound read-only) and a symbolic link
    /srv/link -> that interpreter's real location. The host's /srv is never touched."""
    base = Path(sys.base_prefix).resolve()
    real = base / "bin" / PYVER
    setup = (
        "set -e; mount -t tmpfs -o mode=755 tmpfs /srv; mkdir /srv/python3.12; "
        f"mount --bind {shlex.quote(str(base))} /srv/python3.12; mount -o remount,bind,ro /srv/python3.12; "
        f"ln -s {shlex.quote(str(real))} /srv/link; "
    )
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c", setup + script],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "UV_OFFLINE": "1"})


@pytest.fixture
def shm_root() -> Iterator[Path]:
    """A scratch root in memory (/dev/shm when there is one): a synced venv is ~250 MB."""
    base = tempfile.mkdtemp(prefix="tta-install-", dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None)
    r = Path(base) / "root"
    (r / "etc").mkdir(parents=True)
    (r / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (r / "etc/group").write_text("root:x:0:\n")
    (r / "etc/shadow").write_text("root:*:19000:0:99999:7:::\n")
    (r / "etc/gshadow").write_text("root:*::\n")
    try:
        yield r
    finally:
        shutil.rmtree(base, ignore_errors=True)


def stats(top: Path) -> dict[str, tuple[int, int, int, int]]:
    return {str(p): (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns)
            for p in [top, *top.rglob("*")] for st in [p.lstat()]}


@pytest.mark.skipif(shutil.which("uv") is None or shutil.which("unshare") is None, reason="needs uv and unshare")
def test_venv_is_built_with_uv_python_and_is_root_only(src: Path, shm_root: Path) -> None:
    """Issue 13, items 7 and 8: UV_PYTHON is the venv's interpreter; a venv built with another one
    is rebuilt; code and venv are root's and writable by root only (uv makes .venv/.lock 0666)."""
    root = shm_root
    installer = shlex.quote(str(src / "scripts/install_staging.sh"))
    args = f"--root {shlex.quote(str(root))} --src {shlex.quote(str(src))}"
    code = root / "opt/tta/staging"
    # A venv left by an earlier install with another interpreter (here: a stand-in whose python
    # points at the system's 3.11, which the project cannot even use).
    assert install(src, root).returncode == 0
    (code / ".venv/bin").mkdir(parents=True)
    (code / ".venv/bin/python").symlink_to(os.path.realpath("/usr/bin/python3"))
    (code / ".venv/stale-marker").write_text("")
    r = in_srv_namespace(f"UV_PYTHON={VISIBLE_PY} bash {installer} {args}")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"venv: rebuilt with {VISIBLE_PY} (was {os.path.realpath('/usr/bin/python3')})" in r.stdout, r.stdout
    assert "warning" not in r.stdout, r.stdout
    assert not (code / ".venv/stale-marker").exists()
    assert os.readlink(code / ".venv/bin/python") == VISIBLE_PY
    assert (code / ".venv/bin/tta-carbon").is_file()
    assert not_root_only(code) == []  # the checkout and all of .venv
    uid, _ = ids(root)
    for d in ("var/log/tta/staging", "var/log/tta/staging/codecarbon", "var/lib/tta/staging"):
        assert (root / d).stat().st_uid == uid, d

    # Unset on the next run: the venv and its interpreter are kept, nothing changes.
    before = stats(code)
    again = in_srv_namespace(f"bash {installer} {args}")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "venv: unchanged" in again.stdout, again.stdout
    assert stats(code) == before


@pytest.mark.parametrize(("given", "why"), [
    (str(Path(sys.base_prefix).resolve() / "bin" / PYVER), "is under /root"),  # pyenv, as on these machines
    ("/home/ops/.local/bin/python3.12", "is under /home"),
    ("/tmp/python/bin/python3.12", "is under /tmp"),
    ("/var/tmp/python3.12", "is under /var/tmp"),
    ("/srv/link", "resolves to "),  # a link outside, into /root
    ("/srv/no-such-python3.12", "no such executable"),
])
def test_hidden_or_missing_uv_python_is_refused_before_anything_changes(src: Path, root: Path, given: str,
                                                                        why: str) -> None:
    if not Path(sys.base_prefix).resolve().is_relative_to("/root") and why in ("is under /root", "resolves to "):
        pytest.skip("the test interpreter is not under /root here")
    passwd = (root / "etc/passwd").read_text()
    installer = shlex.quote(str(src / "scripts/install_staging.sh"))
    r = in_srv_namespace(f"UV_PYTHON={shlex.quote(given)} bash {installer} --root {shlex.quote(str(root))} "
                         f"--src {shlex.quote(str(src))}", timeout=60)
    assert r.returncode == 1 and r.stdout == "", r.stdout + r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: UV_PYTHON={given}"), r.stderr
    assert why in lines[0]
    if why != "no such executable":
        assert "203/EXEC" in lines[0] and "/usr or /opt" in lines[0]
    assert sorted(p.name for p in root.iterdir()) == ["etc"]  # no user, no directory, no clone
    assert (root / "etc/passwd").read_text() == passwd


def test_a_uv_python_version_request_is_left_to_uv(src: Path, root: Path) -> None:
    r = install(src, root, env={"UV_PYTHON": "3.12"})
    assert r.returncode == 0, r.stderr
