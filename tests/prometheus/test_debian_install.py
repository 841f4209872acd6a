"""docs/deployment.md, "Prometheus and Alertmanager": the Debian packages with the shipped files
in Debian's locations (issue 13, item 10).

The block is run as written with only /etc paths moved into a temp dir (its promtool and
amtool lines check what it installed), the shipped config's Alertmanager target is checked
against what Debian's package uses, and a real Prometheus then finds the real Alertmanager
at that address (both in a private network namespace, so the fixed ports never clash).
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.prometheus.promlib import ALERTMANAGER, PROM_CONFIG, REPO, RULE_FILES, need

DOC = REPO / "docs" / "deployment.md"
DEBIAN_ALERTMANAGER = "localhost:9093"  # the target in Debian's own /etc/prometheus/prometheus.yml
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```$", re.M | re.S)


def install_block() -> str:
    text = DOC.read_text()
    section = text.index("\n### Prometheus and Alertmanager\n")
    return FENCE.search(text, section).group(1)


def alertmanager_targets() -> list[str]:
    cfg = yaml.safe_load(PROM_CONFIG.read_text())
    return [t for am in cfg["alerting"]["alertmanagers"] for sc in am["static_configs"] for t in sc["targets"]]


def documented_args() -> list[str]:
    m = re.search(r"""s\|\^ARGS=\.\*\|ARGS="([^"]*)"\|' /etc/default/prometheus-alertmanager""", install_block())
    assert m, "no ARGS line for /etc/default/prometheus-alertmanager"
    return shlex.split(m.group(1))


def test_block_installs_the_debian_packages_and_every_shipped_file() -> None:
    block = install_block()
    assert "apt-get install -y --no-install-recommends prometheus prometheus-alertmanager" in block.splitlines()
    assert "install -m 0644 -o root -g root deploy/prometheus/prometheus.yml /etc/prometheus/prometheus.yml" in block
    assert "deploy/alertmanager/alertmanager.yml /etc/prometheus/alertmanager.yml" in block
    cfg = yaml.safe_load(PROM_CONFIG.read_text())
    for rel in cfg["rule_files"]:  # relative to the config file: /etc/prometheus/rules/...
        assert f"deploy/prometheus/{rel}" in block, rel
    assert {f"rules/{p.name}" for p in RULE_FILES} == set(cfg["rule_files"])
    assert "promtool check config /etc/prometheus/prometheus.yml" in block
    assert "amtool check-config /etc/prometheus/alertmanager.yml" in block


def test_alertmanager_target_is_debians_address() -> None:
    """Before the fix the shipped target was 127.0.0.1:9093, not where Debian's config points."""
    assert alertmanager_targets() == [DEBIAN_ALERTMANAGER]
    # The documented ARGS keep Alertmanager on exactly that address.
    args = documented_args()
    assert f"--web.listen-address={DEBIAN_ALERTMANAGER}" in args and "--cluster.listen-address=" in args


def test_debian_package_defaults_match() -> None:
    """What the installed package really does: port 9093, config /etc/prometheus/alertmanager.yml,
    and an ARGS= line in /etc/default/prometheus-alertmanager for the documented sed to replace."""
    need("prometheus-alertmanager", "prometheus-alertmanager")
    out = subprocess.run(["prometheus-alertmanager", "--help"], capture_output=True, text=True, timeout=30)
    helptext = out.stdout + out.stderr
    assert re.search(r'--config\.file="/etc/prometheus/alertmanager\.yml"', helptext), helptext
    port = re.search(r"--web\.listen-address=\S*:(\d+)", helptext).group(1)
    assert DEBIAN_ALERTMANAGER.endswith(f":{port}")
    for flag in documented_args():  # every flag the doc sets exists in this version
        assert flag.split("=")[0] in helptext, flag
    default = Path("/etc/default/prometheus-alertmanager")
    if default.exists():
        assert re.search(r"^ARGS=", default.read_text(), re.M)
    unit = Path("/lib/systemd/system/prometheus-alertmanager.service")
    if unit.exists():
        text = unit.read_text()
        assert "EnvironmentFile=/etc/default/prometheus-alertmanager" in text and "$ARGS" in text


