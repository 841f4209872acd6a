"""CPU-load x TDP estimate, for machines without readable energy counters.

The same model codecarbon uses in its machine-wide ``cpu_load`` mode
(power = TDP x (0.1 + 0.9 x load^3), RAM = watts per estimated DIMM), computed
from ``/proc/stat`` deltas once per interval instead of a 1 Hz sampling thread,
and without constructing codecarbon's tracker (its hardware probing alone costs
~1.4 s and ~55 MB). The TDP comes from the setting ``cpu_tdp_watts``, else from
codecarbon's bundled CPU table, else codecarbon's default of 4 W per thread;
every record says which (``energy_assumptions``).

Because load is averaged over the whole interval before the cubic is applied,
bursty loads come out lower than with per-second sampling. Both are estimates
and are labelled as such; measure with RAPL where you need exact figures.
"""

from __future__ import annotations

import csv
import io
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from src.components.carbon.record import ComponentEnergy, IntervalEnergy, SourceUnavailable
from src.components.carbon.reference_data import codecarbon_data_file
from src.components.carbon.sources import ReadAtIntervalEnd
from src.components.carbon.sources.procstat import read_cpu_ticks

DEFAULT_WATTS_PER_THREAD = 4.0  # codecarbon's fallback for CPUs missing from its table
IDLE_FRACTION = 0.1
RAM_WATTS_PER_DIMM = 5.0  # codecarbon's x86 figure (RAM_SLOT_POWER_X86)
_NOISE = re.compile(r"\(r\)|\(tm\)|\bcpu\b|@.*$|\b\d+-core\b|\bprocessor\b", re.IGNORECASE)


@dataclass(frozen=True)
class Assumption:
    watts: float
    basis: str  # one line: where the figure comes from


def _tokens(name: str) -> frozenset[str]:
    return frozenset(_NOISE.sub(" ", name).lower().split())


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


def lookup_tdp(model: str) -> float | None:
    """TDP per package from codecarbon's table: an exact name, or one unique token-subset match.

    Like codecarbon's non-greedy matching: an ambiguous match gives no answer rather than a wrong one.
    """
    table_path = codecarbon_data_file("hardware/cpu_power.csv")
    if not model or table_path is None:
        return None
    table = table_path.read_text()
    wanted = _tokens(model)
    exact, partial = None, []
    for row in csv.DictReader(io.StringIO(table)):
        try:
            name, tdp = row["Name"], float(row["TDP"])
        except (TypeError, ValueError):
            continue  # the bundled table has a few malformed rows ("27.29.5")
        if name.lower() == model.lower():
            exact = tdp
            break
        tokens = _tokens(name)
        if tokens and (tokens <= wanted or wanted <= tokens):
            partial.append(tdp)
    if exact is not None:
        return exact
    return partial[0] if len(set(partial)) == 1 else None


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


class CpuLoadTdpSource(ReadAtIntervalEnd):
    name = "cpu_load_tdp"

    def __init__(
        self, cpu_tdp_watts: float | None = None, ram_watts: float | None = None, proc_root: Path = Path("/proc")
    ) -> None:
        self._proc = proc_root
        self._tdp_setting = cpu_tdp_watts
        self._ram_setting = ram_watts
        self._last: tuple[int, int] | None = None
        self._last_mono = 0.0
        self.cpu = Assumption(0.0, "")
        self.ram = Assumption(0.0, "")

    def open(self) -> None:
        self._last = self._read_stat()
        self._last_mono = time.monotonic()
        self.cpu = self._cpu_assumption()
        self.ram = self._ram_assumption()

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
            ticks = read_cpu_ticks(self._proc)
        except OSError as exc:
            raise SourceUnavailable(f"cannot read {self._proc / 'stat'}: {exc.strerror}") from None
        except ValueError:
            raise SourceUnavailable(f"{self._proc / 'stat'}: unexpected first line") from None
        return ticks.busy, ticks.total

    def _interval(self) -> IntervalEnergy:
        if self._last is None:
            raise RuntimeError("source is not open")
        busy, total = self._read_stat()
        now = time.monotonic()
        d_busy, d_total = busy - self._last[0], total - self._last[1]
        elapsed = now - self._last_mono
        self._last, self._last_mono = (busy, total), now
        load = min(1.0, max(0.0, d_busy / d_total)) if d_total > 0 else 0.0
        cpu_w = self.cpu.watts * (IDLE_FRACTION + (1 - IDLE_FRACTION) * load**3)
        return IntervalEnergy(
            {"cpu": ComponentEnergy(cpu_w * elapsed, "cpu_load_tdp"),
             "ram": ComponentEnergy(self.ram.watts * elapsed, "constant")},
            assumptions={"cpu": self.cpu.basis, "ram": self.ram.basis},
        )

    def read_interval(self) -> IntervalEnergy:
        return self._interval()

    def close(self) -> IntervalEnergy:
        energy = self._interval()
        self._last = None
        return energy
