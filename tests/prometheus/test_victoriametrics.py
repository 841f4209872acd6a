"""Long-term store, for real: three daemons -> a real Prometheus (the shipped config, its
remote_write block uncommented by the documented sed) -> Debian's VictoriaMetrics 1.79,
and vmalert evaluating the shipped rule files, byte for byte, against it.

- The fleet: daemon a is the central Prometheus host's own daemon (the shipped static
  target, its `@CARBON_HOST_NAME@` placeholder replaced as the installer does), b and c
  come from a file_sd file written atomically (temp file + rename), shaped like
  targets/tta-carbon.example.json. Each daemon's `host_name` equals its `host` target
  label, so `exported_host` on build_info matches `host`.
- Truth is the daemons' NDJSON: every sample VictoriaMetrics holds of the energy,
  emissions and measured-seconds counters equals, to 1e-11 (VictoriaMetrics stores
  decimal mantissas; the worst seen is reported), the running total of the record whose
  `seq` tta_carbon_last_record_sequence carried in the same scrape; fleet totals from
  VictoriaMetrics' /api/v1/query at several instants equal the sum of those records'
  totals; the last totals miss only the records written after the last scrape.
- vmalert runs the shipped rules with the flags of deploy/victoriametrics/vmalert.default
  (URLs and ports replaced) and writes the results back: every recording rule of the
  30 s group produces series, the host-level sums trace back to single scrapes (hence to
  records) and the env-level sums equal the sum of their hosts.
- The relabelling of the shipped block keeps this Prometheus's own rule series (and
  scrape_* series) out of the store, so vmalert's results do not collide with them.

vmalert 1.79 starts each group at a fixed phase within its interval, derived from the rule
file's path and the group name (FNV-64a of path, 0xff, name, "prometheus"; seen matching
to the millisecond). The rule files are copied, unchanged, into a directory whose name
puts every group's first evaluation a few seconds after vmalert starts: otherwise the
daily group (several minutes) would not be evaluated within the test.
"""
from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
import subprocess
import time
from datetime import datetime
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.prometheus.daemons import DrainedDaemon
from tests.prometheus.promlib import (
    ALERT_RULES, EXAMPLE_TARGETS, JOB, PROM_CONFIG, PROM_DIR, RECORDING_RULES, RULE_FILES, metric_names, need,
    need_prometheus, recording_rules, run,
)
from tests.prometheus.promserver import PROMTOOL, PromServer
from tests.prometheus.vmserver import PACKAGE, Alertmanager, VMAlert, VMServer

pytestmark = pytest.mark.slow

REPO = PROM_DIR.parents[1]
VM_DIR = REPO / "deploy" / "victoriametrics"
VM_DEFAULT = VM_DIR / "victoria-metrics.default"
VMALERT_DEFAULT = VM_DIR / "vmalert.default"
VMALERT_UNIT = VM_DIR / "vmalert.service"
PLACEHOLDER = "@CARBON_HOST_NAME@"
# The two commands the comments in prometheus.yml give (placeholder, remote_write block).
SED_HOST = 's/@CARBON_HOST_NAME@/{host}/'
SED_REMOTE_WRITE = '/^## BEGIN remote_write/,/^## END remote_write/s/^# //'

# name -> (env, host); a is the static (local) target, b and c come from file_sd
FLEET = {"a": ("staging", "carbon-staging-a"), "b": ("staging", "carbon-staging-b"),
         "c": ("production", "carbon-prod-c")}
LOCAL = "a"
COUNTERS = {  # metric -> the records' cumulative field it must equal
    "tta_carbon_emissions_grams_total": ("emissions_g", True),
    "tta_carbon_energy_joules_total": ("energy_j", True),
    "tta_carbon_measured_seconds_total": ("measured_s", False),
}
COMPONENTS = ("cpu", "ram", "gpu")
REL = 1e-11


def need_stack() -> None:
    need_prometheus()
    need("victoria-metrics", PACKAGE)
    need("vmalert", PACKAGE)
    need("prometheus-alertmanager", "prometheus-alertmanager")


def sed(text: str, script: str, tmp: Path) -> str:
    """Apply a sed script with the real sed, as the operator would."""
    f = tmp / "sed-input.yml"
    f.write_text(text)
    subprocess.run(["sed", "-i", script, str(f)], check=True, timeout=10)
    return f.read_text()


