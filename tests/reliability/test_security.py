"""Exposure: loopback bind, no outbound connection offline, file modes, no secret in any output."""

from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import time
from pathlib import Path

import pytest

from tests.reliability.conftest import http_get
from tests.support.daemon import PrefixedDaemon


def test_metrics_bind_loopback_by_default_and_file_modes(daemon_factory, figures):
    """Default metrics address is loopback only; NDJSON 0644, state 0640, log 0640 (umask 022)."""
    from src.orchestration import TTAConfig

    assert TTAConfig.model_fields["metrics_address"].default == "127.0.0.1"
    d = daemon_factory().start()  # tests pass no metrics_address: the default is what binds
    d.wait_for_records(1)
    deadline = time.monotonic() + 10
    while not (d.state_dir / "carbon_state.json").exists():  # saved just after the record is appended
        assert time.monotonic() < deadline, d.stderr()
        time.sleep(0.05)
    inode_listen = set()
    port_hex = f"{d.port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in open(table).read().splitlines()[1:]:
            local, st = line.split()[1], line.split()[3]
            if local.endswith(":" + port_hex) and st == "0A":
                inode_listen.add(local)
    assert inode_listen == {f"0100007F:{port_hex}"}, inode_listen
    modes = {
        "ndjson": stat.S_IMODE(next(d.output_dir.glob("emissions_*.json")).stat().st_mode),
        "state": stat.S_IMODE((d.state_dir / "carbon_state.json").stat().st_mode),
        "log": stat.S_IMODE(d.log_file.stat().st_mode),
    }
    assert modes == {"ndjson": 0o644, "state": 0o640, "log": 0o640}, {k: oct(v) for k, v in modes.items()}
    assert d.stop() == 0
    figures.update(listen="127.0.0.1 only", **{k: oct(v) for k, v in modes.items()})


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace not installed")
def test_offline_makes_no_outbound_connection(tmp_path, figures):
    """Offline mode in a network namespace with only loopback, under strace -f: no connect() to anything but loopback or a unix socket."""
    trace = tmp_path / "connect.trace"
    d = PrefixedDaemon(workdir=tmp_path / "d", prefix=[
        "unshare", "--net", "--", "sh", "-c", 'ip link set lo up 2>/dev/null; exec "$@"', "sh",
        "strace", "-f", "-qq", "-e", "trace=connect", "-o", str(trace)])
    # d.proc is strace; a signal to it detaches and leaves the daemon running, so signal the daemon itself.
    daemon_pid = None
    try:
        d.start(timeout=60)
        daemon_pid = int(Path(f"/proc/{d.proc.pid}/task/{d.proc.pid}/children").read_text().split()[0])
        d.wait_for_records(2, timeout=60)
        os.kill(daemon_pid, signal.SIGTERM)
        assert d.proc.wait(15) == 0  # strace exits with its tracee's status
    finally:
        if daemon_pid is not None and d.proc.poll() is None:
            os.kill(daemon_pid, signal.SIGKILL)
        d.stop(signal.SIGKILL)
    assert d.records()[-1]["final"] is True
    calls = [ln for ln in trace.read_text().splitlines() if "connect(" in ln]
    outbound = [ln for ln in calls if ("AF_INET" in ln or "AF_INET6" in ln)
                and not re.search(r'inet_addr\("127\.|inet_pton\(AF_INET6, "::1"', ln)]
    assert outbound == [], outbound
    figures.update(connect_calls=len(calls), outbound=0,
                   families=sorted({m.group(1) for ln in calls if (m := re.search(r"sa_family=(\w+)", ln))}))


def test_planted_token_never_appears(daemon_factory, figures):
    """CARBON_ELECTRICITYMAPS_TOKEN planted (offline=false): absent from logs, stderr, records, state, /metrics, /healthz."""
    token = "tok-" + os.urandom(12).hex()
    # Online mode, pointed at a closed loopback port: the token is used and refused, never leaves this machine.
    d = daemon_factory(env={"CARBON_ELECTRICITYMAPS_TOKEN": token, "CARBON_OFFLINE": "false",
                            "CARBON_ELECTRICITYMAPS_URL": "http://127.0.0.1:9/v3/carbon-intensity/latest",
                            "CARBON_LOG_LEVEL": "debug"}).start()
    d.wait_for_records(2)
    bodies = [http_get(d.url(p))[1] for p in ("/metrics", "/healthz", "/", "/nope")]
    assert d.stop() == 0
    places = {p: p.read_bytes() for p in d.workdir.rglob("*") if p.is_file() and not p.is_socket()}
    assert any(p.name == "carbon.log" for p in places) and any(p.name.startswith("emissions_") for p in places)
    leaks = [str(p) for p, data in places.items() if token.encode() in data]
    leaks += [f"http body {i}" for i, b in enumerate(bodies) if token.encode() in b]
    assert leaks == []
    figures.update(files_checked=len(places), http_bodies=len(bodies), leaks=0)
