"""Per-unit attribution: cgroup v1/v2 readers on fixture trees, the split's exactness, wiring.

Fixture trees are real directories in tmp dirs laid out like /sys/fs/cgroup (v2 pure,
v2 hybrid ``unified/``, v1 ``cpuacct`` and ``cpu,cpuacct``) and a real /proc/stat-format
file; one test also reads the host's real v1 cpuacct hierarchy with a real burning process.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from src.components.carbon.accounting import Accountant, Identity
from src.components.carbon.attribution import (
    OTHER,
    UNATTRIBUTED,
    attribute,
    split_exact,
)
from src.components.carbon.health import HealthSnapshot
from src.components.carbon.record import (
    ComponentEnergy,
    Intensity,
    IntervalEnergy,
    Totals,
)
from src.service.report import build_report, run_report
from src.components.carbon.sinks.prometheus import PrometheusSink
from src.components.carbon.sources.cgroups import (
    CgroupUnavailable,
    CpuTimeDelta,
    CpuTimeSampler,
    Hierarchy,
    detect,
    host_cpu_ns,
    list_units,
)

HZ = os.sysconf("SC_CLK_TCK")


# ---- fixture trees ------------------------------------------------------------------------


class Tree:
    """A fake cgroup root + proc root. ``set(unit_rel, seconds)`` writes the usage counter."""

    def __init__(self, base: Path, layout: str) -> None:
        self.root = base / "cgroup"
        self.proc = base / "proc"
        self.proc.mkdir(parents=True)
        self.layout = layout
        if layout == "v2":
            self.top = self.root
            self.top.mkdir(parents=True)
            (self.top / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
        elif layout == "hybrid":
            self.top = self.root / "unified"
            self.top.mkdir(parents=True)
            (self.top / "cgroup.procs").write_text("")
            (self.root / "systemd").mkdir()
        else:  # "v1" or "v1-combined"
            self.top = self.root / ("cpuacct" if layout == "v1" else "cpu,cpuacct")
            self.top.mkdir(parents=True)
        (self.top / "system.slice").mkdir()
        self._write_usage(self.top, 0)
        self.set_host(0)

    @property
    def version(self) -> str:
        return "v1" if self.layout.startswith("v1") else "v2"

    def _write_usage(self, d: Path, seconds: float) -> None:
        if self.version == "v1":
            (d / "cpuacct.usage").write_text(f"{round(seconds * 1e9)}\n")
        else:
            usec = round(seconds * 1e6)
            (d / "cpu.stat").write_text(f"usage_usec {usec}\nuser_usec {usec}\nsystem_usec 0\n")

    def set(self, rel: str, seconds: float) -> Path:
        d = self.top / rel
        d.mkdir(parents=True, exist_ok=True)
        self._write_usage(d, seconds)
        return d

    def remove(self, rel: str) -> None:
        shutil.rmtree(self.top / rel)

    def set_host(self, seconds: float) -> None:
        """Total CPU time of all CPUs (idle included), as /proc/stat ticks spread over fields."""
        ticks = round(seconds * HZ)
        user, idle = ticks // 2, ticks - ticks // 2
        (self.proc / "stat").write_text(
            f"cpu  {user} 0 0 {idle} 0 0 0 0 0 0\ncpu0 {user} 0 0 {idle} 0 0 0 0 0 0\nintr 1\n"
        )

    def sampler(self, **kw) -> CpuTimeSampler:
        return CpuTimeSampler(self.root, self.proc, **kw)


LAYOUTS = ["v2", "hybrid", "v1", "v1-combined"]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_detect_each_layout(tmp_path: Path, layout: str) -> None:
    t = Tree(tmp_path, layout)
    h = detect(t.root)
    assert (h.version, h.path) == (t.version, t.top)


def test_detect_without_accounting_names_what_it_tried(tmp_path: Path) -> None:
    (tmp_path / "systemd").mkdir()
    with pytest.raises(CgroupUnavailable, match="cpuacct"):
        detect(tmp_path)


def test_hybrid_without_system_slice_falls_back_to_v1(tmp_path: Path) -> None:
    # Like this project's machines outside systemd: unified/ exists but holds no units; cpuacct does.
    (tmp_path / "unified").mkdir()
    (tmp_path / "unified" / "cgroup.procs").write_text("")
    (tmp_path / "cpuacct").mkdir()
    (tmp_path / "cpuacct" / "cpuacct.usage").write_text("5\n")
    assert detect(tmp_path).version == "v1"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_list_units_globs_nesting_and_children(tmp_path: Path, layout: str) -> None:
    t = Tree(tmp_path, layout)
    t.set("system.slice/burn.service", 7.5)
    t.set("system.slice/burn.service/child", 7.0)  # part of burn.service, never listed on its own
    t.set("system.slice/idle.service", 0.0)
    t.set("system.slice/tta.socket", 1.0)  # not a service
    t.set("system.slice/app.slice", 2.0)  # a slice's counter includes its children
    t.set("system.slice/app.slice/nested.service", 2.0)
    t.set("user.slice/user-0.slice/session-1.scope", 3.0)  # not under system.slice
    t.set("init.scope", 1.0)
    h = detect(t.root)
    units = list_units(h, ["system.slice/*.service"], [])
    assert {n: u.usage_ns for n, u in units.items()} == {
        "burn.service": 7_500_000_000, "idle.service": 0, "nested.service": 2_000_000_000,
    }
    only_direct = list_units(h, ["system.slice/*.service"], ["system.slice/*/*"])
    assert set(only_direct) == {"burn.service", "idle.service"}
    assert set(list_units(h, ["system.slice/*"], ["*.socket", "*idle*"])) == {"burn.service", "app.slice"}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_units_delegated_subtree_is_never_listed_as_host_units(tmp_path: Path, layout: str) -> None:
    """A container scope running its own systemd holds its own system.slice/nginx.service: with the
    walk going into every directory, the default glob listed it as the host's nginx.service."""
    t = Tree(tmp_path, layout)
    t.set("system.slice/nginx.service", 1.0)
    t.set("system.slice/docker-abc.scope", 9.0)
    t.set("system.slice/docker-abc.scope/system.slice/nginx.service", 8.0)
    t.set("system.slice/docker-abc.scope/system.slice/inner-only.service", 1.0)
    t.set("system.slice/system-getty.slice/getty@tty1.service", 0.5)  # nested slices still count
    h = detect(t.root)
    units = list_units(h, ["system.slice/*.service"], [])
    assert {n: u.usage_ns for n, u in units.items()} == {
        "nginx.service": 1_000_000_000, "getty@tty1.service": 500_000_000}
    assert set(list_units(h, ["system.slice/*.scope"], [])) == {"docker-abc.scope"}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_unit_name_that_is_not_utf8_is_listed_as_text(tmp_path: Path, layout: str) -> None:
    t = Tree(tmp_path, layout)
    raw = os.fsencode(str(t.top / "system.slice")) + b"/bad\xff\xfe.service"
    os.mkdir(raw)
    t._write_usage(Path(os.fsdecode(raw)), 2.0)
    units = list_units(detect(t.root), ["system.slice/*.service"], [])
    assert set(units) == {"bad\\xff\\xfe.service"}
    for name in units:
        name.encode("utf-8")  # raised UnicodeEncodeError (a lone surrogate) before


