"""CPU-load x TDP estimate: codecarbon's model without codecarbon's tracker.

The model of codecarbon's machine-wide ``cpu_load`` mode (power = TDP x (0.1 + 0.9 x
load^3), RAM = watts per estimated DIMM), sampled the way codecarbon samples it: the
load over each second, from ``/proc/stat`` (the daemon calls :meth:`CpuLoadTdpSource.sample`
every ``max_sample_interval_s``), each second's power weighted by its length. It skips
the tracker's hardware probing (~1.4 s and ~55 MB), which is why ``energy_source:
cpu_load_tdp`` is the lean mode and why the default falls back to it when codecarbon
cannot run. The TDP comes from the setting ``cpu_tdp_watts``, else from codecarbon's
bundled CPU table (matched as codecarbon matches), else codecarbon's default of 4 W per
thread; every record says which (``energy_assumptions``). An estimate either way: measure
with RAPL where you need exact figures.
"""

from __future__ import annotations

import csv
import io
import os
import re
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from src.components.carbon.record import ComponentEnergy, IntervalEnergy, SourceUnavailable
from src.components.carbon.reference_data import codecarbon_data_file
from src.components.carbon.sources.procstat import CpuTickReader
from src.components.carbon.sources import SourceDefaults

DEFAULT_WATTS_PER_THREAD = 4.0  # codecarbon's fallback for CPUs missing from its table
IDLE_FRACTION = 0.1
RAM_WATTS_PER_DIMM = 5.0  # codecarbon's x86 figure (RAM_SLOT_POWER_X86)
DEFAULT_SAMPLE_INTERVAL_S = 1.0  # codecarbon's monitor thread samples load once a second


@dataclass(frozen=True)
class Assumption:
    watts: float
    basis: str  # one line: where the figure comes from


