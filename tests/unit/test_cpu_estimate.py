"""CPU-load x TDP source on fake /proc files (the kernel boundary), not on our own code."""

from __future__ import annotations

import time

import pytest

from src.components.carbon.sources.cpu_estimate import (
    CpuLoadTdpSource,
    estimate_dimms,
    lookup_tdp,
    ram_power,
)


def write_proc(root, busy: int, idle: int, model: str = "AMD EPYC 7203", sockets: int = 1, mem_kb: int = 33554432):
    root.mkdir(exist_ok=True)
    # user nice system idle iowait irq softirq steal
    (root / "stat").write_text(f"cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n")
    cpus = "".join(f"processor\t: {i}\nmodel name\t: {model}\nphysical id\t: {i % sockets}\n\n" for i in range(4))
    (root / "cpuinfo").write_text(cpus)
    (root / "meminfo").write_text(f"MemTotal:       {mem_kb} kB\nMemFree:        1 kB\n")


def test_tdp_table_lookup():
    assert lookup_tdp("AMD EPYC 7203") == 120.0
    assert lookup_tdp("AMD EPYC 7203 8-Core Processor") == 120.0
    assert lookup_tdp("AMD EPYC") is None  # ambiguous: many EPYC parts, different TDPs
    assert lookup_tdp("") is None


def test_ram_model_matches_codecarbons_steps():
    assert estimate_dimms(8) == 2 and ram_power(2) == 10.0
    assert estimate_dimms(32) == 4 and ram_power(4) == 20.0
    assert estimate_dimms(128) == 8 and ram_power(8) == pytest.approx(38.0)
    assert estimate_dimms(512) == 16 and ram_power(16) == pytest.approx(70.0)


@pytest.mark.parametrize("load", [0.0, 0.5, 1.0])
def test_energy_follows_load_cubed_model(tmp_path, load):
    proc = tmp_path / "proc"
    write_proc(proc, busy=1000, idle=1000, sockets=2)
    src = CpuLoadTdpSource(proc_root=proc)
    src.open()
    assert src.cpu.watts == 240.0 and "2 x 120 W" in src.cpu.basis
    assert src.ram.watts == 20.0 and "4 DIMMs" in src.ram.basis
    time.sleep(0.2)
    write_proc(proc, busy=1000 + int(1000 * load), idle=1000 + int(1000 * (1 - load)), sockets=2)
    t0 = time.monotonic()
    energy = src.read_interval()
    elapsed_upper = time.monotonic() - t0 + 0.2 + 0.05
    cpu_w = 240.0 * (0.1 + 0.9 * load**3)
    assert energy.components["cpu"].method == "cpu_load_tdp" and energy.components["ram"].method == "constant"
    assert cpu_w * 0.2 <= energy.components["cpu"].joules <= cpu_w * elapsed_upper
    assert energy.components["cpu"].joules / energy.components["ram"].joules == pytest.approx(cpu_w / 20.0)
    assert "TDP 240 W" in energy.assumptions["cpu"]


def test_unknown_model_uses_documented_default_and_settings_win(tmp_path):
    proc = tmp_path / "proc"
    write_proc(proc, busy=0, idle=0, model="Mystery CPU 9000")
    src = CpuLoadTdpSource(proc_root=proc)
    src.open()
    assert "default 4 W x" in src.cpu.basis and "set cpu_tdp_watts" in src.cpu.basis
    fixed = CpuLoadTdpSource(cpu_tdp_watts=65, ram_watts=3, proc_root=proc)
    fixed.open()
    assert (fixed.cpu.watts, fixed.ram.watts) == (65, 3)
    assert fixed.close().components["cpu"].joules >= 0


def test_tdp_lookup_agrees_with_codecarbon_for_every_row_of_its_table():
    """Every name in codecarbon's bundled CPU table, plus the raw forms /proc/cpuinfo shows
    ("(R)", " CPU @ 2.10GHz") and shortened names, gives the TDP codecarbon's own matcher gives
    (None where it gives none). The earlier token-subset matcher differed on 231 of these."""
    import warnings

    from codecarbon.core.cpu import TDP
    from codecarbon.input import DataSource

    from src.components.carbon.sources.cpu_estimate import _cpu_table

    table = DataSource().get_cpu_power_data()
    tdp = TDP.__new__(TDP)  # only the lookup: TDP() itself probes this machine's CPU

    def theirs(model: str) -> float | None:
        match = tdp._get_matching_cpu(model, table)
        if not match:
            return None
        try:
            return float(tdp._get_cpu_constant_power(match, table))
        except ValueError:  # malformed TDP cell ("27.29.5"): codecarbon cannot use it either
            return None

    names, _ = _cpu_table()
    assert len(names) > 1000  # the whole bundled table, not a sample
    queries = list(dict.fromkeys(names))
    queries += [f"Intel(R) Xeon(R) {n.removeprefix('Intel Xeon ')} CPU @ 2.10GHz" for n in names[:200]
                if n.startswith("Intel Xeon")]
    queries += [n.rsplit(" ", 1)[0] for n in names[::7]]  # shortened names: the ambiguous token-set cases
    queries += ["AMD EPYC", "AMD EPYC 7203 8-Core Processor", "Mystery CPU 9000", ""]
    mismatches = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for q in queries:
            ours, cc = lookup_tdp(q), theirs(q) if q else None
            if ours != cc:
                mismatches.append((q, ours, cc))
    assert mismatches == [], f"{len(mismatches)} of {len(queries)} differ, e.g. {mismatches[:5]}"


def test_load_is_sampled_per_second_so_bursts_count_like_codecarbon(tmp_path):
    """A burst then idle: the mean of the per-sample powers, not the power of the mean load
    (0.55 x TDP here, against 0.21 x TDP for one load figure over the whole interval)."""
    proc = tmp_path / "proc"
    write_proc(proc, busy=0, idle=0)
    src = CpuLoadTdpSource(cpu_tdp_watts=100, ram_watts=10, proc_root=proc)
    src.open()
    assert src.max_sample_interval_s == 1.0  # the daemon calls sample() this often
    t0 = time.monotonic()
    time.sleep(0.3)
    write_proc(proc, busy=100, idle=0)  # fully busy since open
    src.sample()
    time.sleep(0.3)
    write_proc(proc, busy=100, idle=100)  # idle since the sample
    energy = src.read_interval()
    elapsed = time.monotonic() - t0
    assert energy.components["cpu"].joules / (100 * elapsed) == pytest.approx(0.55, rel=0.1)
    assert energy.components["ram"].joules == pytest.approx(10 * elapsed, rel=0.05)
    only_ram = CpuLoadTdpSource(ram_watts=10, proc_root=proc, components=("ram",))
    only_ram.open()
    assert only_ram.max_sample_interval_s is None and set(only_ram.close().components) == {"ram"}
