"""Several sources read as one: the CPU source (RAPL or cpu_load_tdp), the GPU source, the platform meter.

Components and devices are merged; parts measure disjoint components (cpu/ram vs gpu vs platform),
so a component present in two parts is a wiring bug and is refused.
"""

from __future__ import annotations

from src.components.carbon.record import DeviceInfo, IntervalEnergy
from src.components.carbon.sources import EnergySource, MeterStatus


class CompositeSource:
    def __init__(self, *parts: EnergySource) -> None:
        if not parts:
            raise ValueError("CompositeSource needs at least one part")
        self.parts = parts
        self._carry: list[IntervalEnergy] = []  # readings of parts that succeeded in a failed interval

    @property
    def name(self) -> str:
        return "+".join(p.name for p in self.parts)  # e.g. "rapl+nvml"; a part's name may change (fallback)

    @property
    def degradation(self) -> str:
        return "; ".join(p.degradation for p in self.parts if p.degradation)

    def recover(self) -> None:
        for part in self.parts:
            part.recover()

    def open(self) -> None:
        # Each part's first interval starts when it opens, and the record's when open() returns.
        # The parts are listed exact counters first (RAPL, the platform meter) and slow opens
        # last (the default's estimate and tracker, NVML's init): opened in reverse, the exact
        # ones take their baseline last, within microseconds of the record's start, instead of
        # tens of milliseconds before it (seen: +14 J on a 290 W platform meter's first record).
        opened: list[EnergySource] = []
        try:
            for part in reversed(self.parts):
                part.open()
                opened.append(part)
        except BaseException:
            for part in opened:
                _close_quietly(part)
            raise

    def read_interval(self) -> IntervalEnergy:
        # Every part is read even when one fails, so the parts stay on the same interval
        # boundary; the failure is raised after (the failed part keeps its energy pending).
        readings: list[IntervalEnergy] = []
        error: Exception | None = None
        for part in self.parts:
            try:
                readings.append(part.read_interval())
            except Exception as exc:
                error = error or exc
        if error is not None:
            # The parts that did read must not lose their interval: this one counts it.
            self._carry.extend(readings)
            raise error
        carried, self._carry = self._carry, []
        return merge(*carried, *readings)

    def close(self) -> IntervalEnergy:
        readings, self._carry = self._carry, []
        error: Exception | None = None
        for part in self.parts:  # every part is closed, whatever the others do
            try:
                readings.append(part.close())
            except Exception as exc:
                error = error or exc
        if error is not None:
            raise error
        return merge(*readings)

    def sample(self) -> None:
        for part in self.parts:
            part.sample()

    @property
    def max_sample_interval_s(self) -> float | None:
        limits = [p.max_sample_interval_s for p in self.parts]
        found = [x for x in limits if x is not None]
        return min(found) if found else None

    @property
    def devices(self) -> tuple[DeviceInfo, ...]:
        return tuple(d for part in self.parts for d in part.devices)

    @property
    def platform_meter(self) -> MeterStatus | None:
        return next((m for m in (p.platform_meter for p in self.parts) if m is not None), None)


def merge(*readings: IntervalEnergy) -> IntervalEnergy:
    """Sum readings: joules add per component (same method required) and per device."""
    components: dict = {}
    devices: dict[str, float] = {}
    assumptions: dict[str, str] = {}
    for r in readings:
        for comp, energy in r.components.items():
            prev = components.get(comp)
            if prev is not None and prev.method != energy.method:
                raise ValueError(f"component {comp} measured two ways: {prev.method} and {energy.method}")
            components[comp] = energy if prev is None else type(energy)(prev.joules + energy.joules, energy.method)
        for dev, joules in r.devices.items():
            devices[dev] = devices.get(dev, 0.0) + joules
        assumptions.update(r.assumptions)
    return IntervalEnergy(components=components, devices=devices, assumptions=assumptions)


def _close_quietly(part: EnergySource) -> None:
    try:
        part.close()
    except Exception:
        pass
