"""Topology B (one Prometheus agent per host, remote write): every host's
`instance` is 127.0.0.1:9880 and only `host` tells hosts apart. A real
Alertmanager (Debian prometheus-alertmanager 0.25) runs the shipped
deploy/alertmanager/alertmanager.yml; the alerts it receives are those the
shipped rules produce under B (labels: the rule's labels + job, env, host,
instance; the aggregated alerts keep env, host only).

- one host down (CarbonComponentDown) mutes that host's own warnings and
  infos, and nothing of the other hosts;
- notifications are grouped per host (one group per alertname and host),
  each naming its host;
- the same scenario against the old configuration (`equal: [instance]`,
  `group_by: [alertname, env, instance]`) mutes the other hosts' warnings and
  infos (4 of them): the test tells the two apart.

Only the timings of the route (group_wait, group_interval) are shortened for
the test; matchers, group_by and inhibit_rules are used as shipped.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from tests.prometheus.promlib import ALERTMANAGER, JOB, alert_rules, need
from tests.prometheus.promserver import free_port, wait_for

AM_BIN = "prometheus-alertmanager"
INSTANCE = "127.0.0.1:9880"  # every host's, under topology B
HOSTS = ["carbon-b-01", "carbon-b-02", "carbon-b-03", "carbon-b-04"]
DOWN = "carbon-b-01"


class Webhook:
    """Collects Alertmanager webhook POSTs: (receiver path, payload)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.calls.append((self.path, json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def am_test_config(cfg: dict, hook: Webhook) -> dict:
    """The shipped config with webhook URLs on the test's server and short
    route timings; grouping and inhibition untouched."""
    cfg = json.loads(json.dumps(cfg))
    for r in cfg["receivers"]:
        for w in r.get("webhook_configs", []):
            w["url"] = hook.url + "/" + r["name"]

    def fast(route: dict) -> None:
        for key, value in (("group_wait", "1s"), ("group_interval", "2s"), ("repeat_interval", "1h")):
            if key in route or route is cfg["route"]:
                route[key] = value
        for sub in route.get("routes", []):
            fast(sub)

    fast(cfg["route"])
    return cfg


def old_config() -> dict:
    """The configuration before issue 16: keyed on instance."""
    cfg = yaml.safe_load(ALERTMANAGER.read_text())
    cfg["route"]["group_by"] = ["alertname", "env", "instance"]
    (rule,) = cfg["inhibit_rules"]
    rule["equal"] = ["instance"]
    return cfg


class Alertmanager:
    def __init__(self, workdir: Path, config: dict) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "am.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(workdir / "am.log", "wb")
        self.proc = subprocess.Popen(
            [AM_BIN, f"--config.file={workdir / 'am.yml'}", f"--storage.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address=", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError((workdir / "am.log").read_text())
            with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as r:
                return r.status == 200
        wait_for(ready, 20, 0.1, "alertmanager /-/ready")

    def post(self, alerts: list[dict]) -> None:
        req = urllib.request.Request(self.url + "/api/v2/alerts", data=json.dumps(alerts).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=5) as r:
            assert r.status == 200

    def alerts(self) -> list[dict]:
        with urllib.request.urlopen(self.url + "/api/v2/alerts", timeout=5) as r:
            return json.load(r)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.log.close()


def render(template: str, labels: dict) -> str:
    out = template
    for k, v in labels.items():
        out = out.replace("{{ $labels.%s }}" % k, v)
    return out


def alert(name: str, host: str) -> dict:
    """The alert the shipped rule sends for `host` under topology B."""
    (rule,) = [r for r in alert_rules() if r["alert"] == name]
    target = {"job": JOB, "env": "staging", "host": host, "instance": INSTANCE}
    # aggregated alerts keep (env, host) only (HighCarbonEmissions, CarbonUnmeasuredTime)
    kept = {k: v for k, v in target.items() if k in ("env", "host")} if "by (env, host)" in rule["expr"] \
        or rule["alert"] == "CarbonUnmeasuredTime" else target
    labels = {"alertname": name, **kept, **rule["labels"]}
    return {"labels": labels,
            "annotations": {k: render(v, labels) for k, v in rule["annotations"].items()},
            "startsAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60))}


# The fleet's alerts: DOWN is down (and, as a down daemon does, looks stale and its
# estimated-energy info is still active); the other hosts have warnings and infos of
# their own, which must reach their receivers.
SCENARIO = [
    ("CarbonComponentDown", DOWN),
    ("CarbonMeasurementsStale", DOWN),
    ("CarbonEstimatedEnergy", DOWN),
    ("CarbonMeasurementsStale", "carbon-b-02"),
    ("CarbonEstimatedEnergy", "carbon-b-02"),
    ("CarbonOutputWriteErrors", "carbon-b-03"),
    ("CarbonEstimatedEnergy", "carbon-b-03"),
    ("HighCarbonEmissions", "carbon-b-04"),
    ("CarbonUnmeasuredTime", "carbon-b-04"),
]


def run_scenario(tmp: Path, cfg: dict) -> tuple[dict, list[tuple[str, dict]]]:
    hook = Webhook()
    am = Alertmanager(tmp, am_test_config(cfg, hook))
    try:
        # The source alerts first: Alertmanager's inhibitor learns of them through an
        # asynchronous subscription, and a target flushed before that (group_wait 1 s, on a
        # loaded machine) would be delivered, failing the test for the wrong reason.
        sources = [(n, h) for n, h in SCENARIO if n == "CarbonComponentDown"]
        am.post([alert(n, h) for n, h in sources])
        wait_for(lambda: len(am.alerts()) == len(sources), 15, 0.1, "the source alerts in Alertmanager")
        time.sleep(0.5)
        am.post([alert(n, h) for n, h in SCENARIO if (n, h) not in sources])
        # status settles once the inhibitor has seen the source alert
        def settled():
            got = am.alerts()
            return got if len(got) == len(SCENARIO) and any(a["status"]["state"] == "suppressed" for a in got) else None
        got = wait_for(settled, 15, 0.2, "alerts in Alertmanager, inhibition applied")
        # notifications: every not-suppressed alert delivered (group_wait 1s)
        want = sum(1 for a in got if a["status"]["state"] == "active")
        wait_for(lambda: sum(len(p["alerts"]) for _, p in hook.calls) >= want, 20, 0.2, "webhook deliveries")
        time.sleep(1.5)  # any late (wrong) delivery shows up too
        state = {(a["labels"]["alertname"], a["labels"]["host"]): a["status"] for a in got}
        return state, list(hook.calls)
    finally:
        am.stop()
        hook.close()


@pytest.fixture
def am_bin():
    need(AM_BIN, "prometheus-alertmanager")


def test_topology_b_one_host_down_inhibits_only_its_own_alerts(am_bin, tmp_path, results):
    state, calls = run_scenario(tmp_path / "shipped", yaml.safe_load(ALERTMANAGER.read_text()))
    suppressed = sorted(k for k, s in state.items() if s["state"] == "suppressed")
    assert suppressed == [("CarbonEstimatedEnergy", DOWN), ("CarbonMeasurementsStale", DOWN)]
    assert all(s["inhibitedBy"] for k, s in state.items() if k in suppressed)
    for (name, host), s in state.items():
        if host != DOWN or name == "CarbonComponentDown":
            assert s["state"] == "active" and not s["inhibitedBy"], (name, host, s)
    # notifications: one group per alertname and host, each naming its host
    delivered = sorted((path, a["labels"]["alertname"], a["labels"]["host"]) for path, p in calls for a in p["alerts"])
    expected = sorted((f"/carbon-{alert(n, h)['labels']['severity']}", n, h) for n, h in SCENARIO
                      if (n, h) not in suppressed)
    assert delivered == expected
    for path, p in calls:
        hosts = {a["labels"]["host"] for a in p["alerts"]}
        if path != "/carbon-info":  # the info route groups by (alertname, env) on purpose
            assert len(hosts) == 1 and p["groupLabels"].get("host") in hosts, p["groupLabels"]
        for a in p["alerts"]:
            assert a["labels"]["host"] in a["annotations"]["summary"]
    results.add(f"shipped alertmanager.yml, topology B ({len(HOSTS)} hosts, all instance {INSTANCE}): "
                f"{len(SCENARIO)} alerts, suppressed {suppressed}; {len(delivered)} delivered in {len(calls)} notifications")


def test_topology_b_old_config_inhibited_healthy_hosts(am_bin, tmp_path, results):
    """The same fleet against `equal: [instance]`: the bug of issue 16."""
    state, calls = run_scenario(tmp_path / "old", old_config())
    suppressed = sorted(k for k, s in state.items() if s["state"] == "suppressed")
    others = [k for k in suppressed if k[1] != DOWN]
    assert others, "the old config should have muted other hosts' alerts"
    # every warning/info that carries the shared instance label is muted by the one host down
    assert set(suppressed) == {(n, h) for n, h in SCENARIO if n != "CarbonComponentDown"
                               and "instance" in alert(n, h)["labels"]}
    results.add(f"old alertmanager.yml (equal: [instance]): suppressed {len(suppressed)} of {len(SCENARIO)} alerts, "
                f"{len(others)} of them on healthy hosts: {others}")