def cpu_model(proc_root: Path = Path("/proc")) -> tuple[str, int]:
    """The CPU model name and the number of physical packages."""
    model, packages = "", set()
    try:
        for line in (proc_root / "cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and not model:
                model = value.strip()
            elif key == "physical id":
                packages.add(value.strip())
    except OSError:
        pass
    return model, max(1, len(packages))


@lru_cache(maxsize=1)
def _cpu_table() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(names, TDP strings) of codecarbon's CPU table, in file order; empty without codecarbon."""
    table_path = codecarbon_data_file("hardware/cpu_power.csv")
    if table_path is None:
        return (), ()
    rows = [(row["Name"], row["TDP"]) for row in csv.DictReader(io.StringIO(table_path.read_text()))
            if row.get("Name") is not None]
    return tuple(n for n, _ in rows), tuple(t for _, t in rows)


def lookup_tdp(model: str) -> float | None:
    """TDP per package from codecarbon's table, matched exactly as codecarbon matches it.

    codecarbon (core/cpu.py, ``TDP._get_matching_cpu``, non-greedy): a case-insensitive exact
    name; then the same after removing "(R)", " CPU @ ..." and " @ N.NNGHz"; then a token-set
    match (one name's tokens contained in the other's), accepted only when exactly one row
    matches. tests/unit/test_cpu_estimate.py checks every row of the table against codecarbon.
    """
    names, tdps = _cpu_table()
    if not model or not names:
        return None
    try:
        from rapidfuzz import fuzz, process, utils
    except ImportError:  # codecarbon's own dependency: absent only with a broken codecarbon install
        return None

    def exact(query: str) -> int | None:
        hit = process.extractOne(query, names, processor=str.lower, scorer=fuzz.ratio, score_cutoff=100)
        return hit[2] if hit else None

    index = exact(model)
    if index is None:
        stripped = model.replace("(R)", "")
        cut = stripped.find(" CPU @ ")
        if cut > 0:
            stripped = stripped[:cut]
        stripped = re.sub(r" @\s*\d+\.\d+GHz", "", stripped.replace(" CPU", ""))
        index = exact(stripped)
        if index is None:
            hits = process.extract(stripped, names, processor=utils.default_process, scorer=fuzz.token_set_ratio,
                                   score_cutoff=100)
            if hits and (len(hits) == 1 or hits[0][1] != hits[1][1]):
                index = hits[0][2]
    if index is None:
        return None
    first = names.index(names[index])  # codecarbon takes the first row with that name
    try:
        return float(tdps[first])
    except ValueError:  # the bundled table has a few malformed rows ("27.29.5"); codecarbon fails on them too
        return None


def estimate_dimms(total_gb: float) -> int:
    """codecarbon's DIMM-count heuristic, condensed: 2 up to 16 GB, 4 to 64 GB, 8 to 128 GB, then 32 GB DIMMs."""
    if total_gb <= 16:
        return 2
    if total_gb <= 64:
        return 4
    if total_gb <= 128:
        return 8
    return min(32, max(8, -(-int(total_gb) // 32)))


def ram_power(dimms: int) -> float:
    """Diminishing watts per extra DIMM, as codecarbon's RAM model has it."""
    steps = [(4, 1.0), (4, 0.9), (8, 0.8), (10**6, 0.7)]
    watts, left = 0.0, dimms
    for count, factor in steps:
        take = min(left, count)
        watts += take * RAM_WATTS_PER_DIMM * factor
        left -= take
    return max(2 * RAM_WATTS_PER_DIMM, watts)


class CpuLoadTdpSource(SourceDefaults):
    """codecarbon's CPU-load model, sampled like codecarbon: load over each second, power = TDP x
    (0.1 + 0.9 x load^3), integrated over the interval. RAM is a constant (codecarbon's DIMM model).

    ``components`` limits what is reported (``("ram",)`` when RAPL measures the CPU, say).
    """

    name = "cpu_load_tdp"

    def __init__(
        self,
        cpu_tdp_watts: float | None = None,
        ram_watts: float | None = None,
        proc_root: Path = Path("/proc"),
        components: tuple[str, ...] = ("cpu", "ram"),
        sample_interval_s: float = DEFAULT_SAMPLE_INTERVAL_S,
    ) -> None:
        self._proc = proc_root
        self._ticks = CpuTickReader(proc_root)
        self._tdp_setting = cpu_tdp_watts
        self._ram_setting = ram_watts
        self.components = components
        self._sample_interval_s = sample_interval_s
        self._last: tuple[int, int] | None = None
        self._last_mono = 0.0
        self._pending_cpu_j = 0.0
        self._pending_s = 0.0
        self._lock = threading.Lock()  # AutoSource may close it from its tracker thread
        self.cpu = Assumption(0.0, "")
        self.ram = Assumption(0.0, "")

    def open(self) -> None:
        last = self._read_stat()
        with self._lock:
            self._last, self._last_mono = last, time.monotonic()
            self._pending_cpu_j = self._pending_s = 0.0
        self.cpu = self._cpu_assumption()
        self.ram = self._ram_assumption()

    @property
    def max_sample_interval_s(self) -> float | None:
        """Load is sampled every second, as codecarbon does: for a cubic, the mean of the cubes is
        not the cube of the mean, so one load figure per interval under-reads bursty loads."""
        return self._sample_interval_s if "cpu" in self.components else None

    def sample(self) -> None:
        with self._lock:
            self._fold()

    def read_interval(self) -> IntervalEnergy:
        with self._lock:
            self._fold()
            return self._drain()

    def close(self) -> IntervalEnergy:
        with self._lock:
            if self._last is None:
                self._ticks.close()
                return IntervalEnergy({})
            self._fold()
            energy = self._drain()
            self._last = None
            self._ticks.close()
            return energy

    def _cpu_assumption(self) -> Assumption:
        if self._tdp_setting is not None:
            return Assumption(self._tdp_setting, f"TDP {self._tdp_setting:g} W from setting cpu_tdp_watts")
        model, packages = cpu_model(self._proc)
        tdp = lookup_tdp(model)
        if tdp is not None:
            return Assumption(tdp * packages, f"TDP {tdp * packages:g} W: {packages} x {tdp:g} W for {model!r} "
                                              "(codecarbon's CPU table)")
        threads = os.cpu_count() or 1
        watts = DEFAULT_WATTS_PER_THREAD * threads
        return Assumption(watts, f"TDP {watts:g} W: default {DEFAULT_WATTS_PER_THREAD:g} W x {threads} threads "
                                 f"(CPU {model or 'unknown'!r} not in codecarbon's table; set cpu_tdp_watts)")

    def _ram_assumption(self) -> Assumption:
        if self._ram_setting is not None:
            return Assumption(self._ram_setting, f"RAM {self._ram_setting:g} W from setting ram_watts")
        total_kb = 0
        try:
            for line in (self._proc / "meminfo").read_text().splitlines():
                if line.startswith("MemTotal:"):
                    total_kb = int(line.split()[1])
                    break
        except (OSError, ValueError, IndexError):
            pass
        gb = total_kb / 1024**2
        dimms = estimate_dimms(gb)
        watts = ram_power(dimms)
        return Assumption(watts, f"RAM {watts:g} W: {dimms} DIMMs estimated for {gb:.1f} GB x "
                                 f"{RAM_WATTS_PER_DIMM:g} W (codecarbon's model)")

    def _read_stat(self) -> tuple[int, int]:
        """(busy, total) jiffies across all CPUs."""
        try:
            ticks = self._ticks.read()
        except OSError as exc:
            raise SourceUnavailable(f"cannot read {self._proc / 'stat'}: {exc.strerror}") from None
        except ValueError:
            raise SourceUnavailable(f"{self._proc / 'stat'}: unexpected first line") from None
        return ticks.busy, ticks.total

    def _fold(self) -> None:
        """Add the power since the last sample, at this sample's load, to the pending energy."""
        if self._last is None:
            raise RuntimeError("source is not open")
        busy, total = self._read_stat()
        now = time.monotonic()
        d_busy, d_total = busy - self._last[0], total - self._last[1]
        elapsed = max(0.0, now - self._last_mono)
        self._last, self._last_mono = (busy, total), now
        load = min(1.0, max(0.0, d_busy / d_total)) if d_total > 0 else 0.0
        self._pending_cpu_j += self.cpu.watts * (IDLE_FRACTION + (1 - IDLE_FRACTION) * load**3) * elapsed
        self._pending_s += elapsed

    def _drain(self) -> IntervalEnergy:
        components, assumptions = {}, {}
        if "cpu" in self.components:
            components["cpu"] = ComponentEnergy(self._pending_cpu_j, "cpu_load_tdp")
            assumptions["cpu"] = self.cpu.basis
        if "ram" in self.components:
            components["ram"] = ComponentEnergy(self.ram.watts * self._pending_s, "constant")
            assumptions["ram"] = self.ram.basis
        self._pending_cpu_j = self._pending_s = 0.0
        return IntervalEnergy(components, assumptions=assumptions)
