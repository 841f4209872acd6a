"""Interval accounting: energy readings + CPU time + elapsed time + intensity -> one complete record."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from src.components.carbon import attribution
from src.components.carbon.calibration import PlatformFit
from src.components.carbon.record import (
    ACCOUNTED,
    COMPONENTS,
    JOULES_PER_KWH,
    MEASURED_METHODS,
    PLATFORM,
    REMAINDER,
    CpuTimeDelta,
    EmissionsRecord,
    Intensity,
    IntervalEnergy,
    Totals,
)


def rfc3339(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


SECONDS_PER_YEAR = 365.25 * 86400  # a Julian year: leap years averaged in


@dataclass(frozen=True, slots=True)
class Embodied:
    """The host's manufacturing footprint, amortised linearly over its life (docs/embodied.md)."""

    kgco2e: float
    lifetime_years: float

    def grams(self, duration_s: float) -> float:
        """The share of ``duration_s``: exactly kgco2e x 1000 x duration_s / (lifetime_years x 365.25 x 86400)."""
        return self.kgco2e * 1000.0 * duration_s / (self.lifetime_years * 365.25 * 86400)


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the records are about; changes only on SIGHUP."""

    run_id: str
    host: str | None
    project: str
    env: str


class Accountant:
    """Owns the running totals; each call adds exactly one interval to them."""

    def __init__(self, totals: Totals, top_n: int = attribution.DEFAULT_TOP_N,
                 embodied: Embodied | None = None) -> None:
        self.totals = totals
        self.top_n = top_n
        self.embodied = embodied  # replaced whole on SIGHUP (a live setting)
        self.fit = PlatformFit()  # platform against RAPL, over this run

    def account(
        self,
        energy: IntervalEnergy,
        *,
        end_wall: float,
        elapsed_s: float,
        intensity: Intensity,
        identity: Identity,
        final: bool = False,
        cpu_time: CpuTimeDelta | None = None,
    ) -> EmissionsRecord:
        """Build the record for one interval, per-unit split included when ``cpu_time`` is given.

        ``elapsed_s`` is monotonic time: average power must not jump when the
        wall clock is stepped. The wall clock (``end_wall``) only labels the interval.
        """
        energy_j = {c: max(0.0, energy.components[c].joules) if c in energy.components else 0.0 for c in COMPONENTS}
        methods = {c: energy.components[c].method for c in COMPONENTS if c in energy.components}
        platform = energy.components.get(PLATFORM)
        platform_j = None if platform is None else max(0.0, platform.joules)
        if platform_j is not None:
            # The meter saw the whole machine: what it measured beyond the components is the
            # remainder (never negative: components above the meter are kept, not cut).
            energy_j[REMAINDER] = max(0.0, platform_j - sum(energy_j.values()))
            methods[PLATFORM] = platform.method
        power_w = {c: (j / elapsed_s if elapsed_s > 0 else 0.0) for c, j in energy_j.items()}
        emissions_g = {c: j / JOULES_PER_KWH * intensity.grams_per_kwh for c, j in energy_j.items()}
        if platform_j is not None and elapsed_s > 0:
            rapl_w = sum(power_w[c] for c in ("cpu", "ram") if methods.get(c) == "rapl")
            if rapl_w > 0:
                self.fit.add(rapl_w, platform_j / elapsed_s)
        embodied_g = self.embodied.grams(max(0.0, elapsed_s)) if self.embodied is not None else None
        units: dict[str, dict[str, float]] = {}
        split: dict[str, str] = {}
        if cpu_time is not None:
            # The remainder (PSU, fans, board) follows the CPU's split: docs/attribution.md.
            shared = (REMAINDER,) if platform_j is not None else ()
            shares = attribution.attribute(
                cpu_time, cpu_j=energy_j["cpu"] + sum(energy_j[c] for c in shared), total_j=sum(energy_j.values()),
                cpu_g=emissions_g["cpu"] + sum(emissions_g[c] for c in shared), total_g=sum(emissions_g.values()),
                top_n=self.top_n, embodied_g=embodied_g,
            )
            units = {k: v.as_dict() for k, v in shares.items()}
            split = {**attribution.METHOD, **dict.fromkeys(shared, attribution.METHOD["cpu"]),
                     **({"embodied": attribution.METHOD["cpu"]} if embodied_g is not None else {}),
                     "cgroup": cpu_time.cgroup}
        totals = self.totals
        totals.seq += 1
        totals.measured_s += max(0.0, elapsed_s)
        for c in ACCOUNTED:  # .get: totals made before the remainder existed lack it
            totals.energy_j[c] = totals.energy_j.get(c, 0.0) + energy_j.get(c, 0.0)
            totals.emissions_g[c] = totals.emissions_g.get(c, 0.0) + emissions_g.get(c, 0.0)
        if platform_j is not None:
            totals.platform_j += platform_j
        if embodied_g is not None:
            totals.embodied_g += embodied_g
        return EmissionsRecord(
            seq=totals.seq,
            run_id=identity.run_id,
            host=identity.host,
            project=identity.project,
            env=identity.env,
            interval_start=rfc3339(end_wall - elapsed_s),
            interval_end=rfc3339(end_wall),
            duration_s=elapsed_s,
            energy_j=energy_j,
            power_w=power_w,
            emissions_g=emissions_g,
            intensity=intensity,
            energy_method=methods,
            estimated=any(m not in MEASURED_METHODS for m in methods.values()),
            totals=totals.copy(),
            final=final,
            devices_j=dict(energy.devices),
            energy_assumptions=dict(energy.assumptions),
            units=units,
            attribution=split,
            platform_j=platform_j,
            embodied_g=embodied_g,
        )
