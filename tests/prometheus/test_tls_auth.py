"""TLS and basic auth on /metrics, with real clients: curl, our health check, and Prometheus."""

from __future__ import annotations

import shutil
import subprocess

import bcrypt
import pytest

from tests.support.daemon import REPO, TTA_CARBON, clean_env

USER, PASSWORD = "prometheus", "correct horse battery staple"


@pytest.fixture
def tls_daemon(daemon_factory, tmp_path):
    if shutil.which("openssl") is None or shutil.which("curl") is None:
        pytest.skip("needs openssl and curl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    web = tmp_path / "web.yml"
    web.write_text(f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"
                   f"basic_auth_users:\n  {USER}: '{hashed}'\n")
    d = daemon_factory(settings={"metrics_web_config": str(web)}).start()
    d.wait_for_records(1)
    return d, cert, web


def curl(d, cert, *args: str) -> tuple[int, str]:
    proc = subprocess.run(["curl", "-sS", "--max-time", "5", "--cacert", str(cert), "-o", "/dev/null",
                           "-w", "%{http_code}", *args, f"https://127.0.0.1:{d.port}/metrics"],
                          capture_output=True, text=True)
    return proc.returncode, proc.stdout


def test_curl_over_tls_with_and_without_credentials(tls_daemon):
    d, cert, _ = tls_daemon
    assert curl(d, cert, "-u", f"{USER}:{PASSWORD}") == (0, "200")
    assert curl(d, cert, "-u", f"{USER}:wrong") == (0, "401")
    assert curl(d, cert, "-u", f"nobody:{PASSWORD}") == (0, "401")
    assert curl(d, cert) == (0, "401")
    plain = subprocess.run(["curl", "-sS", "--max-time", "5", f"http://127.0.0.1:{d.port}/metrics"],
                           capture_output=True, text=True)
    assert plain.returncode != 0  # plain HTTP gets no answer from a TLS port


def test_health_check_probes_over_tls(tls_daemon):
    d, _, web = tls_daemon
    proc = subprocess.run(
        [*TTA_CARBON, "check", "--config", str(d.workdir / "config.yaml"), "--env-file", str(d.workdir / "environment"),
         *[a for k, v in {"metrics_port": d.port, "output_dir": d.output_dir, "state_dir": d.state_dir,
                          "log_file": d.log_file, "metrics_web_config": web}.items() for a in ("--set", f"{k}={v}")]],
        cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=60)
    assert f"✅ Daemon: /metrics reachable at https://127.0.0.1:{d.port}/metrics" in proc.stdout.splitlines()
    assert proc.returncode == 0, proc.stdout


def test_prometheus_scrapes_over_tls_with_basic_auth(tls_daemon, prom_factory):
    d, cert, _ = tls_daemon
    prom = prom_factory(scrape_configs=[{
        "job_name": "tta-staging-carbon", "scheme": "https",
        "tls_config": {"ca_file": str(cert)},
        "basic_auth": {"username": USER, "password": PASSWORD},
        "static_configs": [{"targets": [f"127.0.0.1:{d.port}"]}],
    }])
    value = prom.wait_for(lambda: prom.query_value('up{job="tta-staging-carbon"}') == 1, timeout=30,
                          what="up == 1 over TLS")
    assert value
    assert prom.query_value("tta_carbon_last_record_sequence") >= 1


def test_bad_web_config_is_one_line_exit_78(tmp_path):
    web = tmp_path / "web.yml"
    web.write_text("basic_auth_users:\n  admin: plaintext-password\n")
    proc = subprocess.run([*TTA_CARBON, "run", "--config", "/dev/null", "--env-file", "/dev/null",
                           "--set", f"metrics_web_config={web}", "--set", f"output_dir={tmp_path / 'out'}"],
                          cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 78
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "basic_auth_users.admin: not a bcrypt hash" in lines[0], lines
    assert "plaintext-password" not in proc.stderr
    assert not (tmp_path / "out").exists()
