"""Split one interval's energy across systemd units by their share of CPU time.

Pure functions: no I/O. docs/attribution.md explains the method; in short:

* CPU energy: unit u gets ``cpu_j x cpu_time(u) / host_cpu_time``, the host's CPU
  time being that of all CPUs over the interval, idle included. (If the unit counters
  and /proc/stat were read a hair apart and the units add up to more than the host,
  the host figure is raised to their sum: shares never exceed 1.)
* RAM and GPU energy are not split (method ``unattributed``): they go to the
  ``unattributed`` bucket together with idle time, kernel/interrupt time and every
  cgroup the globs do not select.
* The ``top_n`` units with the most CPU time this interval keep their name; the rest
  are summed as ``other``.

Exactness: the split is done in integer multiples of ``q = ulp(total)`` (the spacing
of floats at the host total). Every bucket is ``k x q`` with integer ``k``, the
``k`` add up to ``total / q`` exactly, and any partial sum of such values is at most
``total`` and so representable: ``sum(buckets) == total`` holds bit for bit in
floating point whatever the order of summation (Python's ``sum``, ``math.fsum``,
``jq add``). The price is at most one ``ulp(total)`` per bucket moved to
``unattributed`` (about 1e-16 of the total).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from src.components.carbon.record import CpuTimeDelta

UNATTRIBUTED = "unattributed"
OTHER = "other"
RESERVED = frozenset({UNATTRIBUTED, OTHER})
DEFAULT_TOP_N = 20
METHOD = {"cpu": "cpu_time_share", "ram": UNATTRIBUTED, "gpu": UNATTRIBUTED}


@dataclass(frozen=True, slots=True)
class AttributionSettings:
    """Which cgroups are units (read by ``sources.cgroups``), how many keep their name, how long on /metrics."""

    enabled: bool = True
    cgroup_root: Path = Path("/sys/fs/cgroup")
    proc_root: Path = Path("/proc")
    include: tuple[str, ...] = ("system.slice/*.service",)
    exclude: tuple[str, ...] = ()
    top_n: int = DEFAULT_TOP_N
    metrics_grace_s: float = 120.0  # how long a unit's /metrics series outlives the last record naming it


def split_exact(total: float, portion: float, weights: Mapping[str, int], denominator: int) -> tuple[dict[str, float], float]:
    """Split ``portion`` (<= ``total``) by ``weights / denominator``; the remainder of ``total`` is returned.

    Returns ``(parts, remainder)`` with every value a multiple of ``ulp(total)`` and
    ``sum(parts) + remainder == total`` exactly. ``sum(weights) <= denominator`` is required.
    """
    if not (total > 0.0 and math.isfinite(total)) or denominator <= 0:
        return {k: 0.0 for k in weights}, (total if total > 0.0 and math.isfinite(total) else 0.0)
    q = math.ulp(total)
    ticks_total = int(total / q)  # exact: total is a multiple of its own ulp
    ticks_portion = min(ticks_total, math.floor(min(max(portion, 0.0), total) / q))
    parts_ticks = {k: ticks_portion * w // denominator for k, w in weights.items()}
    remainder_ticks = ticks_total - sum(parts_ticks.values())
    return {k: t * q for k, t in parts_ticks.items()}, remainder_ticks * q


@dataclass(frozen=True, slots=True)
class UnitShare:
    energy_j: float
    emissions_g: float
    cpu_s: float  # CPU seconds the unit (or bucket) used in the interval; 0 for unattributed
    embodied_g: float | None = None  # its share of the interval's embodied carbon, when configured

    def as_dict(self) -> dict[str, float]:
        shares = {"energy_j": self.energy_j, "emissions_g": self.emissions_g, "cpu_s": self.cpu_s}
        if self.embodied_g is not None:
            shares["embodied_g"] = self.embodied_g
        return shares


def attribute(
    cpu_time: CpuTimeDelta,
    *,
    cpu_j: float,
    total_j: float,
    cpu_g: float,
    total_g: float,
    top_n: int = DEFAULT_TOP_N,
    embodied_g: float | None = None,
) -> dict[str, UnitShare]:
    """Per-unit shares of one interval.

    ``total_j``/``total_g`` are the host totals (cpu + ram + gpu) as the record states
    them; ``cpu_j``/``cpu_g`` the CPU part that is split by CPU time. The result holds
    the top ``top_n`` units by name, then ``other`` (when any unit was folded into it)
    and ``unattributed`` (always), and satisfies
    ``sum(v.energy_j for v in result.values()) == total_j`` exactly (same for grams).
    ``embodied_g`` (the interval's embodied carbon) is split by the same CPU-time weights,
    the idle share ``unattributed``, and sums exactly to ``embodied_g`` too.
    """
    units = {n: ns for n, ns in cpu_time.units_ns.items() if ns > 0}
    ranked = sorted(units.items(), key=lambda kv: (-kv[1], kv[0]))
    keep = ranked[: max(0, top_n)]
    rest = ranked[max(0, top_n):]
    weights: dict[str, int] = {}
    for name, ns in keep:
        # A unit literally named "other"/"unattributed" cannot shadow the buckets.
        weights[f"{name}!" if name in RESERVED else name] = ns
    if rest:
        weights[OTHER] = sum(ns for _, ns in rest)
    denominator = max(cpu_time.host_ns, sum(weights.values()))
    energy, energy_rest = split_exact(total_j, cpu_j, weights, denominator)
    grams, grams_rest = split_exact(total_g, cpu_g, weights, denominator)
    if embodied_g is None:
        embodied: dict[str, float | None] = dict.fromkeys(weights)
        embodied_rest: float | None = None
    else:  # the machine's share each unit occupied, as for its CPU energy
        embodied, embodied_rest = split_exact(embodied_g, embodied_g, weights, denominator)
    result = {k: UnitShare(energy[k], grams[k], weights[k] / 1e9, embodied[k]) for k in weights}
    idle_ns = max(0, cpu_time.host_ns - sum(weights.values()))
    result[UNATTRIBUTED] = UnitShare(energy_rest, grams_rest, idle_ns / 1e9, embodied_rest)
    return result
