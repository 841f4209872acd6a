"""Runs docs/operations.md: every `bash local` block, as written, against a throwaway install.

The install mirrors what scripts/install_staging.sh leaves: the release checkout
(/usr/local/src/tta-staging-carbon), and /opt/tta/staging a clone of it (plus this working
tree's uncommitted edits) synced with `uv sync --frozen --no-dev --compile-bytecode`, root's
and writable by root only; config from config/staging.yaml + config/environment; a real
daemon running this code. Only locations are rewritten: /opt, /etc, /var, /usr/local/src
paths into a temp dir, port 9880 to a free port, `<commit>` to the checkout's commit, the
account to one made for the test, and logrotate gets a private state file.

`bash systemd` blocks need systemd as PID 1: tests/system/test_operations_systemd.py runs
them; here they are only checked to hold nothing else. `bash script` blocks are the
installer and rollback scripts, tested by tests/system/test_install_scripts.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.integration.ops_helpers import REPO, TTA_CARBON, OpsDaemon, clean_env, free_port, require_root

DOC = REPO / "docs" / "operations.md"
UNIT = "tta-staging-carbon"
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```$", re.M | re.S)


def blocks(text: str) -> list[tuple[str, str]]:
    return [(m.group(1).strip(), m.group(2)) for m in FENCE.finditer(text)]


def test_every_block_is_tagged_and_systemd_blocks_hold_only_systemd_commands() -> None:
    found = blocks(DOC.read_text())
    assert found, "no code blocks found"
    for tag, body in found:
        assert tag in {"bash local", "bash systemd", "bash script", "text output"}, f"untagged block: {tag!r}"
        lines = [ln for ln in body.splitlines() if ln.strip()]
        if tag == "bash systemd":
            for ln in lines:
                assert re.fullmatch(rf"(systemctl|journalctl) .*\b{UNIT}\b.*", ln), ln
                assert not re.search(r"\btta-staging\b(?!-carbon)", ln), ln  # the seed guide's wrong unit
        if tag == "bash script":
            for ln in lines:
                assert re.fullmatch(r"scripts/(install|rollback)_staging\.sh( .*)?", ln), ln


def normalise(text: str) -> str:
    text = re.sub(r"\d+s ago", "Ns ago", text)
    text = re.sub(r"interval \d+s", "interval Ns", text)
    return re.sub(r"emissions_\d{4}-\d\d-\d\d", "emissions_DATE", text)


def test_local_blocks_run_against_a_local_install(service_account: tuple[str, str], shm_tmp: Path) -> None:
    require_root()
    if shutil.which("uv") is None:
        pytest.skip("uv not on PATH")
    user, group = service_account
    root, port = shm_tmp, free_port()
    opt = root / "opt/tta/staging"
    etc = root / "etc/tta/staging"
    logdir = root / "var/log/tta/staging"
    state = root / "var/lib/tta/staging"

    def relocate(text: str) -> str:
        for path in ("/opt/tta/staging", "/etc/tta/staging", "/var/log/tta/staging", "/var/lib/tta/staging",
                     "/etc/logrotate.d/tta-staging", "/var/backups/tta", "/usr/local/src/tta-staging-carbon"):
            text = text.replace(path, f"{root}{path}")
        return text.replace("9880", str(port)).replace("tta-user:tta-group", f"{user}:{group}")

    # -- config, directories and the daemon (as systemd would run it) ----------------------
    env = clean_env(UV_OFFLINE="1", TTA_CONFIG=f"{etc}/config.yaml", TTA_ENV_FILE=f"{etc}/environment")
    etc.mkdir(parents=True)
    # A 1 s interval, set where the shipped files set it (config.yaml): the environment file sets
    # nothing config.yaml sets, so the check's output has no "overrides" warning.
    shipped_yaml = relocate((REPO / "config/staging.yaml").read_text())
    interval_15, interval_1 = "\nmeasurement_interval: 15\n", "\nmeasurement_interval: 1\n"
    assert shipped_yaml.count(interval_15) == 1
    (etc / "config.yaml").write_text(shipped_yaml.replace(interval_15, interval_1))
    (etc / "environment").write_text(relocate((REPO / "config/environment").read_text()))
    (root / "etc/logrotate.d").mkdir()
    rotate_conf = root / "etc/logrotate.d/tta-staging"
    rotate_conf.write_text(relocate((REPO / "deploy/logrotate/tta-staging").read_text())
                           .replace("su tta-user tta-group", f"su {user} {group}"))
    rotate_conf.chmod(0o644)
    for d in (logdir, logdir / "codecarbon", state):
        d.mkdir(parents=True, mode=0o755)
        shutil.chown(d, user, group)
    old_day = datetime.now(UTC).date() - timedelta(days=100)  # the Retention blocks prune 90d
    old_file = logdir / "codecarbon" / f"emissions_{old_day}.json"
    old_file.write_text('{"run_id":"old","seq":1}\n')
    # The daemon runs this checkout's code (it starts while the install below is made).
    daemon = OpsDaemon(root / "daemon", port=port, command=[TTA_CARBON, "run"],
                       env={"TTA_CONFIG": f"{etc}/config.yaml", "TTA_ENV_FILE": f"{etc}/environment"})
    daemon.start(wait_ready=False)
    try:
        # -- what scripts/install_staging.sh leaves: the release checkout, and /opt/tta/staging
        # a clone of it synced like the installer does, root's and writable by root only. Both
        # carry this working tree's uncommitted edits too.
        source = root / "usr/local/src/tta-staging-carbon"
        listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                                capture_output=True).stdout.decode().split("\0")
        for checkout in (source, opt):
            subprocess.run(["git", "clone", "-q", str(REPO), str(checkout)], check=True)
            for rel in filter(None, listed):
                src = REPO / rel
                if src.is_file() and not src.is_symlink():
                    (checkout / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, checkout / rel)
        subprocess.run(["uv", "sync", "--frozen", "--no-dev", "--compile-bytecode", "--quiet"], cwd=opt,
                       env={**env, "UV_LINK_MODE": "copy"}, check=True, timeout=300)
        subprocess.run(["chmod", "-R", "go-w", str(opt)], check=True)
        daemon.wait_records(1)
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True,
                                check=True).stdout.strip()
        found = blocks(DOC.read_text())
        ran = 0
        for i, (tag, body) in enumerate(found):
            if tag != "bash local":
                continue
            script = relocate(body).replace("<commit>", commit)
            script = re.sub(r"^logrotate ", f"logrotate -s {root}/logrotate.status ", script, flags=re.M)
            proc = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=root, env=env,
                                  capture_output=True, text=True, timeout=120)
            assert proc.returncode == 0, f"block {i}:\n{script}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            ran += 1
            if i + 1 < len(found) and found[i + 1][0] == "text output":
                want = normalise(relocate(found[i + 1][1])).splitlines()
                got = normalise(proc.stdout).splitlines()
                energy = [ln for ln in got if "Energy method:" in ln]
                assert [ln for ln in got if "Energy method:" not in ln] == \
                       [ln for ln in want if "Energy method:" not in ln]
                assert len(energy) == 1 and energy[0].startswith(("⚠️  Energy method: estimated", "✅ Energy method"))
        assert ran >= 10
        assert daemon.health()["write_errors"] == 0
    finally:
        assert daemon.stop() == 0

    # What the blocks were meant to do, they did:
    assert not old_file.exists()  # retention: pruned ...
    archives = list((root / "var/backups/tta").glob("carbon-*.tar.gz"))
    assert len(archives) == 1
    with tarfile.open(archives[0]) as tar:  # ... after archiving it
        assert tar.getnames() == [old_file.name]
    assert (logdir / "carbon.log.1").exists()  # logrotate -f rotated the log
    # The upgrade and rollback blocks (git checkout, uv sync as root) left the code root's and
    # writable by root only, as the installer does (deployment.md, step 1).
    offending = [f"{p} {p.lstat().st_uid} {oct(p.lstat().st_mode)}" for p in [opt, *opt.rglob("*")]
                 if p.lstat().st_uid != 0 or (not p.is_symlink() and p.lstat().st_mode & 0o022)]
    assert offending == []
