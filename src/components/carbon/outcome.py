"""What one interval produced, and the running account of all of them.

``CarbonComponent.measure_once`` returns an :class:`IntervalOutcome`: the record or
the reason there is none, plus what the sinks have done. :class:`MeasurementStats`
is a fold over outcomes; health is computed from it, never written field by field.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from src.components.carbon.record import EmissionsRecord


@dataclass(frozen=True, slots=True)
class SinkStats:
    """What the NDJSON file and the state file have done so far."""

    written: int = 0  # records appended
    pending: int = 0  # records waiting in memory for the disk
    dropped: int = 0  # records dropped because the wait queue was full
    write_errors: int = 0  # failed appends + failed state saves
    last_error: str = ""  # while a write is failing; "" once the disk takes everything again


@dataclass(frozen=True, slots=True)
class IntervalOutcome:
    at: float  # wall clock when the interval was accounted
    record: EmissionsRecord | None = None
    error: str = ""  # why the interval was not measured (its energy stays pending in the source)
    warning: str = ""  # measured, but the per-unit split is missing this interval
    sinks: SinkStats = SinkStats()
    write_failed: bool = False  # a write failed during this interval (sinks.last_error says why)


@dataclass(frozen=True, slots=True)
class MeasurementStats:
    measurements: int = 0
    errors: int = 0
    last_error: str = ""  # the last failure or warning; cleared by a clean measurement
    last_success_at: float = 0.0  # wall clock; 0 = never
    last_record: EmissionsRecord | None = None

    def after(self, outcome: IntervalOutcome) -> MeasurementStats:
        if outcome.record is not None:
            return MeasurementStats(self.measurements + 1, self.errors, outcome.warning, outcome.at, outcome.record)
        if outcome.error:
            return replace(self, errors=self.errors + 1, last_error=outcome.error)
        return self  # no source to read: nothing measured, nothing failed

    def after_sample_error(self, error: str) -> MeasurementStats:
        """A between-intervals sample failed: shown until the next measurement, not counted."""
        return replace(self, last_error=error)
