"""One health snapshot, shared by /metrics, /healthz, STATUS=, `tta-carbon check` and the guide's script.

The snapshot is computed (:func:`build_health`) from what the daemon knows — its
identity, the source's state, the measurement stats, the totals, the sinks' stats —
and the policy (:func:`is_healthy`, :func:`stale_after_s`) lives here too, once.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from src.components.carbon.calibration import Fit
from src.components.carbon.outcome import MeasurementStats, SinkStats
from src.components.carbon.record import Intensity, MeterStatus, Totals, format_methods

# A measurement older than this many intervals is stale: /healthz, the health check and
# the CarbonMeasurementsStale alert (deploy/prometheus/rules) all use 3.
STALE_AFTER_INTERVALS = 3


def stale_after_s(interval_s: float) -> float:
    return STALE_AFTER_INTERVALS * interval_s


@dataclass(frozen=True, slots=True)
class DaemonInfo:
    version: str
    project: str
    env: str
    interval_s: float
    started_at: float  # wall clock, epoch seconds
    host: str = ""  # the records' host; "" when record_hostname is false


@dataclass(frozen=True, slots=True)
class SourceStatus:
    name: str = ""
    available: bool = False
    error: str = ""  # why it is unavailable
    degraded: str = ""  # what it fell back to and why (codecarbon missing or failed); "" when as intended


# HealthSnapshot's free-text fields; public_dict() withholds them.
DETAIL_FIELDS = ("tracker_error", "energy_source_degraded", "intensity_error", "last_measurement_error",
                 "last_write_error", "platform_meter_error")
WITHHELD = "withheld: send the /metrics credentials to see it"


@dataclass(frozen=True, slots=True)
class HealthSnapshot:
    version: str
    project: str
    env: str
    interval_s: float
    started_at: float  # wall clock, epoch seconds
    host: str = ""  # the records' host; "" when record_hostname is false
    tracker_available: bool = False
    tracker_error: str = ""
    energy_source: str = ""
    energy_source_degraded: str = ""  # e.g. "codecarbon unavailable (...); using cpu_load_tdp"
    energy_method: dict[str, str] = field(default_factory=dict)
    estimated: bool = True
    intensity_g_per_kwh: float = 0.0
    intensity_source: str = ""
    intensity_error: str = ""  # the online provider's last failure while it is failing; "" when fine or offline
    last_success_at: float = 0.0  # wall clock of the last good measurement; 0 = never
    measurements: int = 0
    measurement_errors: int = 0
    last_measurement_error: str = ""
    records_written: int = 0
    write_errors: int = 0
    records_dropped: int = 0
    records_pending: int = 0
    last_write_error: str = ""
    output_bytes: int = 0
    log_file_bytes: int = 0
    last_power_w: float = 0.0
    total_emissions_g: float = 0.0
    total_energy_j: float = 0.0
    seq: int = 0
    unmeasured_s: float = 0.0  # Totals.unmeasured_s: seconds between runs no record covers
    measured_s: float = 0.0  # Totals.measured_s: seconds the records cover
    # The platform meter (docs/platform-power.md); platform_meter "" when the source reads none.
    platform_meter: str = ""
    platform_meter_device: str = ""
    platform_meter_error: str = ""  # the current failure; "" while readings succeed
    platform_meter_failures: int = 0
    platform_power_w: float | None = None  # the meter's last good reading
    platform_energy_j: float = 0.0  # Totals.platform_j
    # The running fit of platform power against RAPL power: points, slope, offset_w, residual_w; {} until fitted.
    platform_fit: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def public_dict(self) -> dict[str, Any]:
        """:meth:`as_dict` with the free-text error fields withheld (non-empty ones say so).

        What /healthz answers a request without credentials when basic auth is on: the verdict,
        counters and ages stay open for runbooks and load balancers; error texts come from
        upstream APIs, files and libraries, and are not for anyone who can reach the port.
        """
        values = asdict(self)
        for name in DETAIL_FIELDS:
            if values[name]:
                values[name] = WITHHELD
        return values

    def status_line(self) -> str:
        """The one-line systemd STATUS= summary."""
        return (
            f"power {self.last_power_w:.1f} W, total {self.total_emissions_g:.3f} gCO2eq "
            f"({self.seq} records), method {format_methods(self.energy_method)}, "
            f"errors: {self.measurement_errors} measure / {self.write_errors} write"
        )


def build_health(
    info: DaemonInfo,
    source: SourceStatus,
    stats: MeasurementStats,
    totals: Totals,
    sinks: SinkStats,
    intensity: Intensity,
    intensity_error: str = "",
    output_bytes: int = 0,
    log_file_bytes: int = 0,
    meter: MeterStatus | None = None,
    fit: Fit | None = None,
) -> HealthSnapshot:
    last = stats.last_record
    return HealthSnapshot(
        version=info.version, project=info.project, env=info.env, interval_s=info.interval_s,
        started_at=info.started_at,
        tracker_available=source.available, tracker_error=source.error, energy_source=source.name,
        energy_source_degraded=source.degraded,
        energy_method=dict(last.energy_method) if last else {},
        estimated=last.estimated if last else True,
        intensity_g_per_kwh=intensity.grams_per_kwh, intensity_source=intensity.source,
        intensity_error=intensity_error,
        last_success_at=stats.last_success_at, measurements=stats.measurements,
        measurement_errors=stats.errors, last_measurement_error=stats.last_error,
        records_written=sinks.written, write_errors=sinks.write_errors, records_dropped=sinks.dropped,
        records_pending=sinks.pending, last_write_error=sinks.last_error,
        output_bytes=output_bytes, log_file_bytes=log_file_bytes,
        last_power_w=sum(last.power_w.values()) if last else 0.0,
        total_emissions_g=sum(totals.emissions_g.values()), total_energy_j=sum(totals.energy_j.values()),
        seq=totals.seq, unmeasured_s=totals.unmeasured_s, measured_s=totals.measured_s, host=info.host,
        platform_meter=meter.method if meter else "", platform_meter_device=meter.device if meter else "",
        platform_meter_error=meter.error if meter else "", platform_meter_failures=meter.failures if meter else 0,
        platform_power_w=meter.last_watts if meter else None, platform_energy_j=totals.platform_j,
        platform_fit=({"points": fit.points, "slope": fit.slope, "offset_w": fit.offset_w,
                       "residual_w": fit.residual_w} if fit else {}),
    )


def is_healthy(h: HealthSnapshot, now: float) -> bool:
    """Healthy: the source works, nothing waits for the disk, and a measurement is fresh (or none is due yet).

    A write that failed earlier but has since been retried successfully does not count
    (``write_errors`` keeps it as a counter, for the record).
    """
    fresh = h.last_success_at > 0 and now - h.last_success_at < stale_after_s(h.interval_s)
    return (h.tracker_available and not h.last_write_error and h.records_pending == 0
            and (fresh or h.measurements == 0))


class HealthBodies:
    """One health snapshot and its two /healthz bodies, each JSON-encoded the first time it is asked for.

    Built every interval, read when someone calls /healthz (rarely): encoding both bodies up front
    was ~0.1 ms of each interval's CPU for pages nobody fetched. Encoding is pure, so two threads
    racing on the first request at worst encode the same bytes twice.
    """

    __slots__ = ("health", "_full", "_public")

    def __init__(self, health: HealthSnapshot) -> None:
        self.health = health
        self._full: bytes | None = None
        self._public: bytes | None = None

    def body(self, authenticated: bool) -> bytes:
        """The full snapshot for a client with credentials, else the public subset (no error texts)."""
        if authenticated:
            if self._full is None:
                self._full = json.dumps(self.health.as_dict()).encode() + b"\n"
            return self._full
        if self._public is None:
            self._public = json.dumps(self.health.public_dict()).encode() + b"\n"
        return self._public