@pytest.mark.parametrize("layout", LAYOUTS)
def test_sampler_deltas_new_restarted_reset_and_gone(tmp_path: Path, layout: str) -> None:
    t = Tree(tmp_path, layout)
    t.set("system.slice/a.service", 10.0)
    t.set("system.slice/b.service", 5.0)
    t.set_host(1000.0)
    s = t.sampler()
    s.open()
    t.set("system.slice/a.service", 12.0)  # +2 s
    t.set("system.slice/c.service", 0.5)  # appeared mid-interval: all 0.5 s are new
    t.set_host(1004.0)
    d = s.read()
    assert d.units_ns == {"a.service": 2_000_000_000, "c.service": 500_000_000}
    assert d.host_ns == 4_000_000_000 and d.cgroup == t.version
    # b restarts (new cgroup, counter from 0), a's counter goes backwards in place, c goes away.
    t.remove("system.slice/b.service")
    t.set("system.slice/b.service", 0.25)
    t.set("system.slice/a.service", 1.0)
    t.remove("system.slice/c.service")
    t.set_host(1006.0)
    d = s.read()
    assert d.units_ns == {"b.service": 250_000_000, "a.service": 1_000_000_000}
    assert all(v > 0 for v in d.units_ns.values())
    t.set_host(1005.0)  # host counter can't go back either
    assert s.read().host_ns == 0


