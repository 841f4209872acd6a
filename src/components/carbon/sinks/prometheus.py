"""Prometheus exposition, rendered at most once per interval (on the first scrape) and served from a cache.

Values come from the same record and totals that were written to NDJSON, so
/metrics and the JSON files agree exactly for the same interval.

The page has a hard bound on its samples, whatever the host's units do
(docs/fleet.md section 4): per-unit series exist only for at most ``2 x top_n``
units (those the current record names, then those named recently, within a grace
period), plus ``other`` and ``unattributed``. See :class:`UnitSeries`.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from src.components.carbon.attribution import DEFAULT_TOP_N, RESERVED
from src.components.carbon.health import HealthSnapshot
from src.components.carbon.record import ACCOUNTED, COMPONENTS, DeviceInfo, EmissionsRecord, Totals, format_methods

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# TTAConfig's defaults: metrics_unit_grace 120 s at measurement_interval 15 s.
DEFAULT_UNIT_GRACE_S = 120.0
DEFAULT_INTERVAL_S = 15.0
# Departed units whose totals are remembered, so that one coming back continues its
# counter instead of resetting it (memory only: they are not on the page).
REMEMBERED_UNITS = 1000


def grace_in_records(grace_s: float, interval_s: float) -> int:
    """``metrics_unit_grace`` as records a unit may be missing from before its series leaves the page."""
    return max(0, math.ceil(grace_s / interval_s)) if interval_s > 0 else 0


DEFAULT_GRACE_RECORDS = grace_in_records(DEFAULT_UNIT_GRACE_S, DEFAULT_INTERVAL_S)  # 8


class UnitSeries:
    """Per-unit counters (joules, grams) for /metrics, with a hard bound on how many are shown.

    * ``other`` and ``unattributed`` are always shown once seen.
    * A unit named in the current record is always shown (at most ``top_n`` are).
    * A unit missing from the last records stays shown, value unchanged, until it has
      been missing from more than ``grace`` records, and only while there is room:
      named units never exceed ``2 x top_n``; the most recently named are kept first
      (then the larger total, then the name).
    * A unit leaving the page keeps its totals in memory (the last ``remembered``
      to leave); coming back, it continues from them, so the series ``{unit="x"}``
      never decreases. A unit forgotten meanwhile starts again from 0 (a counter reset).
    """

    def __init__(self, top_n: int = DEFAULT_TOP_N, grace: int = DEFAULT_GRACE_RECORDS,
                 remembered: int = REMEMBERED_UNITS) -> None:
        self.top_n = max(0, top_n)
        self.grace = max(0, grace)
        self.remembered = max(0, remembered)
        self.records = 0
        self.shown: dict[str, list[float]] = {}  # unit -> [joules, grams, index of the last record naming it]
        self._departed: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def add(self, units: Mapping[str, Mapping[str, float]]) -> None:
        """One record's ``units``."""
        if not units:
            return
        self.records += 1
        n = self.records
        for unit, share in units.items():
            acc = self.shown.get(unit)
            if acc is None:
                joules, grams = self._departed.pop(unit, (0.0, 0.0))
                acc = self.shown[unit] = [joules, grams, n]
            acc[0] += share["energy_j"]
            acc[1] += share["emissions_g"]
            acc[2] = n
        current = sum(1 for u in units if u not in RESERVED)
        held = [u for u, acc in self.shown.items() if acc[2] != n and u not in RESERVED]
        held.sort(key=lambda u: (-self.shown[u][2], -self.shown[u][0], u))
        room = max(0, 2 * self.top_n - current)
        for i, unit in enumerate(held):
            if i >= room or n - self.shown[unit][2] > self.grace:
                self._depart(unit)

    def _depart(self, unit: str) -> None:
        joules, grams, _ = self.shown.pop(unit)
        if self.remembered:
            self._departed[unit] = (joules, grams)
            self._departed.move_to_end(unit)
            while len(self._departed) > self.remembered:
                self._departed.popitem(last=False)

    def items(self) -> list[tuple[str, float, float]]:
        return [(u, acc[0], acc[1]) for u, acc in sorted(self.shown.items())]


