"""codecarbon's EmissionsTracker as an energy source, through its public API only.

We drive it: every interval we call ``flush()``, which measures since the last
measurement and hands ``(total, delta)`` to our output handler's ``out()``. Its
own periodic scheduler is parked (a measure period longer than any run), so
measurements happen on our monotonic schedule, not on its timer.

codecarbon appends a sample per second to utilisation-history lists that only
``start()`` clears; a tracker running for months grows without bound. We bound
it by replacing the tracker every ``recycle_after_s``: ``stop()`` hands us the
tail, and a fresh tracker starts from there, so no energy falls in the gap.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from src.components.carbon.memory import release_free_memory
from src.components.carbon.record import JOULES_PER_KWH, ComponentEnergy, IntervalEnergy, SourceUnavailable
from src.components.carbon.sources import SourceDefaults

# Long enough that codecarbon's own scheduler never fires, short enough for threading.Timer.
_PARKED_MEASURE_SECS = 10**8
DEFAULT_RECYCLE_S = 3600.0


class MeasurementFailed(Exception):
    """One interval could not be measured; the next one may succeed."""


class _DeltaCollector:
    """Our codecarbon output handler: it only remembers the deltas it is given."""

    def __init__(self) -> None:
        self.cpu_kwh = 0.0
        self.ram_kwh = 0.0
        self.gpu_kwh = 0.0
        self.calls = 0

    def out(self, total: Any, delta: Any) -> None:
        self.cpu_kwh += float(delta.cpu_energy)
        self.ram_kwh += float(delta.ram_energy)
        self.gpu_kwh += float(delta.gpu_energy)
        self.calls += 1

    def live_out(self, total: Any, delta: Any) -> None:
        # Only flush()/stop() report to us (api_call_interval=-1), so nothing arrives here.
        pass

    def task_out(self, data: Any, experiment_name: str) -> None:
        pass

    def exit(self) -> None:
        pass

    def take(self) -> tuple[float, float, float, int]:
        taken = (self.cpu_kwh, self.ram_kwh, self.gpu_kwh, self.calls)
        self.cpu_kwh = self.ram_kwh = self.gpu_kwh = 0.0
        self.calls = 0
        return taken


class CodecarbonSource(SourceDefaults):
    name = "codecarbon"

    def __init__(
        self,
        country_iso_code: str,
        project_name: str,
        output_dir: str,
        cpu_method: str = "codecarbon_cpu_load",
        recycle_after_s: float = DEFAULT_RECYCLE_S,
        components: tuple[str, ...] = ("cpu", "ram", "gpu"),
        cpu_tdp_watts: float | None = None,
        ram_watts: float | None = None,
    ) -> None:
        self._country = country_iso_code
        self._project = project_name
        self._output_dir = output_dir
        self._recycle_after_s = recycle_after_s
        self._collector = _DeltaCollector()
        self._tracker: Any = None
        self._started_at = 0.0
        self._gpu_count = 0
        self.cpu_method = cpu_method
        self.components = components  # what codecarbon reports here; the rest comes from our readers
        # Our cpu_tdp_watts / ram_watts settings, as codecarbon's own overrides (its force_* arguments).
        self._forced = {k: v for k, v in (("force_cpu_power", cpu_tdp_watts), ("force_ram_power", ram_watts))
                        if v is not None}
        self.hardware: dict[str, Any] = {}

    def open(self) -> None:
        try:
            from codecarbon import OfflineEmissionsTracker  # noqa: F401  (import cost paid once, here)
        except Exception as exc:  # ImportError, or a broken install raising anything
            raise SourceUnavailable(f"codecarbon cannot be imported: {type(exc).__name__}: {exc}") from None
        self._start_tracker()

    def _start_tracker(self) -> None:
        from codecarbon import OfflineEmissionsTracker
        # The first flush() would import this (and requests) lazily: ~0.2 s inside the
        # measurement loop. Import it here instead, where start-up cost already is.
        import codecarbon.external.geography  # noqa: F401

        _quiet_codecarbon_logger()
        try:
            tracker = OfflineEmissionsTracker(
                country_iso_code=self._country,
                project_name=self._project,
                output_dir=self._output_dir,
                output_handlers=[self._collector],
                output_methods=[],  # none of codecarbon's own outputs: records are ours
                measure_power_secs=_PARKED_MEASURE_SECS,
                api_call_interval=-1,
                allow_multiple_runs=True,  # False would install its own SIGTERM handler
                tracking_mode="machine",
                log_level="error",
                **self._forced,
            )
            _quiet_codecarbon_logger()
            tracker.start()
            self.hardware = dict(tracker.get_detected_hardware())
            # codecarbon's first measurement imports what it measures with (pandas, numpy,
            # requests: 1.6-9 s seen here). Take it now, where start-up cost already is, not
            # inside the measurement loop: the delta goes to our collector and is returned
            # with the next interval, so nothing is lost or counted twice.
            tracker.flush()
        except Exception as exc:
            raise SourceUnavailable(f"codecarbon tracker failed to start: {type(exc).__name__}: {exc}") from None
        self._gpu_count = int(self.hardware.get("gpu_count") or 0)
        self._tracker = tracker
        self._started_at = time.monotonic()

    @property
    def methods(self) -> dict[str, str]:
        """The energy_method label of each component codecarbon reports here."""
        # codecarbon models RAM as watts per DIMM slot: an estimate, whatever the CPU method.
        labels = {"cpu": self.cpu_method, "ram": "codecarbon_ram_model"}
        if self._gpu_count:
            labels["gpu"] = "codecarbon_nvml"
        return {c: m for c, m in labels.items() if c in self.components}

    def _energy(self, cpu_kwh: float, ram_kwh: float, gpu_kwh: float) -> IntervalEnergy:
        kwh = {"cpu": cpu_kwh, "ram": ram_kwh, "gpu": gpu_kwh}
        return IntervalEnergy({c: ComponentEnergy(kwh[c] * JOULES_PER_KWH, m) for c, m in self.methods.items()})

    def read_interval(self) -> IntervalEnergy:
        if self._tracker is None:
            raise MeasurementFailed("codecarbon tracker is not running")
        self._tracker.flush()  # codecarbon swallows its own exceptions here...
        cpu, ram, gpu, calls = self._collector.take()
        if calls == 0:  # ...so "no delta delivered" is how a failure shows.
            raise MeasurementFailed("codecarbon flush() delivered no measurement (see codecarbon log)")
        if time.monotonic() - self._started_at >= self._recycle_after_s:
            self._tracker.stop()
            c2, r2, g2, _ = self._collector.take()
            cpu, ram, gpu = cpu + c2, ram + r2, gpu + g2
            self._tracker = None
            self._start_tracker()
            release_free_memory()  # the old tracker's history and the new one's probing
        return self._energy(cpu, ram, gpu)

    def close(self) -> IntervalEnergy:
        if self._tracker is None:
            return IntervalEnergy({})
        self._tracker.stop()
        self._tracker = None
        cpu, ram, gpu, _ = self._collector.take()
        return self._energy(cpu, ram, gpu)


def _quiet_codecarbon_logger() -> None:
    """codecarbon adds a stream handler on every tracker init; keep exactly none, log through ours."""
    logger = logging.getLogger("codecarbon")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    logger.setLevel(logging.WARNING)
    logger.propagate = True