def test_host_cpu_ns_reads_proc_stat_including_idle(tmp_path: Path) -> None:
    t = Tree(tmp_path, "v2")
    (t.proc / "stat").write_text(f"cpu  {HZ} 1 2 {3 * HZ} 4 5 6 7 8 9\n")
    # user+nice+system+idle+iowait+irq+softirq+steal; guest fields excluded.
    assert host_cpu_ns(t.proc) == (HZ + 1 + 2 + 3 * HZ + 4 + 5 + 6 + 7) * 1_000_000_000 // HZ


# ---- the split ----------------------------------------------------------------------------


def delta(units: dict[str, float], host_s: float) -> CpuTimeDelta:
    return CpuTimeDelta({k: round(v * 1e9) for k, v in units.items()}, round(host_s * 1e9), "v2")


def test_burner_gets_its_share_idle_gets_nothing() -> None:
    # 2 CPUs for 1 s; the burner used one full CPU, the daemon 10 ms.
    r = attribute(delta({"burn.service": 1.0, "idle.service": 0.0, "tta.service": 0.01}, 2.0),
                  cpu_j=30.0, total_j=40.0, cpu_g=3.0, total_g=4.0)
    assert list(r) == ["burn.service", "tta.service", UNATTRIBUTED]  # idle used 0 ns: not listed
    assert r["burn.service"].energy_j == pytest.approx(15.0, rel=1e-12)
    assert r["tta.service"].energy_j == pytest.approx(0.15, rel=1e-12)
    assert r[UNATTRIBUTED].energy_j == pytest.approx(40.0 - 15.15, rel=1e-12)  # idle CPU + all RAM
    assert r["burn.service"].emissions_g == pytest.approx(1.5, rel=1e-12)
    assert r["burn.service"].cpu_s == 1.0 and r[UNATTRIBUTED].cpu_s == pytest.approx(0.99)
    assert sum(v.energy_j for v in r.values()) == 40.0
    assert sum(v.emissions_g for v in r.values()) == 4.0


def test_top_n_folds_rest_into_other_and_reserved_names_cannot_collide() -> None:
    units = {f"u{i:02d}.service": float(i) for i in range(1, 11)}
    units["other"] = 0.5  # a unit really called "other"
    r = attribute(delta(units, 100.0), cpu_j=100.0, total_j=100.0, cpu_g=1.0, total_g=1.0, top_n=3)
    assert list(r) == ["u10.service", "u09.service", "u08.service", OTHER, UNATTRIBUTED]
    assert r[OTHER].cpu_s == pytest.approx(sum(range(1, 8)) + 0.5)
    assert r[OTHER].energy_j == pytest.approx(28.5, rel=1e-12)
    r = attribute(delta({"other": 1.0}, 2.0), cpu_j=1.0, total_j=1.0, cpu_g=1.0, total_g=1.0)
    assert "other!" in r and OTHER not in r
    r = attribute(delta(units, 100.0), cpu_j=1.0, total_j=1.0, cpu_g=1.0, total_g=1.0, top_n=0)
    assert list(r) == [OTHER, UNATTRIBUTED]


def test_units_reading_ahead_of_proc_stat_never_exceed_the_cpu_energy() -> None:
    # Skew between the cgroup read and /proc/stat: units add up to more than the host.
    r = attribute(delta({"a.service": 1.5, "b.service": 0.5}, 1.0), cpu_j=10.0, total_j=12.0, cpu_g=1.0, total_g=1.2)
    assert r["a.service"].energy_j == pytest.approx(7.5) and r["b.service"].energy_j == pytest.approx(2.5)
    assert r[UNATTRIBUTED].energy_j == pytest.approx(2.0)  # exactly the RAM/GPU part


def test_nothing_to_split() -> None:
    r = attribute(delta({"a.service": 1.0}, 0.0), cpu_j=0.0, total_j=0.0, cpu_g=0.0, total_g=0.0)
    assert r["a.service"].energy_j == 0.0 and r[UNATTRIBUTED].energy_j == 0.0
    r = attribute(delta({}, 0.0), cpu_j=5.0, total_j=5.0, cpu_g=1.0, total_g=1.0)
    assert list(r) == [UNATTRIBUTED] and r[UNATTRIBUTED].energy_j == 5.0


