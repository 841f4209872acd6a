"""The ``cpu`` line of /proc/stat: the one parser for the host's CPU time.

Fields (in USER_HZ ticks, all CPUs together): user nice system idle iowait irq softirq
steal; guest time is already part of user/nice, so it is not added again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

USER_HZ = os.sysconf("SC_CLK_TCK")  # Linux only, like /proc itself


@dataclass(frozen=True, slots=True)
class CpuTicks:
    busy: int  # everything but idle and iowait
    total: int  # idle included

    @property
    def total_ns(self) -> int:
        return self.total * 1_000_000_000 // USER_HZ


def read_cpu_ticks(proc_root: Path = Path("/proc")) -> CpuTicks:
    """Cumulative CPU ticks since boot. Raises OSError (unreadable) or ValueError (not a cpu line)."""
    with open(proc_root / "stat", "rb") as fh:
        first = fh.readline().split()
    if not first or first[0] != b"cpu":
        raise ValueError(f"{proc_root}/stat does not start with a cpu line")
    values = [int(v) for v in first[1:9]]
    idle = values[3] + values[4] if len(values) > 4 else (values[3] if len(values) > 3 else 0)
    total = sum(values)
    return CpuTicks(total - idle, total)
