"""`tta-carbon check` / scripts/health_check_carbon.py against a real daemon and real failures.

Each case asserts every output line exactly (numbers that depend on timing are matched by
a pattern and range-checked) and the exit code: 0 healthy, 1 failing; a warning alone is 0.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.fixtures.fake_rapl import FakeRapl
from tests.integration.ops_helpers import (
    REPO,
    TTA_CARBON,
    OpsDaemon,
    as_user,
    clean_env,
    read_only,
    require_root,
)

ESTIMATED = "⚠️  Energy method: estimated, not measured (cpu=codecarbon_cpu_load, ram=codecarbon_ram_model)"
HIDDEN = "codecarbon deliberately hidden by this test"


def today_file() -> str:
    return f"emissions_{datetime.now(UTC):%Y-%m-%d}.json"


def assert_lines(actual: list[str], expected: list[str | tuple[str, int, int]]) -> None:
    """Exact lines; a (regex, lo, hi) tuple must fullmatch and its one number lie in [lo, hi]."""
    assert len(actual) == len(expected), "\n".join(actual)
    for got, want in zip(actual, expected, strict=True):
        if isinstance(want, str):
            assert got == want
        else:
            pattern, lo, hi = want
            m = re.fullmatch(pattern, got)
            assert m, f"{got!r} !~ {pattern!r}"
            assert lo <= int(m.group(1)) <= hi, got


def static_ok(s: OpsDaemon) -> list[str]:
    return [f"✅ Output directory writable: {s.output_dir}", "✅ codecarbon library: Available",
            "✅ Configuration: Valid"]


@pytest.fixture(scope="module")
def live() -> Iterator[dict[str, OpsDaemon]]:
    """Two daemons started together (they share the start-up cost): one healthy, one whose
    measurement loop hangs after the first interval while its HTTP thread keeps answering.

    The hang is at the hardware boundary: that daemon measures a fake RAPL tree, and once
    its first record is written the package counter's energy_uj becomes a FIFO
    (FakeRapl.stall), so the next read blocks in open() for good."""
    root = Path(tempfile.mkdtemp(prefix="tta-hc-"))
    root.chmod(0o755)
    try:
        with FakeRapl(root / "powercap") as rapl:  # exit: stops the counters, releases the FIFO
            rapl.start_live({"package-0": 12.0}, tick=0.05)
            started = {
                "healthy": OpsDaemon(root / "healthy").start(wait_ready=False),
                "stalled": OpsDaemon(root / "stalled",
                                     settings={"energy_source": "rapl", "powercap_root": str(rapl.root)},
                                     ).start(wait_ready=False),
            }
            try:
                stalled = started["stalled"]
                stalled.wait_records(1)  # its next read is an interval (1 s) away: stall before it
                rapl.stall("package-0")
                assert stalled.health()["records_written"] == 1, "stalled too late: a second record was written"
                yield started
            finally:
                started["healthy"].stop()
                started["stalled"].stop(signal.SIGKILL)  # hung on purpose: only a kill ends it (as the watchdog would)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_healthy(live: dict[str, OpsDaemon]) -> None:
    d = live["healthy"]
    d.wait_codecarbon()
    s = d
    rc, lines, _ = s.check()
    assert_lines(lines, [
        "✅ Carbon component: OK",
        *static_ok(s),
        f"✅ Daemon: /metrics reachable at http://127.0.0.1:{s.port}/metrics",
        (r"✅ Last measurement: (\d+)s ago \(interval 1s\)", 0, 3),
        (rf"✅ Today's records: {today_file()} updated (\d+)s ago", 0, 3),
        "✅ Write errors: 0",
        ESTIMATED,  # a warning: still healthy
    ])
    assert rc == 0


def test_healthy_json(live: dict[str, OpsDaemon]) -> None:
    d = live["healthy"]
    d.wait_codecarbon()
    rc, lines, _ = d.check("--json")
    doc = json.loads("\n".join(lines))
    assert doc["healthy"] is True
    assert [(c["name"], c["status"]) for c in doc["checks"]] == [
        ("component", "ok"), ("output_dir", "ok"), ("codecarbon", "ok"), ("configuration", "ok"),
        ("daemon", "ok"), ("measurement", "ok"), ("records", "ok"), ("write_errors", "ok"), ("energy_method", "warn"),
    ]
    assert doc["checks"][-1]["line"] == ESTIMATED.removeprefix("⚠️  ")
    assert rc == 0


def test_guide_script_is_the_same_check(live: dict[str, OpsDaemon]) -> None:
    """The runbook line (fixed: with `uv run`) runs the same implementation as `tta-carbon check`."""
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv not on PATH")
    d = live["healthy"]
    d.wait_records(2)
    proc = subprocess.run([uv, "run", "--offline", "python", "scripts/health_check_carbon.py", *d.cli_args()],
                          capture_output=True, text=True, cwd=REPO, env=clean_env(), timeout=60)
    rc, lines, _ = d.check()
    strip = lambda ls: [re.sub(r"\d+s ago", "Ns ago", x) for x in ls]  # noqa: E731
    assert strip(proc.stdout.splitlines()) == strip(lines)
    assert proc.returncode == rc == 0


def test_stale_measurements_while_http_answers(live: dict[str, OpsDaemon]) -> None:
    d = live["stalled"]
    h = d.wait_for(lambda h: h["measurements"] >= 1 and time.time() - h["last_success_at"] > 3.5,
                   "the loop to stall for more than 3 intervals")
    assert h["measurements"] == 1  # the loop really stopped; /healthz still answers
    s = d
    rc, lines, _ = s.check()
    assert_lines(lines, [
        "❌ Carbon component: FAILING",
        *static_ok(s),
        f"✅ Daemon: /metrics reachable at http://127.0.0.1:{s.port}/metrics",
        (r"❌ Last measurement: stale, (\d+)s ago \(more than 3 intervals of 1s\)", 4, 30),
        (rf"❌ Today's records: {today_file()} last updated (\d+)s ago", 4, 30),
        "✅ Write errors: 0",
        "✅ Energy method: measured (cpu=rapl)",  # the one record came from the (fake) counters
    ])
    assert rc == 1


def test_daemon_down(world_tmp: Path) -> None:
    s = OpsDaemon(world_tmp)
    s.output_dir.mkdir()
    rc, lines, _ = s.check()
    assert_lines(lines, [
        "❌ Carbon component: FAILING",
        *static_ok(s),
        f"❌ Daemon: not reachable at http://127.0.0.1:{s.port}/metrics (Connection refused)",
    ])
    assert rc == 1


def test_hung_daemon_is_bounded_by_timeout(live: dict[str, OpsDaemon]) -> None:
    """SIGSTOP: the kernel still accepts the connection, nobody answers; --timeout bounds the wait."""
    d = live["healthy"]
    d.wait_records(1)
    s = d
    d.proc.send_signal(signal.SIGSTOP)
    try:
        t0 = time.monotonic()  # the default-timeout check runs alongside the --timeout 1 one
        default = subprocess.Popen([TTA_CARBON, "check", *s.cli_args()], stdout=subprocess.PIPE, text=True,
                                   env=clean_env(), cwd=REPO)
        rc, lines, elapsed = s.check("--timeout", "1")
        default_out, _ = default.communicate(timeout=30)
        default_elapsed = time.monotonic() - t0
    finally:
        d.proc.send_signal(signal.SIGCONT)
    expected = ["❌ Carbon component: FAILING", *static_ok(s),
                f"❌ Daemon: not reachable at http://127.0.0.1:{s.port}/metrics (timed out)"]
    assert_lines(lines, expected)
    assert rc == 1
    assert_lines(default_out.splitlines(), expected)
    assert default.returncode == 1
    # Both waits end (nothing hangs), no earlier than asked, and the default one about 4 s later.
    # (Upper bounds are loose: process start-up on a loaded 2-core runner can take seconds.)
    assert 1 <= elapsed < 15, elapsed
    assert 5 <= default_elapsed < 20, default_elapsed
    assert default_elapsed - elapsed > 2.5, (elapsed, default_elapsed)


def test_unwritable_dir_read_only_mount(world_tmp: Path) -> None:
    s = OpsDaemon(world_tmp)
    s.output_dir.mkdir()
    rc, lines, _ = s.check("--no-daemon", wrap=read_only(s.output_dir))
    assert_lines(lines, [
        "❌ Carbon component: FAILING",
        f"❌ Cannot write to output directory: cannot write to {s.output_dir}: Read-only file system",
        "✅ codecarbon library: Available",
        "✅ Configuration: Valid",
    ])
    assert rc == 1
    assert list(s.output_dir.iterdir()) == []


def test_unwritable_dir_as_unprivileged_user(world_tmp: Path) -> None:
    """The production mistake: output dir owned by root (0755), check run as the service user."""
    s = OpsDaemon(world_tmp)
    s.output_dir.mkdir(mode=0o755)
    rc, lines, _ = s.check("--no-daemon", wrap=as_user("nobody", "nogroup"))
    assert_lines(lines, [
        "❌ Carbon component: FAILING",
        f"❌ Cannot write to output directory: cannot write to {s.output_dir}: Permission denied",
        "✅ codecarbon library: Available",
        "✅ Configuration: Valid",
    ])
    assert rc == 1


# -- run as root, checked as the service account (issue 13, item 11a) ------------------------

def _static(s: OpsDaemon, as_user: str | None = None) -> list[tuple[str, str, str]]:
    """static_checks in this (root) process, on exactly the settings `s.check()` would use."""
    from src.service.cli import build_parser, load_config
    from src.service.healthcheck import static_checks

    args = build_parser().parse_args(["check", *s.cli_args()])
    load = lambda: load_config(args, environ={})  # noqa: E731
    checks, config = static_checks(load) if as_user is None else static_checks(load, as_user)
    assert config is not None
    return [(c.name, c.status, c.line) for c in checks]


def test_probe_as_another_user_uses_that_users_permissions(world_tmp: Path) -> None:
    """Root writes anywhere: the probe forks, drops to the account, and this process keeps its identity."""
    require_root()
    from src.components.carbon.directories import Account, OutputDirUnwritable, probe_writable_as

    nobody = Account.lookup("nobody")
    assert nobody is not None
    root_owned = world_tmp / "root-owned"
    root_owned.mkdir(mode=0o755)
    ids = (os.getuid(), os.geteuid(), os.getgid(), os.getegid(), os.getgroups())
    with pytest.raises(OutputDirUnwritable) as info:
        probe_writable_as(root_owned, nobody)
    assert str(info.value) == f"cannot write to {root_owned} as nobody (uid {nobody.uid}): Permission denied"
    probe_writable_as(root_owned, None)  # as ourselves (root): writable
    os.chown(root_owned, nobody.uid, nobody.gid)
    probe_writable_as(root_owned, nobody)  # owned by nobody: writable for nobody
    group_dir = world_tmp / "group-writable"
    group_dir.mkdir()
    os.chown(group_dir, 0, nobody.gid)
    group_dir.chmod(0o770)
    probe_writable_as(group_dir, nobody)  # through its group, as systemd's Group= would give it
    assert (os.getuid(), os.geteuid(), os.getgid(), os.getegid(), os.getgroups()) == ids
    assert list(root_owned.iterdir()) == [] and list(group_dir.iterdir()) == []


def test_root_check_fails_when_the_service_user_cannot_write(world_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The runbook runs the check as root: it must answer for the unit's User=, not for root."""
    require_root()
    import src.service.healthcheck as healthcheck

    nobody = pwd.getpwnam("nobody")
    monkeypatch.setattr(healthcheck, "SERVICE_USER", "nobody", raising=False)  # this host's service user
    s = OpsDaemon(world_tmp)
    s.output_dir.mkdir(mode=0o755)  # created by hand as root, as in the production mistake
    s.state_dir.mkdir(mode=0o750)
    checks = _static(s)
    assert [(name, status) for name, status, _ in checks] == [
        ("output_dir", "fail"), ("state_dir", "fail"), ("codecarbon", "ok"), ("configuration", "ok")]
    assert [line for _, _, line in checks[:2]] == [
        f"Cannot write to output directory: cannot write to {s.output_dir} as nobody (uid {nobody.pw_uid}): "
        "Permission denied",
        f"Cannot write to state directory: cannot write to {s.state_dir} as nobody (uid {nobody.pw_uid}): "
        "Permission denied",
    ]
    # As systemd's LogsDirectory= / StateDirectory= leave them: owned by User=. Then the lines are the guide's.
    for d in (s.output_dir, s.state_dir):
        os.chown(d, nobody.pw_uid, nobody.pw_gid)
    assert [c[2] for c in _static(s)] == [line.removeprefix("✅ ") for line in static_ok(s)]
    assert _static(s, as_user="") == _static(s)  # as root itself: writable either way
    assert list(s.output_dir.iterdir()) == [] and list(s.state_dir.iterdir()) == []