def test_sum_invariant_is_exact_in_any_summation_order() -> None:
    rng = random.Random(20260101)
    for _ in range(5000):
        n = rng.randint(0, 40)
        units = {f"u{i}.service": rng.choice([0, 1, 7, rng.randint(1, 10**12)]) for i in range(n)}
        host = rng.choice([0, rng.randint(0, 10**12), sum(units.values()) + rng.randint(0, 10**13)])
        cpu = rng.choice([0.0, rng.uniform(0, 1e-3), rng.uniform(0, 1e4), rng.expovariate(1e-3)])
        total = cpu + rng.choice([0.0, rng.uniform(0, 1e3), 0.1, 1e-9])
        g = total / 3.6e6 * rng.uniform(10, 900)
        r = attribute(CpuTimeDelta(units, host, "v1"), cpu_j=cpu, total_j=total,
                      cpu_g=g * (cpu / total if total else 0), total_g=g, top_n=rng.randint(0, 25))
        for key, want in (("energy_j", total), ("emissions_g", g)):
            values = [getattr(v, key) for v in r.values()]
            assert all(v >= 0 for v in values)
            naive = 0.0
            for v in reversed(values):
                naive += v
            assert sum(values) == want and math.fsum(values) == want and naive == want, (units, host, cpu, total)
        assert sum(v.energy_j for k, v in r.items() if k != UNATTRIBUTED) <= cpu


def test_split_exact_loses_at_most_one_ulp_per_bucket() -> None:
    parts, rest = split_exact(1.0, 1.0, {"a": 1, "b": 1, "c": 1}, 3)
    assert all(abs(v - 1 / 3) <= math.ulp(1.0) for v in parts.values())
    assert sum(parts.values()) + rest == 1.0 and rest <= 3 * math.ulp(1.0)


# ---- real host cgroup v1 (cpuacct) with a real process -------------------------------------------


def _real_v1() -> Path | None:
    for name in ("cpuacct", "cpu,cpuacct"):
        p = Path("/sys/fs/cgroup") / name
        if (p / "cpuacct.usage").is_file() and os.access(p, os.W_OK):
            return p
    return None


@pytest.mark.skipif(_real_v1() is None, reason="no writable v1 cpuacct hierarchy (needs root on a v1/hybrid host)")
def test_real_v1_cpuacct_counts_a_real_burner() -> None:
    hier = _real_v1()
    assert hier is not None
    top = hier / f"tta-attr-test-{uuid.uuid4().hex[:8]}"
    burn, idle = top / "system.slice" / "burn.service", top / "system.slice" / "idle.service"
    procs: list[subprocess.Popen] = []
    try:
        burn.mkdir(parents=True)
        idle.mkdir()
        h = Hierarchy("v1", top)
        procs.append(subprocess.Popen([sys.executable, "-c", "import time\nt=time.time()\nwhile time.time()-t<0.6: pass"]))
        procs.append(subprocess.Popen(["sleep", "5"]))
        (burn / "cgroup.procs").write_text(str(procs[0].pid))
        (idle / "cgroup.procs").write_text(str(procs[1].pid))
        before = list_units(h, ["system.slice/*.service"], [])
        procs[0].wait(10)
        after = list_units(h, ["system.slice/*.service"], [])
        burned = after["burn.service"].usage_ns - before["burn.service"].usage_ns
        assert burned > 200_000_000, burned  # it spun for 0.6 s (most of it after the move)
        assert after["idle.service"].usage_ns < 50_000_000
    finally:
        for p in procs:
            p.kill()
            p.wait()
        deadline = time.monotonic() + 5
        for d in (burn, idle, burn.parent, top):
            while d.exists():
                try:
                    d.rmdir()
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)


# ---- wiring: record, metrics, report ---------------------------------------------------------


def _record(units_ns: dict[str, float], host_s: float, seq_end: float = 1_795_000_000.0, acct=None):
    acct = acct or Accountant(Totals())
    energy = IntervalEnergy({"cpu": ComponentEnergy(20.0, "cpu_load_tdp"), "ram": ComponentEnergy(5.0, "constant")})
    rec = acct.account(energy, end_wall=seq_end, elapsed_s=1.0, intensity=Intensity(400.0, "fixed", "FRA"),
                       identity=Identity("run-1", None, "p", "test"), cpu_time=delta(units_ns, host_s))
    return rec, acct


