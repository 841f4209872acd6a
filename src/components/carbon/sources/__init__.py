"""Energy sources. Each yields IntervalEnergy and knows nothing of accounting or sinks.

A new source (a platform meter, say) implements :class:`EnergySource` in full and
plugs into ``select.py``; nothing else needs to know it exists.
"""

from __future__ import annotations

from typing import Protocol

from src.components.carbon.record import DeviceInfo, IntervalEnergy, MeterStatus

__all__ = ["DeviceInfo", "EnergySource", "MeterStatus", "SourceDefaults"]


class EnergySource(Protocol):
    name: str

    def open(self) -> None:
        """Start counting; raise SourceUnavailable with a one-line reason if impossible."""

    def sample(self) -> None:
        """Fold readings into the current interval without ending it. A no-op for sources
        that need no sampling between intervals (``max_sample_interval_s`` is None)."""

    @property
    def max_sample_interval_s(self) -> float | None:
        """The longest gap allowed between two reads (counter wrap, power sampling); None: no limit."""

    @property
    def devices(self) -> tuple[DeviceInfo, ...]:
        """The devices measured, in a stable order; their keys are ``IntervalEnergy.devices``' keys."""

    @property
    def degradation(self) -> str:
        """"" while the source measures as intended; else one line saying what it fell back to and why."""

    def recover(self) -> None:
        """Try again what degraded (on SIGHUP). Never raises; a no-op for sources that cannot degrade."""

    @property
    def platform_meter(self) -> MeterStatus | None:
        """The platform meter's state when this source reads one (the ``platform`` component); else None."""

    def read_interval(self) -> IntervalEnergy:
        """Energy since the previous call (or since open)."""

    def close(self) -> IntervalEnergy:
        """Energy since the last read (the tail), then release resources."""


class SourceDefaults:
    """The trivial members of EnergySource, for a source to inherit and override what it needs:
    no sampling between intervals, no devices, never degraded, no platform meter."""

    max_sample_interval_s: float | None = None
    devices: tuple[DeviceInfo, ...] = ()
    degradation: str = ""
    platform_meter: MeterStatus | None = None

    def sample(self) -> None:
        """Nothing to fold between intervals."""

    def recover(self) -> None:
        """Nothing can degrade."""
