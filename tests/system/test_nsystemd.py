"""Prove the namespaced-systemd harness on a toy Type=notify service, before the daemon exists.

The toy speaks the sd_notify protocol with a raw AF_UNIX datagram (no library), so a
failure here is the harness's, not a notify library's.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from nsystemd import NSystemd, NSystemdError, current_cgroup_dirs

TOY = r'''
import os, socket, sys, time

def notify(msg):
    addr = os.environ["NOTIFY_SOCKET"]
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.connect(addr)
    s.sendall(msg.encode())
    s.close()

time.sleep(float(os.environ.get("TOY_READY_DELAY", "0")))
notify("READY=1\nSTATUS=toy ready")
print("toy started", flush=True)
n = 0
while True:
    n += 1
    if os.environ.get("TOY_PING", "1") == "1":
        notify(f"WATCHDOG=1\nSTATUS=tick {n}")
    time.sleep(0.2)
'''


def toy_unit(script: Path, *extra: str) -> str:
    # /usr/bin/python3 (the distro's 3.11) is enough for the toy and lives outside /root.
    return "\n".join(
        [
            "[Unit]",
            "Description=toy notify service",
            "[Service]",
            "Type=notify",
            "NotifyAccess=main",
            f"ExecStart=/usr/bin/python3 {script}",
            *extra,
            "",
        ]
    )


@pytest.fixture
def toy_script(tmp_path: Path) -> Path:
    p = tmp_path / "toy.py"
    p.write_text(TOY)
    return p


def test_ready_gates_active_and_status_shows(nsystemd: Callable[..., NSystemd], toy_script: Path) -> None:
    sd = nsystemd({"toy.service": toy_unit(toy_script, "Environment=TOY_READY_DELAY=1.5")})
    t0 = time.monotonic()
    sd.systemctl("start", "--no-block", "toy.service", check=True)
    time.sleep(0.5)
    # Before READY=1 the unit must still be activating, even though the process runs.
    assert sd.show("toy.service", "ActiveState")["ActiveState"] == "activating"
    sd.wait_active("toy.service", timeout=10)
    assert time.monotonic() - t0 >= 1.4
    status = sd.status("toy.service")
    assert "Active: active (running)" in status
    assert 'Status: "t' in status  # "toy ready" or "tick N": the STATUS= line made it through
    assert "toy started" in sd.journalctl("-u", "toy.service")


def test_watchdog_kills_and_restarts(nsystemd: Callable[..., NSystemd], toy_script: Path) -> None:
    sd = nsystemd(
        {
            "toy.service": toy_unit(
                toy_script,
                "Environment=TOY_PING=0",
                "WatchdogSec=1",
                "Restart=on-failure",
                "RestartSec=100ms",
            )
        }
    )
    sd.systemctl("start", "toy.service", check=True)
    first = sd.show("toy.service", "MainPID")["MainPID"]
    restarts = lambda: int(sd.show("toy.service", "NRestarts")["NRestarts"])  # noqa: E731
    deadline = time.monotonic() + 10
    while restarts() < 1:
        assert time.monotonic() < deadline, sd.status("toy.service")
        time.sleep(0.1)
    sd.wait_active("toy.service")
    assert sd.show("toy.service", "MainPID")["MainPID"] != first
    assert "Watchdog timeout" in sd.journalctl("-u", "toy.service")


def test_pinging_service_is_not_killed(nsystemd: Callable[..., NSystemd], toy_script: Path) -> None:
    # The negative of the test above: the same watchdog with pings must leave it alone.
    sd = nsystemd({"toy.service": toy_unit(toy_script, "WatchdogSec=1", "Restart=on-failure")})
    sd.systemctl("start", "toy.service", check=True)
    time.sleep(2.5)
    assert sd.show("toy.service", "NRestarts", "ActiveState") == {"NRestarts": "0", "ActiveState": "active"}


def test_host_is_untouched(nsystemd: Callable[..., NSystemd], tmp_path: Path) -> None:
    marker = Path("/tmp") / f"nsystemd-host-marker-{os.getpid()}"
    marker.write_text("host")
    cgroups_before = {p for d in current_cgroup_dirs() for p in d.rglob("*") if p.is_dir()}
    try:
        sd = nsystemd()
        # Inside: a fresh /tmp (our marker is not there) but the test's work dir is.
        assert sd.run(["test", "-e", str(marker)]).returncode == 1
        assert sd.run(["test", "-d", str(tmp_path)]).returncode == 0
        # Writes to /etc, /opt, /var/log, /var/lib and useradd land in private layers.
        sd.run(
            "groupadd -r nsd-probe && useradd -r -g nsd-probe -M -s /usr/sbin/nologin nsd-probe"
            " && mkdir -p /etc/nsd-probe /opt/nsd-probe /var/log/nsd-probe /var/lib/nsd-probe /var/cache/nsd-probe"
            " && touch /tmp/nsd-probe",
            check=True,
        )
        assert "nsd-probe" in sd.run(["getent", "passwd", "nsd-probe"], check=True).stdout
        # The manager's cgroups live below ours, not in the host's hierarchies.
        assert sd.run(["cat", "/proc/1/cgroup"], check=True).stdout.count("/init.scope") >= 2
        sd.stop()
    finally:
        marker_ok = marker.read_text() == "host"
        marker.unlink()
    assert marker_ok
    # Not a byte comparison: other tools on a shared machine may add users meanwhile.
    assert "nsd-probe" not in Path("/etc/passwd").read_text() + Path("/etc/group").read_text()
    for p in ("/etc/nsd-probe", "/opt/nsd-probe", "/var/log/nsd-probe", "/var/lib/nsd-probe",
              "/var/cache/nsd-probe", "/tmp/nsd-probe"):
        assert not Path(p).exists(), p
    assert {p for d in current_cgroup_dirs() for p in d.rglob("*") if p.is_dir()} == cgroups_before


def test_failed_boot_aborts_before_systemd_and_cleans_up(nsystemd_available: None, tmp_path: Path) -> None:
    # A shared dir that does not exist makes the INNER script's bind mount fail: set -e
    # must stop it before systemd runs, start() must say so, and no cgroup may remain.
    sd = NSystemd(tmp_path / "w", share=[tmp_path / "missing"])
    with pytest.raises(NSystemdError, match="boot failed(.|\n)*missing does not exist"):
        sd.start()
    assert "systemd" not in (tmp_path / "w" / "nsystemd-console.log").read_text().lower().replace("nsystemd", "")
    assert not any((d / sd.name).exists() for d in current_cgroup_dirs())
