"""Energy sources. Each yields IntervalEnergy and knows nothing of accounting or sinks."""

from __future__ import annotations

from typing import Protocol

from src.components.carbon.record import IntervalEnergy


class EnergySource(Protocol):
    name: str

    def open(self) -> None:
        """Start counting; raise SourceUnavailable with a one-line reason if impossible."""

    def read_interval(self) -> IntervalEnergy:
        """Energy since the previous call (or since open)."""

    def close(self) -> IntervalEnergy:
        """Energy since the last read (the tail), then release resources."""
