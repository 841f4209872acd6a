"""The currency passed between layers: energy readings in, emission records out.

Sources produce :class:`IntervalEnergy`; the accountant turns it into an
:class:`EmissionsRecord`; sinks consume records. None of these types knows
about any source or sink.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

COMPONENTS: tuple[str, ...] = ("cpu", "ram", "gpu")
# A platform meter's whole-machine energy (docs/records.md#platform). It is not summed with
# the components: what it measured beyond them is the remainder, which is.
PLATFORM = "platform"
REMAINDER = "remainder"
# The parts that add up to a record's total.
ACCOUNTED: tuple[str, ...] = (*COMPONENTS, REMAINDER)
JOULES_PER_KWH = 3_600_000.0
# Methods that read a hardware energy counter; everything else is an estimate.
MEASURED_METHODS = frozenset({"rapl", "nvml", "codecarbon_rapl", "codecarbon_nvml", "hwmon", "ipmi_dcmi", "redfish"})


# No host reaches this many joules, grams or seconds (the Sun emits ~1e26 J a second); a
# stored total near float's limit (1e308) would overflow to inf at the next interval and make
# every start fail. Above it a state file or record counts as damaged.
MAX_TOTAL = 1e200


@dataclass(frozen=True, slots=True)
class ComponentEnergy:
    joules: float
    method: str  # "rapl", "cpu_load_tdp", "constant", "nvml"


@dataclass(frozen=True, slots=True)
class IntervalEnergy:
    components: dict[str, ComponentEnergy]  # keys: "cpu", "ram", "gpu"
    devices: dict[str, float] = field(default_factory=dict)  # per-device joules
    assumptions: dict[str, str] = field(default_factory=dict)  # per component: what an estimate assumed


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """One device a source measures. ``key`` is its key in ``IntervalEnergy.devices``."""

    key: str  # "gpu0", "package-0", "package-0/dram"
    kind: str  # "gpu", "package", "dram", "platform"
    index: int  # NVML index for a GPU; package (or zone) number for RAPL
    name: str  # product name for a GPU; zone name for RAPL
    component: str  # the record component its energy goes to: "cpu", "ram", "gpu" or "platform"


@dataclass(frozen=True, slots=True)
class MeterStatus:
    """A platform meter's state, for health and metrics (sources/platform.py)."""

    method: str  # "hwmon", "ipmi_dcmi", "redfish"
    device: str  # what it reads: hwmon device name, BMC host, Redfish URL (no credentials)
    error: str  # the current failure; "" while readings succeed
    failures: int  # readings refused since the source opened
    last_watts: float | None  # the last good reading


@dataclass(frozen=True, slots=True)
class CpuTimeDelta:
    """CPU time used in one interval: per unit and by the whole host (all CPUs, idle included)."""

    units_ns: dict[str, int]
    host_ns: int
    cgroup: str  # "v1" or "v2"


def format_methods(methods: Mapping[str, str], sep: str = ",", empty: str = "none") -> str:
    """``cpu=rapl,ram=constant``: the one rendering of a record's energy_method (STATUS=, build_info, check)."""
    return sep.join(f"{k}={v}" for k, v in sorted(methods.items())) or empty


class SourceUnavailable(Exception):
    """The source cannot measure on this machine; the message says why in one line."""


@dataclass(frozen=True, slots=True)
class Intensity:
    grams_per_kwh: float
    source: str  # "fixed", "country_mix", ...
    location: str  # e.g. "USA" or "USA/california"; "" when not applicable


@dataclass(slots=True)
class Totals:
    """Cumulative figures that survive restarts (persisted by the ledger)."""

    seq: int = 0
    energy_j: dict[str, float] = field(default_factory=lambda: dict.fromkeys(ACCOUNTED, 0.0))
    emissions_g: dict[str, float] = field(default_factory=lambda: dict.fromkeys(ACCOUNTED, 0.0))
    # Joules the platform meter measured (not part of the total: the remainder is).
    platform_j: float = 0.0
    # Embodied (manufacturing) carbon amortised over the records' time: kept apart from emissions_g.
    embodied_g: float = 0.0
    # Wall-clock seconds no record covers: from each run's last record to the next run's first
    # interval (killed, powered off, or just restarting). Only grows; see docs/records.md.
    unmeasured_s: float = 0.0
    # Seconds the records cover (the sum of their duration_s): with unmeasured_s, how much of a
    # day a host was measured, even while it is down and no gap is known yet.
    measured_s: float = 0.0

    def copy(self) -> Totals:
        return Totals(self.seq, dict(self.energy_j), dict(self.emissions_g), self.platform_j, self.embodied_g,
                      self.unmeasured_s, self.measured_s)

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "energy_j": dict(self.energy_j), "emissions_g": dict(self.emissions_g),
                "platform_j": self.platform_j, "embodied_g": self.embodied_g, "unmeasured_s": self.unmeasured_s,
                "measured_s": self.measured_s}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Totals:
        seq = data["seq"]
        if not isinstance(seq, int) or seq < 0:
            raise ValueError(f"seq must be a non-negative integer, got {seq!r}")
        totals = cls(seq=seq)
        for name, target in (("energy_j", totals.energy_j), ("emissions_g", totals.emissions_g)):
            values = data[name]
            for comp in ACCOUNTED:  # remainder: absent before platform meters
                value = float(values.get(comp, 0.0))
                if not 0.0 <= value <= MAX_TOTAL:
                    raise ValueError(f"{name}.{comp} must be a number from 0 to {MAX_TOTAL:g}, got {value!r}")
                target[comp] = value
        # Absent from state files and records written before they existed: nothing counted yet.
        for name in ("platform_j", "embodied_g", "unmeasured_s", "measured_s"):
            amount = float(data.get(name, 0.0))
            if not 0.0 <= amount <= MAX_TOTAL:
                raise ValueError(f"{name} must be a number from 0 to {MAX_TOTAL:g}, got {amount!r}")
            setattr(totals, name, amount)
        return totals


