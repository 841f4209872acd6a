"""Per-systemd-unit CPU time from the cgroup tree, plus the host's total CPU time.

Which hierarchy is read (``detect``), given ``cgroup_root`` (default /sys/fs/cgroup):

* ``<root>/cgroup.controllers`` exists: pure cgroup v2 ("unified"); read
  ``cpu.stat`` ``usage_usec`` of each unit's cgroup.
* ``<root>/unified/system.slice`` exists (systemd's "hybrid" layout): the v2 tree
  under ``unified/``, same file. ``cpu.stat``'s usage lines exist on every v2 cgroup
  whether or not the ``cpu`` controller is enabled, so this works on hybrid hosts
  whose ``cpu``/``cpuacct`` controllers are bound to v1.
* otherwise a v1 ``cpuacct`` hierarchy (``cpuacct``, ``cpu,cpuacct`` or
  ``cpuacct,cpu`` under the root): ``cpuacct.usage`` (nanoseconds).

Units are directories below the root whose path relative to it matches one of the
include globs and none of the exclude globs (``fnmatch``; default include
``system.slice/*.service``). A matched unit's children are part of it (cgroup CPU time
is hierarchical) and are not listed separately. The host's total CPU time, idle
included, comes from the ``cpu`` line of ``<proc_root>/stat``.

:class:`CpuTimeSampler` turns the cumulative counters into per-interval deltas. A unit
whose cgroup was recreated (restart: new directory inode) or whose counter went down
counts only what it used since; a unit that vanished simply stops appearing, and
its last partial interval ends up unattributed. No delta is ever negative.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from src.components.carbon.record import CpuTimeDelta
from src.components.carbon.sources.procstat import read_cpu_ticks

__all__ = ["CgroupUnavailable", "CpuTimeDelta", "CpuTimeSampler", "Hierarchy", "detect", "host_cpu_ns", "list_units"]

DEFAULT_INCLUDE: tuple[str, ...] = ("system.slice/*.service",)
MAX_DEPTH = 6  # system.slice/a.slice/b.slice/...: deep enough for any sane layout, bounded walk
V1_DIRS = ("cpuacct", "cpu,cpuacct", "cpuacct,cpu")


class CgroupUnavailable(Exception):
    """No readable cgroup CPU accounting under the given root; the message says what was tried."""


@dataclass(frozen=True, slots=True)
class Hierarchy:
    version: str  # "v2" or "v1"
    path: Path  # directory whose children are the slices (system.slice, ...)


def detect(cgroup_root: Path) -> Hierarchy:
    """Pick the hierarchy to read: v2 (pure or hybrid ``unified/``) first, else v1 ``cpuacct``."""
    if (cgroup_root / "cgroup.controllers").is_file():
        return Hierarchy("v2", cgroup_root)
    unified = cgroup_root / "unified"
    if (unified / "cgroup.procs").is_file() and (unified / "system.slice").is_dir():
        return Hierarchy("v2", unified)
    for name in V1_DIRS:
        d = cgroup_root / name
        if (d / "cpuacct.usage").is_file():
            return Hierarchy("v1", d)
    raise CgroupUnavailable(
        f"no cgroup CPU accounting under {cgroup_root}: neither cgroup v2 cpu.stat "
        f"(cgroup.controllers, unified/system.slice) nor v1 cpuacct ({', '.join(V1_DIRS)})"
    )


def read_usage_ns(cgroup_dir: Path, version: str) -> int:
    """Cumulative CPU time of one cgroup in nanoseconds. Raises OSError/ValueError."""
    if version == "v1":
        return int((cgroup_dir / "cpuacct.usage").read_text().split()[0])
    for line in (cgroup_dir / "cpu.stat").read_text().splitlines():
        key, _, value = line.partition(" ")
        if key == "usage_usec":
            return int(value) * 1000
    raise ValueError(f"{cgroup_dir}/cpu.stat has no usage_usec line")


def host_cpu_ns(proc_root: Path = Path("/proc")) -> int:
    """Total CPU time of all CPUs since boot, idle included, in nanoseconds (procstat parses the line)."""
    return read_cpu_ticks(proc_root).total_ns


def matches(rel: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(rel, g) for g in include) and not any(
        fnmatch.fnmatchcase(rel, g) for g in exclude
    )


@dataclass(frozen=True, slots=True)
class UnitUsage:
    name: str  # unit name: the cgroup's directory name, e.g. "nginx.service"
    usage_ns: int
    inode: int  # identifies this cgroup instance: a restarted unit gets a new directory


def unit_name(raw: str) -> str:
    """A cgroup directory name as text every sink can carry.

    ``os.scandir`` decodes bytes that are not UTF-8 as lone surrogates (surrogateescape), which
    no metric label, JSON line or terminal accepts: such a name once crashed the exposition at
    the first interval its cgroup used CPU. Undecodable bytes become ``\\xNN`` instead.
    """
    if raw.isascii():
        return raw
    return raw.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def list_units(h: Hierarchy, include: Sequence[str], exclude: Sequence[str]) -> dict[str, UnitUsage]:
    """Every matching unit cgroup under ``h`` with its cumulative CPU time.

    The walk descends through slices only. systemd nests units in slices
    (``system.slice/system-getty.slice/getty@tty1.service``); what lies below a unit
    (a ``Delegate=yes`` service's or a container scope's own tree, perhaps with its own
    ``system.slice/*.service``) is that unit's, and is never listed as host units.
    Units that disappear while being read are skipped (they are gone anyway).
    """
    out: dict[str, UnitUsage] = {}
    stack: list[tuple[Path, str, int]] = [(h.path, "", 0)]
    while stack:
        directory, rel, depth = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            try:
                if not entry.is_dir(follow_symlinks=False):
                    continue
            except OSError:
                continue
            child_rel = f"{rel}/{entry.name}" if rel else entry.name
            path = Path(entry.path)
            if matches(child_rel, include, exclude):
                try:
                    usage = read_usage_ns(path, h.version)
                    inode = entry.inode()
                except (OSError, ValueError):
                    continue
                # Unit names are unique per manager; the first wins if globs overlap oddly.
                name = unit_name(entry.name)
                out.setdefault(name, UnitUsage(name, usage, inode))
            elif depth + 1 < MAX_DEPTH and entry.name.endswith(".slice"):
                stack.append((path, child_rel, depth + 1))
    return out


@dataclass
class CpuTimeSampler:
    """Reads the counters once per interval and returns the deltas since the previous read."""

    cgroup_root: Path = Path("/sys/fs/cgroup")
    proc_root: Path = Path("/proc")
    include: Sequence[str] = DEFAULT_INCLUDE
    exclude: Sequence[str] = ()
    hierarchy: Hierarchy | None = None
    _units: dict[str, UnitUsage] = field(default_factory=dict)
    _host_ns: int | None = None

    def open(self) -> None:
        """Detect the hierarchy and take the baseline. Raises CgroupUnavailable / OSError."""
        self.hierarchy = detect(self.cgroup_root)
        self._units = list_units(self.hierarchy, self.include, self.exclude)
        self._host_ns = host_cpu_ns(self.proc_root)

    def read(self) -> CpuTimeDelta:
        """Deltas since the last ``read``/``open``; never negative."""
        if self.hierarchy is None or self._host_ns is None:
            self.open()
        assert self.hierarchy is not None and self._host_ns is not None
        units = list_units(self.hierarchy, self.include, self.exclude)
        host = host_cpu_ns(self.proc_root)
        deltas: dict[str, int] = {}
        for name, now in units.items():
            before = self._units.get(name)
            if before is None or before.inode != now.inode:
                delta = now.usage_ns  # new (or recreated) cgroup: everything it used is new
            elif now.usage_ns >= before.usage_ns:
                delta = now.usage_ns - before.usage_ns
            else:
                delta = now.usage_ns  # counter reset in place
            if delta > 0:
                deltas[name] = delta
        host_delta = max(0, host - self._host_ns)
        self._units, self._host_ns = units, host
        return CpuTimeDelta(deltas, host_delta, self.hierarchy.version)
