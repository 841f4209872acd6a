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
        return _parse_cpu_line(fh.readline(), proc_root)


class CpuTickReader:
    """:func:`read_cpu_ticks` for a once-a-second sampler: the file stays open and each read is
    one ``pread`` of its first line.

    On these VMs a sample that opens, reads and closes /proc/stat cost ~0.17 ms of CPU at 1 Hz
    (cold caches, six syscalls); the kernel regenerates the file at every read from offset 0, so
    a kept descriptor reads fresh figures. Same errors as :func:`read_cpu_ticks`.
    """

    _FIRST_LINE_MAX = 512  # "cpu" and ten 20-digit counters fit; a longer line is read whole

    def __init__(self, proc_root: Path = Path("/proc")) -> None:
        self._proc_root = proc_root
        self._path = str(proc_root / "stat")
        self._fd: int | None = None

    def read(self) -> CpuTicks:
        if self._fd is None:
            self._fd = os.open(self._path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            head = os.pread(self._fd, self._FIRST_LINE_MAX, 0)
        except OSError:
            self.close()  # reopened by the next read
            raise
        end = head.find(b"\n")
        if end < 0 and len(head) == self._FIRST_LINE_MAX:
            return read_cpu_ticks(self._proc_root)
        return _parse_cpu_line(head[:end] if end >= 0 else head, self._proc_root)

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


def _parse_cpu_line(line: bytes, proc_root: Path) -> CpuTicks:
    first = line.split()
    if not first or first[0] != b"cpu":
        raise ValueError(f"{proc_root}/stat does not start with a cpu line")
    values = [int(v) for v in first[1:9]]
    idle = values[3] + values[4] if len(values) > 4 else (values[3] if len(values) > 3 else 0)
    total = sum(values)
    return CpuTicks(total - idle, total)