def installed_config_text(tmp: Path, host: str) -> str:
    """prometheus.yml after the two documented seds."""
    text = sed(PROM_CONFIG.read_text(), SED_HOST.format(host=host), tmp)
    return sed(text, SED_REMOTE_WRITE, tmp)


def default_args(path: Path) -> list[str]:
    """The ARGS="..." of a /etc/default file, split as the shell (and systemd's $ARGS) would."""
    (value,) = re.findall(r'^ARGS="(.*)"$', path.read_text(), re.M)
    return shlex.split(value)


def fnv64a(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def parse_duration(s: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    total = 0.0
    for num, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", s):
        total += float(num) * units[unit]
    assert total > 0, s
    return total


@dataclass
class Group:
    name: str
    file: str  # the path vmalert is given
    interval: float
    records: list[dict]
    alerts: list[dict]

    def phase(self) -> float:
        """Seconds into each interval (Unix time) at which vmalert 1.79 evaluates this group."""
        gid = fnv64a(self.file.encode() + b"\xff" + self.name.encode() + b"prometheus")
        return self.interval * (gid / 2**64)

    def next_eval(self, after: float) -> float:
        return after + (self.phase() - after % self.interval) % self.interval

    def chained(self, rule: dict) -> bool:
        """Reads another recording rule of this group (vmalert sees its previous evaluation)."""
        own = {r["record"] for r in self.records}
        return bool(metric_names(rule["expr"]) & own)


def rule_groups(paths: dict[Path, Path], default_interval: float) -> list[Group]:
    """The groups of each source file, as vmalert sees them when given the target path."""
    out = []
    for src, path in paths.items():
        for g in yaml.safe_load(src.read_text())["groups"]:
            interval = parse_duration(g["interval"]) if "interval" in g else default_interval
            out.append(Group(g["name"], str(path), interval, [r for r in g["rules"] if "record" in r],
                             [r for r in g["rules"] if "alert" in r]))
    return out


def place_rules(tmp: Path, default_interval: float, lead: float) -> tuple[list[Path], list[Group]]:
    """Copy the shipped rule files (unchanged) into tmp/rules-<k>/, k chosen so that the
    fleet group (the shortest interval) first evaluates `lead` to `lead` + 1.5 s from now
    and every other group between then and 30 s later (before the fleet group's second
    evaluation, when the test looks)."""
    proto = rule_groups({p: p for p in RULE_FILES}, default_interval)
    fleet = min(proto, key=lambda g: (g.interval, -len(g.records)))
    for k in range(1_000_000):
        d = tmp / f"rules-{k}"
        now = time.time()
        for g in proto:
            g.file = str(d / Path(g.file).name)
        if lead <= fleet.next_eval(now) - now <= lead + 1.5 and all(
                lead <= g.next_eval(now) - now <= lead + 30 for g in proto):
            break
    else:
        raise AssertionError("no rules directory name gives the wanted phases")
    d.mkdir()
    paths = []
    for p in RULE_FILES:
        shutil.copyfile(p, d / p.name)
        assert (d / p.name).read_bytes() == p.read_bytes()
        paths.append(d / p.name)
    return paths, proto


def write_atomically(path: Path, text: str) -> None:
    """What docs/fleet.md asks of file_sd writers: same directory, then rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def rel_diff(got: float, want: float) -> float:
    return abs(got - want) / abs(want) if want else abs(got)


def key(labels: dict) -> tuple:
    return tuple(sorted(labels.items()))


def ms(ts: float) -> int:
    return round(ts * 1000)


@dataclass
class Stack:
    tmp: Path
    daemons: dict[str, DrainedDaemon]
    vm: VMServer
    prom: PromServer
    am: Alertmanager
    vmalert: VMAlert
    groups: list[Group]
    vmalert_started: float
    config: dict
    max_rel: dict[str, float] = field(default_factory=dict)

    def host(self, name: str) -> str:
        return FLEET[name][1]

    def records_by_seq(self, name: str) -> dict[int, dict]:
        recs = self.daemons[name].records()
        assert [r["seq"] for r in recs] == list(range(1, len(recs) + 1))
        return {r["seq"]: r for r in recs}

    def scrapes(self, name: str) -> dict[int, dict]:
        """One host's scrapes as VictoriaMetrics holds them: {ts ms: {"seq": n, metric: {component: v}}}."""
        host = self.host(name)
        out: dict[int, dict] = {}
        for s, values in self.vm.samples(f'tta_carbon_last_record_sequence{{host="{host}"}}').items():
            for ts, v in values.items():
                out.setdefault(ms(ts), {})["seq"] = int(v)
        for metric in COUNTERS:
            for labels, values in self.vm.samples(f'{metric}{{host="{host}"}}').items():
                comp = dict(labels).get("component", "")
                for ts, v in values.items():
                    out.setdefault(ms(ts), {}).setdefault(metric, {})[comp] = v
        return out

    def truth(self, record: dict, metric: str) -> dict[str, float]:
        field_, per_component = COUNTERS[metric]
        t = record["totals"][field_]
        return {c: t[c] for c in COMPONENTS} if per_component else {"": t}

    def close(self, label: str, got: float, want: float) -> bool:
        """Within REL; the worst relative difference per label is kept for the report."""
        self.max_rel[label] = max(self.max_rel.get(label, 0.0), rel_diff(got, want))
        return rel_diff(got, want) <= REL


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    need_stack()
    tmp = tmp_path_factory.mktemp("vm")
    started: list = []
    daemons: dict[str, DrainedDaemon] = {}
    try:
        # the store and Alertmanager, with the shipped flags (data path and address replaced)
        vm_args = [a for a in default_args(VM_DEFAULT) if not a.startswith(("-storageDataPath=", "-httpListenAddr="))]
        vm = VMServer(tmp / "vm", extra_args=vm_args)
        vm.start()
        started.append(vm)
        am = Alertmanager(tmp / "am").start()
        started.append(am)
        for name, (env, host) in FLEET.items():
            daemons[name] = DrainedDaemon(workdir=tmp / name, interval=1.0, settings={"env": env, "host_name": host})
            daemons[name].start(wait_ready=False)
        for d in daemons.values():
            d.wait_for_notification("READY=1", timeout=40)
            d.start_draining()

        # Prometheus: the shipped config as installed, adapted like promlib.deploy_prom_config
        cfg = yaml.safe_load(installed_config_text(tmp, FLEET[LOCAL][1]))
        cfg["global"]["scrape_interval"] = cfg["global"]["evaluation_interval"] = "1s"
        cfg.pop("alerting")
        cfg["rule_files"] = [str(RECORDING_RULES), str(ALERT_RULES)]
        (job,) = [j for j in cfg["scrape_configs"] if j["job_name"] == JOB]
        job["scrape_interval"] = job["scrape_timeout"] = "1s"
        assert job["static_configs"][0]["targets"] == ["127.0.0.1:9880"]
        job["static_configs"][0]["targets"] = [daemons[LOCAL].instance]
        sd_dir = tmp / "targets"
        sd_dir.mkdir()
        groups = [{"targets": [daemons[n].instance], "labels": {"env": FLEET[n][0], "host": FLEET[n][1]}}
                  for n in FLEET if n != LOCAL]
        example = json.loads(EXAMPLE_TARGETS.read_text())
        assert all(set(g) == set(example[0]) and set(g["labels"]) == set(example[0]["labels"]) for g in groups)
        write_atomically(sd_dir / "tta-carbon-fleet.json", json.dumps(groups, indent=2))
        job["file_sd_configs"] = [{"files": [str(sd_dir / "tta-carbon-*.json")], "refresh_interval": "1s"}]
        (rw,) = cfg["remote_write"]
        rw["url"] = vm.write_url
        prom = PromServer(tmp / "prom", config=cfg)
        prom.start()
        started.append(prom)

        # wait until the store has every host's counters
        def all_hosts():
            vm.force_flush()
            res = vm.query("count by (host) (tta_carbon_emissions_grams_total)")
            return len(res) == len(FLEET) and all(r["value"][1] == "3" for r in res)
        vm.wait_for(all_hosts, timeout=40, what="every host's counters in VictoriaMetrics")

        # vmalert with the shipped flags; rule files copied unchanged (see the module docstring)
        args = default_args(VMALERT_DEFAULT)
        default_interval = parse_duration(next(a.split("=", 1)[1] for a in args if a.startswith("-evaluationInterval=")))
        # first evaluation 11 s from now: its query time (10 s back, below) is after the
        # first samples in the store
        rule_paths, rule_groups_ = place_rules(tmp, default_interval, lead=11.0)
        keep = [a for a in args if not a.startswith(("-rule=", "-datasource.url=", "-remoteWrite.url=",
                                                   "-remoteRead.url=", "-notifier.url=", "-httpListenAddr="))]
        assert {a.split("=")[0] for a in args} - {a.split("=")[0] for a in keep} == {
            "-rule", "-datasource.url", "-remoteWrite.url", "-remoteRead.url", "-notifier.url", "-httpListenAddr"}
        shipped_rules = sorted(Path(a.split("=", 1)[1]).name for a in args if a.startswith("-rule="))
        assert shipped_rules == sorted(p.name for p in RULE_FILES), "vmalert.default must load every shipped rule file"
        # Test-only: query at eval time - 10 s instead of the interval-aligned time. Aligned
        # (the shipped default), the daily group would query up to its whole interval back,
        # before these daemons existed; 10 s back, every scrape has arrived whole (remote
        # write batches within 5 s; -search.latencyOffset is 1 s here).
        keep += ["-datasource.queryTimeAlignment=false", "-datasource.lookback=10s"]
        vmalert = VMAlert(tmp / "vmalert", vm, rule_paths, notifier=am.url, extra_args=keep)
        t0 = time.time()
        vmalert.start()
        started.append(vmalert)
        yield Stack(tmp, daemons, vm, prom, am, vmalert, rule_groups_, t0, cfg)
    finally:
        for d in daemons.values():
            d.stop()
        for s in reversed(started):
            s.stop()


def _fleet_group(stack: Stack) -> Group:
    return min(stack.groups, key=lambda g: (g.interval, -len(g.records)))


# ------------------------------------------------------------------ shipped files, no daemons
def test_remote_write_block_is_shipped_commented_and_valid_uncommented(tmp_path):
    """As shipped the block is a comment (no store configured by default); the documented sed
    turns it into a config promtool accepts, with the rule files found as installed."""
    need("promtool", "prometheus")
    shipped = yaml.safe_load(PROM_CONFIG.read_text())
    assert "remote_write" not in shipped
    text = PROM_CONFIG.read_text()
    assert SED_REMOTE_WRITE in text and SED_HOST.format(host="$(hostname)") in text
    (job,) = [j for j in shipped["scrape_configs"] if j["job_name"] == JOB]
    assert job["static_configs"][0]["labels"] == {"env": "staging", "host": PLACEHOLDER}

    etc = tmp_path / "etc-prometheus"
    (etc / "rules").mkdir(parents=True)
    for p in RULE_FILES:
        shutil.copy(p, etc / "rules" / p.name)
    installed = installed_config_text(tmp_path, "carbon-staging-01")
    (etc / "prometheus.yml").write_text(installed)
    r = run([PROMTOOL, "check", "config", "prometheus.yml"], cwd=etc)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "is valid prometheus config file syntax" in r.stdout
    cfg = yaml.safe_load(installed)
    (rw,) = cfg["remote_write"]
    assert rw["url"].endswith("/api/v1/write")
    (keep,) = rw["write_relabel_configs"]
    assert keep["action"] == "keep" and keep["source_labels"] == ["__name__", "job"]
    # what the regex keeps (Prometheus anchors it): the job's raw series and up, nothing else
    rx = re.compile(f"^(?:{keep['regex']})$")
    assert rx.match(f"tta_carbon_emissions_grams_total;{JOB}") and rx.match(f"up;{JOB}")
    for other in (f"scrape_duration_seconds;{JOB}", "host:tta_carbon_emissions_grams_total:sum;",
                  "up;prometheus", "tta_carbon_emissions_grams_total;other-job"):
        assert not rx.match(other), other
    (jobi,) = [j for j in cfg["scrape_configs"] if j["job_name"] == JOB]
    assert jobi["static_configs"][0]["labels"] == {"env": "staging", "host": "carbon-staging-01"}
    # nothing else changed: the installed config minus remote_write is the shipped one
    cfg.pop("remote_write")
    jobi["static_configs"][0]["labels"]["host"] = PLACEHOLDER
    assert cfg == shipped
    # a broken block must fail promtool (the check above is not vacuous)
    (etc / "prometheus.yml").write_text(installed.replace("action: keep", "action: kept"))
    assert run([PROMTOOL, "check", "config", "prometheus.yml"], cwd=etc).returncode == 1


def test_rule_names_in_fleet_docs_and_examples_exist():
    """docs/fleet.md, the examples and the store's files name only rules that are shipped
    (the instance: rules are gone); federation's match[] takes every rule and no raw series."""
    shipped = {r["record"] for r in recording_rules()}
    rule_name = re.compile(r"\b(?:instance|host|env|env_component):tta_carbon_[a-z0-9_]+(?::[a-z0-9_]+)?")
    files = [REPO / "docs" / "fleet.md", PROM_CONFIG, *sorted((PROM_DIR / "examples").glob("*.yml")),
             *sorted(VM_DIR.iterdir())]
    for f in files:
        unknown = set(rule_name.findall(f.read_text())) - shipped
        assert not unknown, f"{f.relative_to(REPO)} names rules that are not shipped: {sorted(unknown)}"
    fleet_md = (REPO / "docs" / "fleet.md").read_text()
    assert "sum(increase(host:tta_carbon_emissions_grams_total:sum[" in fleet_md
    assert "no TLS or authentication" not in fleet_md and "metrics_web_config" in fleet_md
    assert "atomically" in fleet_md and "unexpected end of JSON input" in fleet_md
    fed = yaml.safe_load((PROM_DIR / "examples" / "federation.yml").read_text())
    (job,) = fed["scrape_configs"]
    selectors = job["params"]["match[]"]
    (rx,) = [re.fullmatch(r'\{__name__=~"(.+)"\}', m).group(1) for m in selectors if "=~" in m]
    assert all(re.fullmatch(rx, name) for name in shipped), [n for n in shipped if not re.fullmatch(rx, n)]
    assert not re.fullmatch(rx, "tta_carbon_emissions_grams_total")


def test_vmalert_dry_run_accepts_the_shipped_rule_files(tmp_path):
    need("vmalert", PACKAGE)
    r = VMAlert.dry_run(RULE_FILES)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert not re.search(r"\t(error|fatal)\t", out), out
    # and it does check: a copy with one expression cut short is refused
    text = RECORDING_RULES.read_text()
    broken = tmp_path / "broken.yml"
    broken.write_text(re.sub(r"expr: (.+)", lambda m: f"expr: {m.group(1)} +", text, count=1))
    bad = VMAlert.dry_run([broken])
    assert bad.returncode != 0 and "broken.yml" in bad.stdout + bad.stderr, bad.stdout + bad.stderr


def test_vmalert_unit_verifies_and_is_confined(tmp_path):
    need("vmalert", PACKAGE)
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed")
    r = run(["systemd-analyze", "verify", str(VMALERT_UNIT)])
    assert r.returncode == 0 and not r.stderr.strip(), r.stdout + r.stderr
    r = run(["systemd-analyze", "security", "--offline=true", "--threshold=20", str(VMALERT_UNIT)])
    assert r.returncode == 0, r.stdout[-2000:]
    unit = VMALERT_UNIT.read_text()
    assert "EnvironmentFile=/etc/default/vmalert" in unit and "ExecStart=/usr/bin/vmalert $ARGS" in unit


# ------------------------------------------------------------------ the live stack
def test_store_holds_each_hosts_series_with_host_labels(stack):
    vm = stack.vm
    vm.force_flush()
    for name, (env, host) in FLEET.items():
        d = stack.daemons[name]
        (bi,) = vm.query(f'tta_carbon_build_info{{host="{host}"}}')
        m = bi["metric"]
        assert (m["env"], m["host"], m["instance"], m["job"]) == (env, host, d.instance, JOB)
        assert m["exported_host"] == host and m["exported_env"] == env  # the daemon's host_name matches
        assert m["prometheus"] == stack.config["global"]["external_labels"]["prometheus"]  # external label
        assert {r["metric"]["component"] for r in vm.query(f'tta_carbon_emissions_grams_total{{host="{host}"}}')} \
            == set(COMPONENTS)
        assert vm.query_value(f'up{{host="{host}"}}') == 1
    # the relabelling: nothing but the job's tta_carbon_* series and up
    names = {s["__name__"] for s in vm.series('{__name__=~".+", job!=""}')}
    assert names and all(n == "up" or n.startswith("tta_carbon_") for n in names), names
    assert not vm.series('{__name__=~"scrape_.+"}')


def evaluated_at(rfc3339: str) -> float:
    """vmalert's lastEvaluation (RFC 3339, nanoseconds) as Unix seconds."""
    m = re.fullmatch(r"(.+?T[\d:]+)(?:\.(\d+))?(Z|[+-][\d:]+)", rfc3339)
    assert m, rfc3339
    base = datetime.fromisoformat(m.group(1) + (m.group(3).replace("Z", "+00:00")))
    return base.timestamp() + float("0." + (m.group(2) or "0"))


def _rule_series(stack: Stack, record: str) -> dict[tuple, dict[int, float]]:
    out = {}
    for labels, values in stack.vm.samples(record, "10m").items():
        out[key({k: v for k, v in labels if k != "__name__"})] = {ms(t): v for t, v in values.items()}
    return out


def test_vmalert_recording_rules_produce_series_that_trace_to_records(stack, results):
    vm, vmalert = stack.vm, stack.vmalert
    fleet = _fleet_group(stack)
    first = fleet.next_eval(stack.vmalert_started)
    assert first - stack.vmalert_started <= 14
    second = first + fleet.interval
    # chained rules appear at the second evaluation (they read the first one's results);
    # vmalert flushes its remote write every 5 s
    wait = second + 7 - time.time()
    if wait > 0:
        time.sleep(wait)
    vm.force_flush()
    time.sleep(0.5)
    api = {r["name"]: r for g in vmalert.groups() for r in g["rules"]}
    # the phase model held: the fleet group's last evaluation is the predicted second one
    last_eval = {evaluated_at(api[r["record"]]["lastEvaluation"]) for r in fleet.records}
    assert all(abs(t - second) < 1.5 for t in last_eval), (sorted(last_eval), second, fleet.phase())
    produced, missing = {}, []
    for g in stack.groups:
        if g.next_eval(stack.vmalert_started) > time.time():
            continue
        for rule in g.records:
            state = api[rule["record"]]
            assert state["health"] == "ok" and not state["lastError"], state
            series = _rule_series(stack, rule["record"])
            produced[rule["record"]] = len(series)
            if not series and (g is fleet or not g.chained(rule)):
                missing.append(rule["record"])
        for rule in g.alerts:
            state = api[rule["alert"]]
            assert state["health"] == "ok" and not state["lastError"], state
    results.add(f"vmalert series per recording rule (rules evaluated so far): {produced}")
    evaluated = {g.name for g in stack.groups if g.next_eval(stack.vmalert_started) <= time.time()}
    assert evaluated == {g.name for g in stack.groups}, (evaluated, [(g.name, g.phase()) for g in stack.groups])
    assert not missing, (f"no series in VictoriaMetrics for {missing}: "
                         f"{ {m: {k: api[m][k] for k in ('lastSamples', 'lastError', 'lastEvaluation')} for m in missing} }"
                         f"\n{vmalert.log()}\n{vm.log()}")

    # host level: each value is one scrape's sum over components (so one record per host)
    host_rule, env_rule = "host:tta_carbon_emissions_grams_total:sum", "env:tta_carbon_emissions_grams_total:sum"
    host_series = _rule_series(stack, host_rule)
    assert {dict(k)["host"] for k in host_series} == {h for _, h in FLEET.values()}
    assert all(set(dict(k)) == {"env", "host"} for k in host_series), list(host_series)
    scrapes = {FLEET[n][1]: stack.scrapes(n) for n in FLEET}
    recs = {FLEET[n][1]: stack.records_by_seq(n) for n in FLEET}
    traced = 0
    for k, values in host_series.items():
        host = dict(k)["host"]
        for ts, v in values.items():
            sums = {t: math.fsum(s["tta_carbon_emissions_grams_total"].values())
                    for t, s in scrapes[host].items() if ts - 40_000 <= t <= ts}
            hits = [t for t, total in sums.items() if rel_diff(v, total) <= REL]
            assert hits, f"{host_rule}{{host={host}}} at {ts}: {v!r} is no scrape's sum ({sorted(sums.values())})"
            seq = scrapes[host][hits[0]]["seq"]
            assert stack.close("vmalert host rule", v, recs[host][seq]["totals"]["emissions_g"]["total"])
            traced += 1
    # env level: the sum of its hosts' host-level values (this or the previous evaluation)
    env_series = _rule_series(stack, env_rule)
    assert {dict(k)["env"] for k in env_series} == {e for e, _ in FLEET.values()}
    compared = 0
    for k, values in env_series.items():
        env = dict(k)["env"]
        members = [v for hk, v in host_series.items() if dict(hk)["env"] == env]
        for ts, v in values.items():
            candidates = []
            for t in {t for m in members for t in m if ts - 1000 * fleet.interval - 2000 <= t <= ts}:
                if all(t in m for m in members):
                    candidates.append(math.fsum(m[t] for m in members))
            best = min(candidates, key=lambda c: rel_diff(v, c), default=math.nan)
            assert stack.close("vmalert env rule", v, best), (env, ts, v, candidates)
            compared += 1
    assert traced >= len(FLEET) and compared >= 2, (traced, compared)
    results.add(f"{host_rule}: {traced} vmalert samples, each one scrape's sum = a record's total; "
                f"{env_rule}: {compared} samples = sum of their hosts; worst relative differences "
                f"{ {k: v for k, v in stack.max_rel.items() if k.startswith('vmalert')} }")
    # The documented windowed total, on the store: a window holding only the second
    # evaluation; MetricsQL's increase() takes the sample before the window as its base
    # (Prometheus would need two samples inside it), so it is exactly the hosts' growth.
    stamps = sorted({t for v in host_series.values() for t in v})
    t1, t2 = stamps[0], stamps[-1]
    assert all(set(v) == {t1, t2} for v in host_series.values()), host_series
    window = f"{(t2 - t1) // 1000 - 1}s"
    got = vm.query_value(f"sum(increase({host_rule}[{window}]))", t2 / 1000)
    want = math.fsum(v[t2] - v[t1] for v in host_series.values())
    results.add(f"sum(increase({host_rule}[{window}])) at the 2nd evaluation: {got!r} g; "
                f"sum of the hosts' growth {want!r} g")
    assert rel_diff(got, want) <= 1e-9, (got, want)
    # Prometheus's own rule results (1 s evaluations here) were not forwarded: only vmalert's, one per interval
    for values in host_series.values():
        stamps = sorted(values)
        assert all(b - a >= 1000 * fleet.interval - 1000 for a, b in zip(stamps, stamps[1:])), stamps


def test_vmalert_alerting_rules_evaluate_on_the_store(stack):
    """All rule groups ran on VictoriaMetrics data; CarbonEstimatedEnergy (these VMs have no
    RAPL) is pending for every host, with the host label from the target."""
    names = {r["alert"] for g in stack.groups for r in g.alerts}
    if "CarbonEstimatedEnergy" not in names:
        pytest.skip("no CarbonEstimatedEnergy alert in the shipped rules")
    (group,) = [g for g in stack.groups if any(r["alert"] == "CarbonEstimatedEnergy" for r in g.alerts)]
    wait = group.next_eval(stack.vmalert_started) + 2 - time.time()
    if wait > 0:
        time.sleep(wait)
    alerts = stack.vmalert.wait_for(
        lambda: [a for a in stack.vmalert.get_json("/api/v1/alerts")["data"]["alerts"] or []
                 if a["labels"].get("alertname") == "CarbonEstimatedEnergy"],
        timeout=5, what="CarbonEstimatedEnergy in vmalert")
    assert {a["labels"]["host"] for a in alerts} == {h for _, h in FLEET.values()}
    assert {a["state"] for a in alerts} == {"pending"}
    # vmalert's alerts carry the group's name: Alertmanager cannot merge them with
    # Prometheus's copies of the same alert (docs/fleet.md section 5)
    assert {a["labels"].get("alertgroup") for a in alerts} == {group.name}, alerts[0]["labels"]


def test_every_stored_sample_is_a_records_running_total(stack, results):
    """Bit-level agreement (to 1e-11) between VictoriaMetrics and the NDJSON, scrape by scrape."""
    stack.vm.force_flush()
    for name in FLEET:
        recs = stack.records_by_seq(name)
        scrapes = stack.scrapes(name)
        checked = 0
        newest = max(scrapes)
        for ts, scrape in sorted(scrapes.items()):
            if len(scrape) < 1 + len(COUNTERS) and newest - ts < 10_000:
                continue  # the newest scrape's samples may still be on their way
            rec = recs[scrape["seq"]]
            for metric in COUNTERS:
                want = stack.truth(rec, metric)
                assert scrape[metric].keys() == want.keys(), (name, ts, metric, scrape[metric])
                for comp, v in scrape[metric].items():
                    assert stack.close(metric, v, want[comp]), (name, ts, metric, comp, v, want[comp])
            checked += 1
        assert checked >= 5, (name, checked)
        results.add(f"{name} ({stack.host(name)}): {checked} scrapes in VictoriaMetrics, each = the record "
                    f"its last_record_sequence names ({len(recs)} records so far)")
    results.add(f"worst relative difference VM vs NDJSON: {stack.max_rel}")


def test_fleet_totals_from_the_query_api_equal_the_ndjson(stack, results):
    vm = stack.vm
    vm.force_flush()
    scrapes = {n: stack.scrapes(n) for n in FLEET}
    recs = {n: stack.records_by_seq(n) for n in FLEET}
    lo = max(min(s) for s in scrapes.values()) / 1000 + 0.5
    hi = min(max(s) for s in scrapes.values()) / 1000 - 10  # the newest scrapes may be in flight
    assert hi - lo >= 10, (lo, hi)
    instants = [lo + (hi - lo) * i / 4 for i in range(5)]
    for at in instants:
        seqs = {}
        for name in FLEET:
            seqs[name] = int(vm.query_value(f'tta_carbon_last_record_sequence{{host="{stack.host(name)}"}}', at))
            # the query API's value at `at` is the last scrape at or before it
            last = max(t for t in scrapes[name] if t <= ms(at))
            assert seqs[name] == scrapes[name][last]["seq"]
        for metric in COUNTERS:
            per_host = {n: math.fsum(stack.truth(recs[n][seqs[n]], metric).values()) for n in FLEET}
            got = vm.query_value(f"sum({metric})", at)
            want = math.fsum(per_host.values())
            assert stack.close(f"fleet {metric}", got, want), (metric, at, got, want)
            by_env = {r["metric"]["env"]: float(r["value"][1]) for r in vm.query(f"sum by (env) ({metric})", at)}
            assert by_env.keys() == {e for e, _ in FLEET.values()}
            for env in by_env:
                want_env = math.fsum(v for n, v in per_host.items() if FLEET[n][0] == env)
                assert stack.close(f"env {metric}", by_env[env], want_env), (metric, env, by_env, want_env)
        results.add(f"at {at:.3f}: seqs {seqs}; sum(tta_carbon_emissions_grams_total) = "
                    f"{vm.query_value('sum(tta_carbon_emissions_grams_total)', at)!r} g")
    results.add(f"fleet totals at {len(instants)} instants; worst relative difference: "
                f"{ {k: v for k, v in stack.max_rel.items() if k.startswith(('fleet', 'env'))} }")


def test_last_totals_in_the_store_miss_only_the_unscraped_tail(stack, results):
    """Stops the daemons: keep last. The store's last sample of each host is the record
    Prometheus last scraped; the NDJSON's final totals exceed it only by what came after."""
    vm = stack.vm
    rcs = {n: d.stop() for n, d in stack.daemons.items()}
    assert set(rcs.values()) == {0}, rcs
    def all_down():
        vm.force_flush()
        return len(vm.query(f'up{{job="{JOB}"}} == 0')) == len(FLEET)
    vm.wait_for(all_down, timeout=20, what="up == 0 of every target in the store")
    vm.force_flush()  # up == 0 came after each host's last samples in the same queue
    vm_total = ndjson_total = seen_total = 0.0
    parts = []
    for name in FLEET:
        recs = stack.records_by_seq(name)
        scrapes = stack.scrapes(name)
        last = scrapes[max(scrapes)]
        final = recs[max(recs)]
        assert final["final"] is True
        stored = math.fsum(last["tta_carbon_emissions_grams_total"].values())
        assert stack.close("final", stored, recs[last["seq"]]["totals"]["emissions_g"]["total"])
        unscraped = [r for s, r in recs.items() if s > last["seq"]]
        assert len(unscraped) <= 2, [r["seq"] for r in unscraped]  # the one after the last scrape + the final one
        assert math.isclose(final["totals"]["emissions_g"]["total"],
                            math.fsum(r["emissions_g"]["total"] for r in recs.values()), rel_tol=1e-9)
        vm_total += stored
        seen_total += recs[last["seq"]]["totals"]["emissions_g"]["total"]
        ndjson_total += final["totals"]["emissions_g"]["total"]
        parts.append(f"{name}: {len(recs)} records, store at seq {last['seq']} ({stored!r} g), "
                     f"NDJSON final {final['totals']['emissions_g']['total']!r} g")
    results.add("; ".join(parts))
    results.add(f"fleet: store {vm_total!r} g = scraped records {seen_total!r} g "
                f"(rel {abs(vm_total - seen_total) / seen_total:.2e}); NDJSON incl. unscraped tail "
                f"{ndjson_total!r} g (store short by {(ndjson_total - vm_total) / ndjson_total:.2%})")
    assert stack.close("final", vm_total, seen_total)