class _SnapshotCollector(Collector):
    def __init__(self, units: UnitSeries) -> None:
        self.health: HealthSnapshot | None = None
        self.totals = Totals()
        self.power_w: dict[str, float] = dict.fromkeys(COMPONENTS, 0.0)
        # Per-unit totals since this process started, bounded (docs/attribution.md).
        self.units = units
        # Per GPU (NVML index as a string): product name, last interval's watts, joules since start.
        self.gpu_keys: dict[str, str] = {}  # device key (record's devices_j) -> GPU index label
        self.gpu_names: dict[str, str] = {}
        self.gpu_power_w: dict[str, float] = {}
        self.gpu_energy_j: dict[str, float] = {}
        self.platform_power_w: float | None = None  # the last interval's platform watts; None: not measured
        self.embodied = False  # the last record carried embodied carbon (it is configured)

    def collect(self) -> Iterator[Metric]:
        h = self.health
        if h is None:
            return
        energy = CounterMetricFamily(
            "tta_carbon_energy_joules", "Energy used since the ledger began, by component.", labels=["component"]
        )
        emissions = CounterMetricFamily(
            "tta_carbon_emissions_grams", "CO2-equivalent emitted since the ledger began, by component.",
            labels=["component"],
        )
        power = GaugeMetricFamily(
            "tta_carbon_power_watts", "Average power over the last interval, by component.", labels=["component"]
        )
        # The remainder (platform meter minus components) only on hosts with a platform meter.
        metered = bool(h.platform_meter) or self.totals.platform_j > 0
        for c in ACCOUNTED if metered else COMPONENTS:
            energy.add_metric([c], self.totals.energy_j.get(c, 0.0))
            emissions.add_metric([c], self.totals.emissions_g.get(c, 0.0))
            power.add_metric([c], self.power_w.get(c, 0.0))
        yield energy
        yield emissions
        yield power
        if metered:
            yield from self._platform(h)
        if self.embodied or self.totals.embodied_g > 0:
            yield CounterMetricFamily(
                "tta_carbon_embodied_grams",
                "Embodied (manufacturing) CO2-equivalent amortised over the records' time since the ledger "
                "began; not part of tta_carbon_emissions_grams_total (docs/embodied.md).",
                value=self.totals.embodied_g,
            )
        if self.units.shown:
            unit_energy = CounterMetricFamily(
                "tta_carbon_unit_energy_joules",
                "Energy attributed to each systemd unit since the daemon started (plus other, unattributed).",
                labels=["unit"],
            )
            unit_emissions = CounterMetricFamily(
                "tta_carbon_unit_emissions_grams",
                "CO2-equivalent attributed to each systemd unit since the daemon started (plus other, unattributed).",
                labels=["unit"],
            )
            for unit, joules, grams in self.units.items():
                unit_energy.add_metric([unit], joules)
                unit_emissions.add_metric([unit], grams)
            yield unit_energy
            yield unit_emissions
        if self.gpu_names or self.gpu_energy_j:
            gpus = sorted(set(self.gpu_names) | set(self.gpu_energy_j), key=int)
            gpu_power = GaugeMetricFamily(
                "tta_carbon_gpu_power_watts", "Average power over the last interval, per GPU (NVML index).",
                labels=["gpu", "name"],
            )
            gpu_energy = CounterMetricFamily(
                "tta_carbon_gpu_energy_joules", "GPU energy since the daemon started, per GPU (NVML index).",
                labels=["gpu"],
            )
            for g in gpus:
                gpu_power.add_metric([g, self.gpu_names.get(g, "")], self.gpu_power_w.get(g, 0.0))
                gpu_energy.add_metric([g], self.gpu_energy_j.get(g, 0.0))
            yield gpu_power
            yield gpu_energy
        intensity = GaugeMetricFamily(
            "tta_carbon_intensity_grams_per_kwh", "Carbon intensity used for the last interval.", labels=["source"]
        )
        intensity.add_metric([h.intensity_source or "none"], h.intensity_g_per_kwh)
        yield intensity
        yield GaugeMetricFamily(
            "tta_carbon_last_measurement_timestamp_seconds",
            "Unix time of the last successful measurement (0 = none yet).",
            value=h.last_success_at,
        )
        yield GaugeMetricFamily(
            "tta_carbon_last_record_sequence",
            "Sequence number of the last record (matches the NDJSON field seq).", value=self.totals.seq,
        )
        yield GaugeMetricFamily(
            "tta_carbon_measurement_interval_seconds", "Configured measurement interval.", value=h.interval_s
        )
        yield CounterMetricFamily(
            "tta_carbon_unmeasured_seconds",
            "Seconds no record covers, between a run's last record and the next run's first interval, "
            "since the ledger began.",
            value=self.totals.unmeasured_s,
        )
        yield CounterMetricFamily(
            "tta_carbon_measured_seconds",
            "Seconds the records cover (the sum of their duration_s), since the ledger began.",
            value=self.totals.measured_s,
        )
        yield CounterMetricFamily("tta_carbon_measurements", "Successful measurements.", value=h.measurements)
        yield CounterMetricFamily(
            "tta_carbon_measurement_errors", "Intervals that could not be measured.", value=h.measurement_errors
        )
        yield CounterMetricFamily(
            "tta_carbon_records_written", "Records appended to NDJSON files.", value=h.records_written
        )
        yield CounterMetricFamily(
            "tta_carbon_write_errors", "Failed attempts to append to NDJSON files.", value=h.write_errors
        )
        yield CounterMetricFamily(
            "tta_carbon_records_dropped", "Records dropped because the write buffer was full.",
            value=h.records_dropped,
        )
        yield GaugeMetricFamily(
            "tta_carbon_records_pending", "Records buffered in memory, waiting for the disk.", value=h.records_pending
        )
        yield GaugeMetricFamily(
            "tta_carbon_tracker_available", "1 when the energy source is working.", value=int(h.tracker_available)
        )
        yield GaugeMetricFamily(
            "tta_carbon_energy_estimated", "1 when any component's energy is estimated, not measured.",
            value=int(h.estimated),
        )
        yield GaugeMetricFamily(
            "tta_carbon_output_bytes", "Bytes of NDJSON files in the output directory.", value=h.output_bytes
        )
        yield GaugeMetricFamily(
            "tta_carbon_log_file_bytes", "Bytes of the daemon's own log file.", value=h.log_file_bytes
        )
        yield GaugeMetricFamily(
            "tta_carbon_up_since_timestamp_seconds", "Unix time the daemon started.", value=h.started_at
        )
        method = format_methods(h.energy_method)
        info = GaugeMetricFamily(
            "tta_carbon_build_info", "Version and how figures are obtained; value is always 1.",
            labels=["version", "energy_source", "energy_method", "intensity_source", "project", "env", "host",
                    "degraded"],
        )
        info.add_metric([h.version, h.energy_source or "none", method, h.intensity_source or "none", h.project, h.env,
                         h.host, "true" if h.energy_source_degraded else "false"], 1)
        yield info


    def _platform(self, h: HealthSnapshot) -> Iterator[Metric]:
        """The platform meter's series (docs/platform-power.md#metrics)."""
        meter = h.platform_meter or "none"
        energy = CounterMetricFamily(
            "tta_carbon_platform_energy_joules",
            "Whole-machine energy the platform meter measured since the ledger began (its part beyond the "
            "components is component=\"remainder\" of tta_carbon_energy_joules_total).", labels=["meter"])
        energy.add_metric([meter], self.totals.platform_j)
        yield energy
        power = GaugeMetricFamily("tta_carbon_platform_power_watts",
                                  "Whole-machine power over the last interval, from the platform meter.",
                                  labels=["meter"])
        if self.platform_power_w is not None:
            power.add_metric([meter], self.platform_power_w)
        yield power
        up = GaugeMetricFamily("tta_carbon_platform_meter_up",
                               "1 while the platform meter's readings succeed.", labels=["meter"])
        up.add_metric([meter], 0 if h.platform_meter_error or not h.platform_meter else 1)
        yield up
        failures = CounterMetricFamily("tta_carbon_platform_meter_failures",
                                       "Platform meter readings that failed or were refused, since the daemon "
                                       "started.", labels=["meter"])
        failures.add_metric([meter], h.platform_meter_failures)
        yield failures
        fit = h.platform_fit
        if fit:
            for name, key, text in (
                ("slope", "slope", "Platform watts per RAPL watt, least squares over this run."),
                ("offset_watts", "offset_w", "Platform watts at zero RAPL power, least squares over this run."),
                ("residual_watts", "residual_w", "RMS misfit of the platform-vs-RAPL line over this run."),
                ("points", "points", "Intervals in the platform-vs-RAPL fit."),
            ):
                yield GaugeMetricFamily(f"tta_carbon_platform_fit_{name}", text, value=fit[key])