def test_root_check_as_a_missing_user(world_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require_root()
    import src.service.healthcheck as healthcheck

    s = OpsDaemon(world_tmp)
    s.output_dir.mkdir()
    # The default service user absent (a development machine): the probe runs as ourselves, as before.
    monkeypatch.setattr(healthcheck, "SERVICE_USER", "tta-no-such-user")
    assert [c[2] for c in _static(s)] == [line.removeprefix("✅ ") for line in static_ok(s)]
    # Named explicitly (`as_user`), a missing user is a failure, not a silent probe as root.
    assert _static(s, as_user="tta-no-such-user")[0] == (
        "output_dir", "fail", "Cannot check output directory: no such user tta-no-such-user")


def test_service_user_is_the_units_user() -> None:
    from src.service.healthcheck import SERVICE_USER

    unit = (REPO / "deploy" / "systemd" / "tta-staging-carbon.service").read_text()
    assert re.findall(r"^User=(.*)$", unit, re.MULTILINE) == [SERVICE_USER]


def test_missing_dir(world_tmp: Path) -> None:
    s = OpsDaemon(world_tmp)
    rc, lines, _ = s.check("--no-daemon")
    assert_lines(lines, [
        "❌ Carbon component: FAILING",
        f"❌ Output directory does not exist: {s.output_dir}",
        "✅ codecarbon library: Available",
        "✅ Configuration: Valid",
    ])
    assert rc == 1
    assert not s.output_dir.exists()  # the check never creates it


def test_path_is_a_file(world_tmp: Path) -> None:
    s = OpsDaemon(world_tmp)
    s.output_dir.write_text("not a directory\n")
    rc, lines, _ = s.check()
    assert lines == [f"❌ Configuration: invalid: invalid output_dir='{s.output_dir}' (argument output_dir): "
                     "exists and is not a directory"]
    assert rc == 1


def test_config_invalid(world_tmp: Path) -> None:
    s = OpsDaemon(world_tmp)
    s.output_dir.mkdir()
    s.config.write_text("# staging\nlog_level: loud\n")
    rc, lines, _ = s.check()
    assert lines == [f"❌ Configuration: invalid: invalid log_level='loud' ({s.config} line 2): "
                     "Input should be 'debug', 'info', 'warning', 'error' or 'critical'"]
    assert rc == 1


def test_key_in_environment_file_and_config_yaml_is_a_warning_naming_both(world_tmp: Path) -> None:
    """Issue 13: the environment file outranks config.yaml, so a key in both makes the YAML line dead."""
    s = OpsDaemon(world_tmp)
    s.output_dir.mkdir()
    s.config.write_text("# staging\nlog_level: info\nproject_name: TTA-Staging\n"
                        "electricitymaps_token: yaml-secret-41\n")
    env_file = s.workdir / "environment"
    env_file.write_text("# env\nCARBON_LOG_LEVEL=debug\nCARBON_ELECTRICITYMAPS_TOKEN=env-secret-42\nTTA_ENV=staging\n")
    tail = "(the YAML value is ignored; set it in one place)"
    expected = [
        "✅ Carbon component: OK",
        *static_ok(s),
        f"⚠️  Configuration: CARBON_LOG_LEVEL=debug in {env_file} line 2 overrides log_level: info "
        f"in {s.config} line 2 {tail}",
        f"⚠️  Configuration: CARBON_ELECTRICITYMAPS_TOKEN=*** in {env_file} line 3 overrides "
        f"electricitymaps_token: *** in {s.config} line 4 {tail}",
    ]
    rc, lines, _ = s.check("--no-daemon")
    assert_lines(lines, expected)
    assert rc == 0  # a warning: still healthy
    rc, lines, _ = s.check("--no-daemon", "--json")
    assert "secret-4" not in "\n".join(lines)
    doc = json.loads("\n".join(lines))
    assert doc["healthy"] is True and rc == 0
    assert [(c["name"], c["status"]) for c in doc["checks"]] == [
        ("component", "ok"), ("output_dir", "ok"), ("codecarbon", "ok"), ("configuration", "ok"),
        ("config_override", "warn"), ("config_override", "warn"),
    ]
    # Set once (here: removed from the environment file), the warning goes.
    env_file.write_text("# env\nTTA_ENV=staging\n")
    rc, lines, _ = s.check("--no-daemon")
    assert_lines(lines, ["✅ Carbon component: OK", *static_ok(s)])


# -- codecarbon missing: faked at the library boundary only -----------------------------------

def hide_codecarbon(root: Path) -> dict[str, str]:
    fake = root / "no-codecarbon" / "codecarbon"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(f"raise ImportError({HIDDEN!r})\n")
    return {"PYTHONPATH": str(fake.parent)}


def fake_rapl(root: Path) -> Path:
    """The layout the kernel's powercap driver uses; the only thing faked is hardware."""
    zone = root / "powercap" / "intel-rapl" / "intel-rapl:0"
    zone.mkdir(parents=True)
    (zone / "name").write_text("package-0\n")
    (zone / "energy_uj").write_text("1000000\n")
    (zone / "max_energy_range_uj").write_text("262143328850\n")
    return root / "powercap"


def test_codecarbon_missing_is_a_warning(world_tmp: Path) -> None:
    s = OpsDaemon(world_tmp)
    s.output_dir.mkdir()
    rc, lines, _ = s.check("--no-daemon", env=hide_codecarbon(world_tmp), overrides={"intensity_g_per_kwh": "250"})
    assert_lines(lines, [
        "✅ Carbon component: OK",
        f"✅ Output directory writable: {s.output_dir}",
        f"⚠️  codecarbon library: Not available (graceful degradation): ImportError: {HIDDEN}",
        "✅ Configuration: Valid",
    ])
    assert rc == 0


def test_codecarbon_missing_without_intensity_is_a_config_error(world_tmp: Path) -> None:
    s = OpsDaemon(world_tmp)
    s.output_dir.mkdir()
    rc, lines, _ = s.check("--no-daemon", env=hide_codecarbon(world_tmp))
    assert lines == ["❌ Configuration: invalid: invalid configuration: no carbon intensity: codecarbon (which "
                     "ships the country energy mix) is not installed; set intensity_g_per_kwh "
                     "(CARBON_INTENSITY_G_PER_KWH)"]
    assert rc == 1


def test_codecarbon_missing_daemon_measures_with_rapl(world_tmp: Path, daemons: list[OpsDaemon]) -> None:
    """Graceful degradation end to end: no codecarbon, RAPL readable -> healthy, CPU measured by RAPL,
    RAM by our estimate of codecarbon's model, and the check says codecarbon is missing in the daemon."""
    env = hide_codecarbon(world_tmp)
    s = OpsDaemon(world_tmp, env=env, settings={"intensity_g_per_kwh": "250",
                                                "powercap_root": str(fake_rapl(world_tmp))})
    daemons.append(s.start())
    s.wait_records(1)
    rc, lines, _ = s.check(env=env)
    assert_lines(lines, [
        "✅ Carbon component: OK",
        f"✅ Output directory writable: {s.output_dir}",
        f"⚠️  codecarbon library: Not available (graceful degradation): ImportError: {HIDDEN}",
        "✅ Configuration: Valid",
        f"✅ Daemon: /metrics reachable at http://127.0.0.1:{s.port}/metrics",
        (r"✅ Last measurement: (\d+)s ago \(interval 1s\)", 0, 3),
        "⚠️  codecarbon library: Not available in the daemon (graceful degradation): codecarbon unavailable "
        f"(codecarbon cannot be imported: ImportError: {HIDDEN}); using cpu_load_tdp",
        (rf"✅ Today's records: {today_file()} updated (\d+)s ago", 0, 3),
        "✅ Write errors: 0",
        "⚠️  Energy method: estimated, not measured (cpu=rapl, ram=constant)",
    ])
    assert rc == 0


def test_codecarbon_missing_no_rapl_still_estimates(world_tmp: Path, daemons: list[OpsDaemon]) -> None:
    """The default estimate needs no codecarbon import: it degrades to the documented default TDP."""
    env = hide_codecarbon(world_tmp)
    s = OpsDaemon(world_tmp, env=env, settings={"intensity_g_per_kwh": "250",
                                                "powercap_root": str(world_tmp / "no-powercap")})
    daemons.append(s.start())
    s.wait_for(lambda h: h["energy_source_degraded"] != "", "the degradation")
    s.wait_records(1)
    rc, lines, _ = s.check(env=env)
    assert "⚠️  Energy method: estimated, not measured (cpu=cpu_load_tdp, ram=constant)" in lines
    assert any(line.startswith("⚠️  codecarbon library: Not available in the daemon (graceful degradation)")
               for line in lines)
    assert lines[0] == "✅ Carbon component: OK"
    assert rc == 0


def test_codecarbon_source_missing_fails_on_energy_source(world_tmp: Path, daemons: list[OpsDaemon]) -> None:
    env = hide_codecarbon(world_tmp)
    s = OpsDaemon(world_tmp, env=env, settings={"intensity_g_per_kwh": "250", "energy_source": "codecarbon",
                                                "powercap_root": str(world_tmp / "no-powercap")})
    daemons.append(s.start())
    rc, lines, _ = s.check(env=env)
    assert f"❌ Energy source: unavailable: codecarbon cannot be imported: ImportError: {HIDDEN}" in lines
    assert lines[0] == "❌ Carbon component: FAILING"
    assert rc == 1


def test_write_errors_fail_while_failing_then_warn_once_recovered(world_tmp: Path, daemons: list[OpsDaemon]) -> None:
    """Today's file replaced by a directory: every append fails (root ignores modes, not this)."""
    s = OpsDaemon(world_tmp)
    daemons.append(s.start())
    s.wait_records(1)
    today = s.output_dir / today_file()
    today.rename(s.output_dir / "kept-aside.json")
    today.mkdir()
    s.wait_for(lambda h: h["records_pending"] >= 1, "a record to wait in memory")
    rc, lines, _ = s.check()
    failing = [ln for ln in lines if ln.startswith("❌ Write errors:")]
    assert len(failing) == 1 and "record(s) waiting" in failing[0] and "Is a directory" in failing[0], lines
    assert rc == 1
    today.rmdir()
    s.wait_for(lambda h: h["records_pending"] == 0 and not h["last_write_error"], "the buffered records to land")
    rc, lines, _ = s.check()
    assert any(re.fullmatch(r"⚠️  Write errors: \d+ earlier, none pending now", ln) for ln in lines), lines
    assert rc == 0