@dataclass(frozen=True, slots=True)
class EmissionsRecord:
    """One interval. ``to_json_dict`` is the NDJSON line; docs/records.md defines each field."""

    seq: int
    run_id: str
    host: str | None
    project: str
    env: str
    interval_start: str  # RFC 3339 UTC
    interval_end: str
    duration_s: float
    energy_j: dict[str, float]  # the accounted parts: COMPONENTS, plus REMAINDER when the platform was measured
    power_w: dict[str, float]
    emissions_g: dict[str, float]
    intensity: Intensity
    energy_method: dict[str, str]
    estimated: bool
    totals: Totals
    final: bool = False
    devices_j: dict[str, float] = field(default_factory=dict)
    energy_assumptions: dict[str, str] = field(default_factory=dict)
    # Per-systemd-unit split (docs/attribution.md): unit -> {energy_j, emissions_g, cpu_s},
    # plus "other" and "unattributed"; empty when attribution is off or unavailable.
    units: dict[str, dict[str, float]] = field(default_factory=dict)
    attribution: dict[str, str] = field(default_factory=dict)  # method per component + cgroup version
    platform_j: float | None = None  # the platform meter's joules; None when not measured this interval
    embodied_g: float | None = None  # this interval's share of the embodied footprint; None when not configured

    @property
    def emissions_total_g(self) -> float:
        return sum(self.emissions_g.values())

    def to_json_dict(self) -> dict[str, Any]:
        energy_total = sum(self.energy_j.values())

        def shown(parts: dict[str, float]) -> dict[str, float]:
            # A host that never had a platform meter keeps the record shape it always had.
            return parts if self.totals.platform_j else {k: v for k, v in parts.items() if k != REMAINDER}

        platform: dict[str, float] = {} if self.platform_j is None else {PLATFORM: self.platform_j}
        platform_w: dict[str, float] = {} if self.platform_j is None else {
            PLATFORM: self.platform_j / self.duration_s if self.duration_s > 0 else 0.0}
        record: dict[str, Any] = {
            "timestamp": self.interval_end,
            "interval_start": self.interval_start,
            "interval_end": self.interval_end,
            "duration_s": self.duration_s,
            "seq": self.seq,
            "run_id": self.run_id,
        }
        if self.host is not None:
            record["host"] = self.host
        record.update(
            {
                "project": self.project,
                "env": self.env,
                "energy_j": {**self.energy_j, **platform, "total": energy_total},
                "energy_kwh": {
                    **{k: v / JOULES_PER_KWH for k, v in self.energy_j.items()},
                    "total": energy_total / JOULES_PER_KWH,
                },
                "power_w": {**self.power_w, **platform_w, "total": sum(self.power_w.values())},
                "emissions_g": {**self.emissions_g, "total": self.emissions_total_g},
                "emissions_kg": self.emissions_total_g / 1000.0,
                **({"embodied_g": self.embodied_g} if self.embodied_g is not None else {}),
                "carbon_intensity_g_per_kwh": self.intensity.grams_per_kwh,
                "intensity_source": self.intensity.source,
                "intensity_location": self.intensity.location,
                "energy_method": dict(self.energy_method),
                "estimated": self.estimated,
                "totals": {
                    "energy_j": {**shown(self.totals.energy_j), "total": sum(self.totals.energy_j.values())},
                    "emissions_g": {
                        **shown(self.totals.emissions_g),
                        "total": sum(self.totals.emissions_g.values()),
                    },
                    **({"platform_j": self.totals.platform_j} if self.totals.platform_j else {}),
                    **({"embodied_g": self.totals.embodied_g}
                       if self.embodied_g is not None or self.totals.embodied_g else {}),
                    "records": self.totals.seq,
                    "unmeasured_s": self.totals.unmeasured_s,
                    "measured_s": self.totals.measured_s,
                },
                "final": self.final,
            }
        )
        if self.devices_j:
            record["devices_j"] = dict(self.devices_j)
        if self.energy_assumptions:
            record["energy_assumptions"] = dict(self.energy_assumptions)
        if self.units:
            record["units"] = {k: dict(v) for k, v in self.units.items()}
            record["attribution"] = dict(self.attribution)
        return record
