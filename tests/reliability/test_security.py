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


@pytest.mark.parametrize("how", ["yaml-block", "environment-cr"])
def test_token_with_a_control_character_is_refused_at_start_and_never_echoed(tmp_path, how, figures):
    """A token ending in a control character (a YAML `|` block keeps "\\n"; `$(cat token.txt)` of a CRLF file leaves "\\r"): `run` and `check` refuse it in one line, exit 78, the token in no output."""
    import subprocess

    from tests.support.daemon import REPO, TTA_CARBON, clean_env

    token = "tok-" + os.urandom(12).hex()
    config, envfile = tmp_path / "config.yaml", tmp_path / "environment"
    lines = ["offline: false", "country_iso_code: FRA", f"output_dir: {tmp_path / 'out'}",
             f"state_dir: {tmp_path / 'state'}", "log_file: ''"]
    envfile.write_text("")
    env = clean_env()
    if how == "yaml-block":
        config.write_text("\n".join(lines) + f"\nelectricitymaps_token: |\n  {token}\n")
    else:
        config.write_text("\n".join(lines) + "\n")
        env["CARBON_ELECTRICITYMAPS_TOKEN"] = token + "\r"
    outputs = {}
    for command in (["run"], ["check", "--no-daemon"]):
        proc = subprocess.run([*TTA_CARBON, *command, "--config", str(config), "--env-file", str(envfile)],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
        outputs[command[0]] = (proc.returncode, proc.stdout + proc.stderr)
    run_rc, run_out = outputs["run"]
    assert run_rc == 78, run_out
    assert len(run_out.strip().splitlines()) == 1 and "control character" in run_out, run_out
    assert outputs["check"][0] != 0 and "control character" in outputs["check"][1], outputs["check"]
    leaks = [name for name, (_, text) in outputs.items() if token in text or token[4:] in text]
    assert leaks == [] and not (tmp_path / "out").exists()
    figures.update(how=how, run_exit=run_rc, check_exit=outputs["check"][0], leaks=0,
                   message=run_out.strip().split(": ", 2)[-1][:120])


def test_a_token_quoted_by_a_library_error_is_scrubbed_in_every_rendering(tmp_path, figures):
    """http.client refuses a header value with "\\r" and quotes it as bytes repr (b'tok\\r'): the provider's error, the log file and /healthz show *** instead."""
    from src.components.carbon.intensity import ElectricityMapsProvider
    from src.components.carbon.secret import Secret
    from src.service import logs

    token = "tok-" + os.urandom(12).hex() + "\r"  # past the config check only through the library API
    provider = ElectricityMapsProvider(Secret(token), "FR", "http://127.0.0.1:9/v3/carbon-intensity/latest",
                                       timeout_s=0.5)
    assert provider.fetch_once() is False
    error = provider.last_error
    assert "Invalid header value" in error and "***" in error, error
    tee = logs.TeeWriter()
    tee.secrets = (Secret(token),)
    tee.reopen(tmp_path / "carbon.log")
    for form in (token, repr(token), repr(token.encode()), token.replace("\r", "%0D"), '"tok\\r"'):
        tee.write(f"failed: {form}")
    logged = (tmp_path / "carbon.log").read_text()
    assert token.strip()[4:] not in error and token.strip()[4:] not in logged, (error, logged)
    figures.update(error=error[:100], log_lines=len(logged.splitlines()), leaks=0)


def test_healthz_withholds_error_texts_without_credentials(daemon_factory, tmp_path, figures):
    """Basic auth on: /healthz still answers without credentials (verdict, counters) but withholds error texts; with the /metrics credentials it gives them."""
    import base64
    import json
    import urllib.request

    import bcrypt

    from src.components.carbon.health import WITHHELD

    user, password = "prometheus", "correct horse battery staple"
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users:\n  {user}: '{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()}'\n")
    d = daemon_factory(settings={"metrics_web_config": str(web), "offline": "false",
                                 "electricitymaps_url": "http://127.0.0.1:9/v3/carbon-intensity/latest",
                                 "electricitymaps_timeout": "0.5"},
                       env={"CARBON_ELECTRICITYMAPS_TOKEN": "tok-" + os.urandom(8).hex()}).start()
    deadline = time.monotonic() + 20
    while True:
        _, body = http_get(d.url("/healthz"))
        public = json.loads(body)
        if public["intensity_error"] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    req = urllib.request.Request(d.url("/healthz"), headers={
        "Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            full = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        full = json.loads(exc.read())
    assert public["intensity_error"] == WITHHELD, public
    assert "cannot connect" in full["intensity_error"], full
    assert http_get(d.url("/metrics"))[0] == 401
    assert public.keys() == full.keys()
    figures.update(public=WITHHELD, authenticated=full["intensity_error"][:60], metrics_without_credentials=401)


def test_a_trickling_intensity_api_times_out_and_the_value_ages_out(figures):
    """An Electricity Maps endpoint that answers one byte every 0.3 s never trips a per-recv timeout: the last value stayed labelled live `electricitymaps` forever. Now each fetch has a total deadline, the value turns `electricitymaps_cached` and expires after max_stale_s; one stuck request at most."""
    import socket
    import threading

    from src.components.carbon.intensity import ElectricityMapsProvider
    from src.components.carbon.secret import Secret
    from tests.support.fake_electricitymaps import FakeElectricityMaps

    good = FakeElectricityMaps(value=123.5)
    clock = [1000.0]
    try:
        provider = ElectricityMapsProvider(Secret("tok"), "FR", good.base_url, timeout_s=1.0, max_stale_s=600,
                                           clock=lambda: clock[0])
        assert provider.fetch_once() and provider.current(clock[0]).source == "electricitymaps"
    finally:
        good.stop()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    stop = threading.Event()

    def trickle() -> None:
        while not stop.is_set():
            try:
                listener.settimeout(0.2)
                conn, _ = listener.accept()
            except OSError:
                continue
            for byte in b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n":
                if stop.wait(0.3):
                    break
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    break
            conn.close()

    server = threading.Thread(target=trickle, daemon=True)
    server.start()
    try:
        provider.url = f"http://127.0.0.1:{listener.getsockname()[1]}/v3/carbon-intensity/latest?zone=FR"
        t0 = time.monotonic()
        ok = provider.fetch_once()
        took = time.monotonic() - t0
        assert not ok and took < 2.5, took
        assert provider.last_error.startswith("timed out: no complete answer within 1 s"), provider.last_error
        assert provider.current(clock[0]).source == "electricitymaps_cached"
        again = provider.fetch_once()  # the first request is still trickling: no second thread
        assert not again and "still unanswered" in provider.last_error
        clock[0] += 601
        assert provider.current(clock[0]) is None  # aged out: the chain's next step answers
    finally:
        stop.set()
        server.join(5)
        listener.close()
    figures.update(deadline_s=1.0, fetch_s=round(took, 2), label_after="electricitymaps_cached",
                   expired_after_s=600, stuck_threads_max=1)


@pytest.mark.parametrize("name", ["Proj\x85Next", "Proj\x9bcsi"])
def test_project_name_with_a_c1_control_is_refused_at_start(tmp_path, name, figures):
    """A project name holding a C1 control (U+0085 NEL, U+009B CSI: a terminal reads CSI as an escape sequence), which went into every record, log line and label: `run` refuses it in one line, exit 78, nothing written."""
    import subprocess

    from tests.support.daemon import REPO, TTA_CARBON, clean_env

    env = clean_env(CARBON_PROJECT_NAME=name)
    proc = subprocess.run([*TTA_CARBON, "run", "--config", "/dev/null", "--env-file", "/dev/null",
                           "--set", f"output_dir={tmp_path / 'out'}", "--set", f"state_dir={tmp_path / 'state'}",
                           "--set", "log_file="],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 78, proc.stderr
    assert len(lines) == 1 and "project_name" in lines[0] and name not in lines[0], proc.stderr
    assert not (tmp_path / "out").exists()
    figures.update(code=f"U+{ord(name[4]):04X}", exit=78, message=lines[0].split(": ", 1)[-1][:90])