def run_block(tmp_path: Path) -> Path:
    """The doc's block with /etc moved under tmp_path; apt-get, systemctl and curl left out
    (they need the packages' services; the e2e test below plays that part)."""
    if os.geteuid() != 0:
        pytest.skip("the block installs with -o root (needs root)")
    need("promtool", "prometheus")
    need("amtool", "prometheus-alertmanager")
    etc = tmp_path / "etc"
    (etc / "prometheus").mkdir(parents=True)
    (etc / "default").mkdir()
    # Debian's file as the package ships it: comments and an empty ARGS line.
    (etc / "default/prometheus-alertmanager").write_text('# Set the command-line arguments\nARGS=""\n')
    lines = []
    for line in install_block().splitlines():
        if line.startswith(("apt-get ", "systemctl ", "curl ")):
            continue
        lines.append(line.replace("/etc/", f"{etc}/").replace("cd /opt/tta/staging", f"cd {shlex.quote(str(REPO))}"))
    proc = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", "\n".join(lines)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout and "is valid prometheus config file syntax" in proc.stdout, proc.stdout
    return etc


def test_block_runs_and_its_checks_pass(tmp_path: Path) -> None:
    etc = run_block(tmp_path)
    prom = etc / "prometheus"
    # The shipped file, with the local target's host label set to this host's name (host_name's default).
    assert (prom / "prometheus.yml").read_text() == PROM_CONFIG.read_text().replace(
        "@CARBON_HOST_NAME@", socket.gethostname())
    assert "@CARBON_HOST_NAME@" in PROM_CONFIG.read_text()
    assert (prom / "alertmanager.yml").read_bytes() == ALERTMANAGER.read_bytes()
    for rule in RULE_FILES:
        assert (prom / "rules" / rule.name).read_bytes() == rule.read_bytes()
    assert (prom / "targets").is_dir()
    for f in [prom / "prometheus.yml", prom / "alertmanager.yml", *(prom / "rules").iterdir()]:
        st = f.stat()
        assert (st.st_uid, st.st_mode & 0o777) == (0, 0o644), f
    default = (etc / "default/prometheus-alertmanager").read_text()
    assert default == ('# Set the command-line arguments\n'
                       'ARGS="--web.listen-address=localhost:9093 --cluster.listen-address="\n')
    # The installed config, checked again from its own directory (relative rule paths).
    r = subprocess.run([shutil.which("promtool"), "check", "config", "prometheus.yml"], cwd=prom,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and f"SUCCESS: {len(RULE_FILES)} rule files found" in r.stdout + r.stderr, r.stdout
    r = subprocess.run([shutil.which("amtool"), "check-config", str(prom / "alertmanager.yml")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr


E2E = r"""
set -eu
ip link set lo up
prometheus-alertmanager --config.file="$ETC/prometheus/alertmanager.yml" --storage.path="$WORK/am" $ARGS \
    >"$WORK/am.log" 2>&1 &
prometheus --config.file="$ETC/prometheus/prometheus.yml" --storage.tsdb.path="$WORK/prom" \
    --web.listen-address=localhost:9090 >"$WORK/prom.log" 2>&1 &
trap 'kill $(jobs -p) 2>/dev/null || true; wait' EXIT
for _ in $(seq 1 120); do
  if curl -fsS http://localhost:9093/-/ready >/dev/null 2>&1 &&
     out=$(curl -fsS http://localhost:9090/api/v1/alertmanagers 2>/dev/null) &&
     printf '%s' "$out" | grep -q activeAlertmanagers.*http; then
    printf '%s\n' "$out"; exit 0
  fi
  sleep 0.25
done
echo "timed out" >&2; exit 1
"""


def test_prometheus_finds_the_debian_alertmanager(tmp_path: Path) -> None:
    """The installed pair, started as Debian starts them (config paths, the documented ARGS):
    Prometheus lists Alertmanager as active at the shipped target."""
    need("prometheus", "prometheus")
    need("prometheus-alertmanager", "prometheus-alertmanager")
    if shutil.which("unshare") is None or shutil.which("curl") is None:
        pytest.skip("needs unshare and curl")
    etc = run_block(tmp_path)
    args = re.search(r'^ARGS="(.*)"$', (etc / "default/prometheus-alertmanager").read_text(), re.M).group(1)
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.run(["unshare", "--net", "bash", "-c", E2E], capture_output=True, text=True, timeout=90,
                          env={**os.environ, "ETC": str(etc), "WORK": str(work), "ARGS": args})
    logs = "".join(f"\n--- {f.name}\n{f.read_text()[-3000:]}" for f in sorted(work.glob("*.log")))
    assert proc.returncode == 0, proc.stderr + logs
    data = json.loads(proc.stdout)["data"]
    assert [a["url"] for a in data["activeAlertmanagers"]] == [f"http://{DEBIAN_ALERTMANAGER}/api/v2/alerts"]
    assert data["droppedAlertmanagers"] == []