class PrometheusSink:
    """Holds the latest snapshot and renders its exposition bytes once, when first asked for.

    The interval loop only swaps state in (``update``); a scrape renders the page if the state
    changed since the last render and otherwise copies the cached bytes out. With no scraper
    (or one scraping less often than the interval) no page is built that nobody reads: the
    render is ~0.4 ms of CPU, about a sixth of an interval's own work.
    """

    def __init__(self, top_n: int = DEFAULT_TOP_N, grace_records: int = DEFAULT_GRACE_RECORDS,
                 remembered: int = REMEMBERED_UNITS) -> None:
        """``top_n``: the records' ``attribution_top_n``; ``grace_records``: records a unit may
        be missing from before its series leaves the page (see :func:`grace_in_records`)."""
        self._collector = _SnapshotCollector(UnitSeries(top_n, grace_records, remembered))
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(self._collector)
        self._lock = threading.Lock()
        self._page: bytes | None = None  # None: the state changed since the last render

    def update(self, health: HealthSnapshot, record: EmissionsRecord | None) -> None:
        with self._lock:
            self._collector.health = health
            if record is not None:
                self._collector.totals = record.totals
                self._collector.power_w = dict(record.power_w)
                self._collector.embodied = record.embodied_g is not None
                self._collector.platform_power_w = (record.platform_j / record.duration_s
                                                    if record.platform_j is not None and record.duration_s > 0
                                                    else None)
                self._collector.units.add(record.units)
                self._note_gpus(record)
            self._page = None

    @property
    def top_n(self) -> int:
        return self._collector.units.top_n

    @property
    def unit_grace_records(self) -> int:
        return self._collector.units.grace

    def set_devices(self, devices: Iterable[DeviceInfo]) -> None:
        """The source's devices: GPUs get their own power and energy series, labelled by index and name."""
        gpus = [d for d in devices if d.kind == "gpu"]
        with self._lock:
            self._collector.gpu_keys = {d.key: str(d.index) for d in gpus}
            self._collector.gpu_names = {str(d.index): d.name for d in gpus}
            self._page = None

    def _note_gpus(self, record: EmissionsRecord) -> None:
        c = self._collector
        c.gpu_power_w = {}
        for key, joules in record.devices_j.items():
            g = c.gpu_keys.get(key)
            if g is not None:
                c.gpu_energy_j[g] = c.gpu_energy_j.get(g, 0.0) + joules
                c.gpu_power_w[g] = joules / record.duration_s if record.duration_s > 0 else 0.0

    def restore(self, totals: Totals) -> None:
        with self._lock:
            self._collector.totals = totals.copy()
            self._page = None

    def page(self) -> bytes:
        """The exposition of the latest state (rendered now if it changed since the last call)."""
        page = self._page
        if page is not None:
            return page
        with self._lock:  # one render per change, however many scrapes arrive at once
            if self._page is None:
                self._page = generate_latest(self._registry)
            return self._page
