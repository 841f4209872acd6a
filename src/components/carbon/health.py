"""One health snapshot, shared by /metrics, /healthz, `tta-carbon check` and the guide's script."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(slots=True)
class HealthSnapshot:
    version: str
    project: str
    env: str
    interval_s: float
    started_at: float  # wall clock, epoch seconds
    tracker_available: bool = False
    tracker_error: str = ""
    energy_source: str = ""
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

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def status_line(self) -> str:
        """The one-line systemd STATUS= summary."""
        method = ",".join(f"{k}={v}" for k, v in sorted(self.energy_method.items())) or "none"
        return (
            f"power {self.last_power_w:.1f} W, total {self.total_emissions_g:.3f} gCO2eq "
            f"({self.seq} records), method {method}, "
            f"errors: {self.measurement_errors} measure / {self.write_errors} write"
        )