def test_record_json_and_metrics_and_report(tmp_path: Path) -> None:
    r1, acct = _record({"burn.service": 1.0}, 2.0)
    r2, _ = _record({"burn.service": 0.5, "web.service": 0.5}, 2.0, seq_end=1_795_000_001.0, acct=acct)
    line = json.loads(json.dumps(r1.to_json_dict()))
    assert line["units"]["burn.service"]["energy_j"] == pytest.approx(10.0)
    assert sum(u["energy_j"] for u in line["units"].values()) == line["energy_j"]["total"] == 25.0
    assert line["attribution"]["cgroup"] == "v2"

    sink = PrometheusSink()
    h = HealthSnapshot(version="t", project="p", env="test", interval_s=1.0, started_at=0.0)
    sink.update(h, r1)
    sink.update(h, r2)
    page = sink.page().decode()
    assert 'tta_carbon_unit_energy_joules_total{unit="burn.service"} 15.0' in page
    assert 'tta_carbon_unit_energy_joules_total{unit="web.service"} 5.0' in page
    assert 'tta_carbon_unit_emissions_grams_total{unit="unattributed"}' in page
    if shutil.which("promtool"):
        res = subprocess.run(["promtool", "check", "metrics"], check=False, input=page, capture_output=True, text=True)
        assert res.returncode == 0, res.stdout + res.stderr

    out = tmp_path / "out"
    out.mkdir()
    with open(out / "emissions_2026-11-18.json", "w") as f:
        f.writelines(json.dumps(rec.to_json_dict()) + "\n" for rec in (r1, r2))
    rep = build_report(out)
    assert rep.by_unit["burn.service"][0] == pytest.approx(15.0)
    assert rep.by_unit["burn.service"][3] == 2 and rep.by_unit["web.service"][3] == 1


def test_cli_report_by_unit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from src.service.cli import main

    r1, _ = _record({"burn.service": 1.0, "idle.service": 0.001}, 2.0)
    (tmp_path / "emissions_2026-11-18.json").write_text(json.dumps(r1.to_json_dict()) + "\n")
    assert main(["report", "--dir", str(tmp_path), "--by-unit"]) == 0
    rows = [ln.split() for ln in capsys.readouterr().out.splitlines()]
    names = [r[0] for r in rows[1:-1]]
    assert names == ["burn.service", "idle.service", "unattributed"]
    assert rows[1][2] == "40.0%"  # 10 J of 25 J
    assert run_report(tmp_path, as_json=True) == 0
    assert json.loads(capsys.readouterr().out)["by_unit"]["burn.service"]["records"] == 1


def test_component_splits_each_interval_from_a_fixture_tree(tmp_path: Path) -> None:
    from src.components.carbon_component import CarbonComponent
    from src.orchestration import TTAConfig

    t = Tree(tmp_path / "fx", "v1")
    t.set("system.slice/burn.service", 0.0)
    t.set_host(100.0)
    (tmp_path / "none.yaml").write_text("")
    (tmp_path / "none.env").write_text("")
    cfg = TTAConfig.load({
        "config_file": str(tmp_path / "none.yaml"), "env_file": str(tmp_path / "none.env"),
        "output_dir": str(tmp_path / "out"), "state_dir": str(tmp_path / "state"), "log_file": "",
        "intensity_g_per_kwh": "400", "energy_source": "cpu_load_tdp", "cpu_tdp_watts": "100",
        "cgroup_root": str(t.root), "proc_root": str(t.proc),
        "attribution_include": "system.slice/*.service, system.slice/*.socket", "attribution_top_n": "5",
    }, environ={})
    assert cfg.attribution_include == ("system.slice/*.service", "system.slice/*.socket")
    comp = CarbonComponent(cfg)
    # /metrics is bounded by the same top N; grace 120 s at 15 s = 8 records
    assert (comp._prometheus.top_n, comp._prometheus.unit_grace_records) == (5, 8)
    started = comp.start(serve_metrics=False)
    try:
        assert started.attribution.startswith("cgroup v1")
        t.set("system.slice/burn.service", 0.9)
        t.set_host(102.0)
        rec = comp.measure_once().record
        assert rec is not None
        assert rec.units["burn.service"]["energy_j"] == pytest.approx(rec.energy_j["cpu"] * 0.45, rel=1e-9)
        assert sum(u["energy_j"] for u in rec.units.values()) == sum(rec.energy_j.values())
        assert rec.attribution == {"cpu": "cpu_time_share", "ram": UNATTRIBUTED, "gpu": UNATTRIBUTED, "cgroup": "v1"}
        shutil.rmtree(t.root)  # cgroup tree gone: records go on, everything unattributed
        rec = comp.measure_once().record
        assert rec is not None and list(rec.units) == [UNATTRIBUTED]
        assert rec.units[UNATTRIBUTED]["energy_j"] == sum(rec.energy_j.values())
    finally:
        comp.stop()
    line = json.loads((tmp_path / "out").glob("emissions_*.json").__next__().read_text().splitlines()[0])
    assert "burn.service" in line["units"]
