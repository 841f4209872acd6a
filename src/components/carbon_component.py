"""CarbonComponent: energy source -> accountant -> sinks, wired from TTAConfig.

The whole flow in one place. ``start()`` opens everything; ``measure_once()`` reads
the source and the per-unit CPU time, has the accountant build the interval's one
complete record, hands it to the NDJSON file, the ledger and /metrics, and returns
an immutable :class:`IntervalOutcome`; ``stop()`` accounts for the tail so no energy
is lost. Health is recomputed from the outcome, never patched field by field.
Scheduling, signals and systemd live in ``src.service``; this class knows nothing
about them. The library parts know nothing about TTAConfig: ``component_settings``
turns it into the small settings each part takes.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, replace
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from src.components.carbon import directories, ndjson_files
from src.components.carbon.accounting import Accountant, Identity
from src.components.carbon.directories import DirectoryInUse, OutputDirUnwritable, probe_writable
from src.components.carbon.health import (
    DaemonInfo,
    HealthBodies,
    HealthSnapshot,
    SourceStatus,
    build_health,
    is_healthy,
)
from src.components.carbon.intensity import IntensityChain, build_chain
from src.components.carbon.ledger import Ledger, LedgerLoad
from src.components.carbon.memory import release_free_memory
from src.components.carbon.outcome import IntervalOutcome, MeasurementStats, SinkStats
from src.components.carbon.record import (
    CpuTimeDelta,
    EmissionsRecord,
    Intensity,
    IntervalEnergy,
    SourceUnavailable,
    Totals,
)
from src.components.carbon.sinks.http_server import MetricsServer, Routes
from src.components.carbon.sinks.ndjson import NdjsonSink
from src.components.carbon.sinks.prometheus import CONTENT_TYPE, PrometheusSink, grace_in_records
from src.components.carbon.sinks.web_config import BasicAuth
from src.components.carbon.sources import EnergySource
from src.components.carbon.sources.cgroups import CpuTimeSampler
from src.components.carbon.sources.select import select_source
from src.orchestration.settings import apply_live, component_settings, record_settings
from src.orchestration.values import ConfigValues

if TYPE_CHECKING:
    from src.orchestration import TTAConfig

__all__ = ["CarbonComponent", "DirectoryInUse", "IntervalOutcome", "OutputDirUnwritable", "StartReport",
           "probe_writable"]

try:
    VERSION = version("tta-staging-carbon")
except PackageNotFoundError:  # running from a plain checkout
    VERSION = "0.0.0+checkout"


@dataclass(frozen=True, slots=True)
class StartReport:
    """What ``start()`` found, for the start-up log."""

    source: str  # which source and why
    source_error: str  # "" when the source opened
    ledger: LedgerLoad  # its note names a long gap since the last record, or a killed previous run
    attribution: str  # "off", "cgroup v2 at ...", or "unavailable: why"


class CarbonComponent:
    def __init__(self, config: TTAConfig | ConfigValues) -> None:
        self.config = config
        self.settings = component_settings(config)
        s = self.settings
        self.output_dir = s.output_dir
        self.run_id = str(uuid.uuid4())
        self._info = DaemonInfo(VERSION, config.project_name, config.env, s.interval_s, time.time(),
                                host=s.records.host or "")
        self._identity = self._make_identity()
        self._ledger = Ledger(s.state_dir, s.output_dir)
        self._ndjson = NdjsonSink(s.output_dir)
        self._locks: list[directories.DirectoryLock] = []
        self._prometheus = PrometheusSink(
            s.attribution.top_n, grace_in_records(s.attribution.metrics_grace_s, s.interval_s))
        self._chain: IntensityChain = build_chain(s.intensity)  # network-free until start()
        self._intensity: Intensity = self._chain.current(time.time())
        self._source: EnergySource | None = None
        self._source_status = SourceStatus()
        self._cpu_time: CpuTimeSampler | None = None
        self._accountant: Accountant | None = None
        self._server: MetricsServer | None = None
        self._stats = MeasurementStats()
        self._file_sizes = (0, 0)  # (NDJSON bytes, log file bytes), taken once per interval
        self._last_mono = 0.0
        self._publish(None)

    def _make_identity(self) -> Identity:
        r = self.settings.records
        return Identity(self.run_id, r.host, r.project, r.env)

    # -- lifecycle -------------------------------------------------------------------------

    def prepare_directories(self) -> None:
        """Create and verify the directories; raises OutputDirUnwritable or OSError."""
        directories.prepare([self.output_dir, self.settings.state_dir])

    def _lock_directories(self) -> None:
        """One daemon per state directory, the owner of the seq numbers and totals; raises
        DirectoryInUse naming the other one. (The lock file lives there, not among the records.)"""
        self._locks.append(directories.DirectoryLock(self.settings.state_dir.resolve()).acquire())

    def start(self, serve_metrics: bool = True) -> StartReport:
        """Open source, ledger and sinks. Raises on what an operator must fix (dirs, port)."""
        s = self.settings
        self.prepare_directories()
        self._lock_directories()
        loaded = self._ledger.load()
        self._accountant = Accountant(loaded.totals.copy(), s.attribution.top_n, s.embodied)
        self._prometheus.restore(loaded.totals)
        source, reason = select_source(s.sources)
        first_start_wall = time.time()
        try:
            source.open()
            # The first interval starts when the source took its baseline, not when start() ends.
            self._last_mono, first_start_wall = time.monotonic(), time.time()
            self._prometheus.set_devices(source.devices)
            self._source = source
            self._source_status = SourceStatus(source.name, True)
        except SourceUnavailable as exc:
            # Keep serving metrics and health: they are how the operator learns about this.
            self._source_status = SourceStatus(source.name, False, str(exc))
        except Exception as exc:  # a source bug must not take the exporter down either
            self._source_status = SourceStatus(
                source.name, False, f"{source.name} failed to open: {type(exc).__name__}: {exc}")
        attribution = self._open_attribution()
        self._intensity = self._chain.current(time.time())  # before the online provider's first fetch
        self._chain.start()  # the online provider's refresh thread, if any
        self._measure_file_sizes()
        self._publish(None)
        if serve_metrics:
            h = s.http
            self._server = MetricsServer(
                h.address, h.port, Routes(self._prometheus.page, CONTENT_TYPE, self._health_route),
                ssl_context=h.web.context, auth=BasicAuth(h.web.users) if h.web.users else None,
            )
            self._server.start()
        release_free_memory()  # config parsing, source probing: one-off allocations
        if self._source is None:
            self._last_mono, first_start_wall = time.monotonic(), time.time()
        # The first interval has started: the time since the last record is unmeasured. It joins the
        # totals in memory (/metrics, /healthz) and is saved with the first record, so a run killed
        # before its first record leaves the gap to be counted, whole, by the next start.
        loaded = loaded.with_gap(first_start_wall, s.interval_s)
        if loaded.gap_s:
            self._accountant.totals.unmeasured_s += loaded.gap_s
            self._prometheus.restore(self._accountant.totals)
            self._publish(None)
        return StartReport(reason, self._source_status.error, loaded, attribution)

    @property
    def sample_every_s(self) -> float | None:
        """How often the source must be read between intervals so counters cannot wrap twice unseen."""
        limit = self._source.max_sample_interval_s if self._source is not None else None
        return limit if limit is not None and limit < self.settings.interval_s else None

    def sample(self) -> None:
        """Fold counters into the current interval without ending it (long intervals on RAPL)."""
        if self._source is None:
            return
        try:
            self._source.sample()
        except Exception as exc:
            self._stats = self._stats.after_sample_error(f"{type(exc).__name__}: {exc}")
            self._publish(None)

    @property
    def metrics_port(self) -> int | None:
        return self._server.port if self._server else None

    @property
    def health(self) -> HealthSnapshot:
        """The snapshot as of the last interval (or start, or reload)."""
        return self._published.health

    def measure_once(self, *, final: bool = False) -> IntervalOutcome:
        """Account one interval (or, with ``final``, the tail) and hand its record to every sink."""
        accountant = self._accountant
        if accountant is None:
            raise RuntimeError("start() first")
        # The interval ends here, on both clocks: reading the source may take a while, and the
        # record's interval_end must be the same instant its duration is measured to.
        now_mono, now_wall = time.monotonic(), time.time()
        self._intensity = intensity = self._chain.current(now_wall)  # cheap: no I/O
        energy, error = self._read_source(final)
        record, warning, write_failed = None, "", False
        if energy is not None:
            cpu_time, warning = self._read_cpu_time()
            record = accountant.account(
                energy, end_wall=now_wall, elapsed_s=now_mono - self._last_mono, intensity=intensity,
                identity=self._identity, final=final, cpu_time=cpu_time,
            )
            self._last_mono = now_mono
            write_failed = not self._ndjson.write(record)
            write_failed = not self._ledger.save(accountant.totals, record) or write_failed
        elif self._ndjson.pending:
            write_failed = not self._ndjson.flush()  # retry what the disk refused earlier
        outcome = IntervalOutcome(time.time(), record, error, warning, self._sink_stats(), write_failed)
        self._stats = self._stats.after(outcome)
        self._measure_file_sizes()
        self._publish(record)
        return outcome

    def stop(self) -> IntervalOutcome | None:
        """Write the final record covering the tail since the last interval, then close."""
        outcome = self.measure_once(final=True) if self._accountant is not None else None
        if self._server is not None:
            self._server.stop()
            self._server = None
        self._chain.close()
        self._ndjson.close()
        for lock in self._locks:
            lock.release()
        self._locks.clear()
        return outcome

    def reconfigure(self, config: TTAConfig | ConfigValues) -> list[str]:
        """Apply what can change live; return the names of changed settings that need a restart."""
        self.config, needs_restart = apply_live(self.config, config)
        self.settings = component_settings(self.config)
        self._info = replace(self._info, project=self.config.project_name, host=self.settings.records.host or "")
        # Records take who they are about from the new file at once (env included, as before).
        r = record_settings(config)
        self._identity = Identity(self.run_id, r.host, r.project, r.env)
        old_chain, self._chain = self._chain, build_chain(self.settings.intensity, reuse=self._chain)
        if old_chain.online is not None and old_chain.online is not self._chain.online:
            old_chain.online.close()
        if self._accountant is not None:  # started: keep the (new) online provider refreshing
            self._chain.start()
            self._accountant.embodied = self.settings.embodied  # live: the next record uses it
        if self._source is not None:
            self._source.recover()  # e.g. try codecarbon again after a degradation
        self._intensity = self._chain.current(time.time())
        self._publish(None)
        return needs_restart

    # -- internals ---------------------------------------------------------------------------

    def _read_source(self, final: bool) -> tuple[IntervalEnergy | None, str]:
        if self._source is None:
            return None, ""
        try:
            return (self._source.close() if final else self._source.read_interval()), ""
        except Exception as exc:  # any source failure costs one interval, never the daemon
            return None, f"{type(exc).__name__}: {exc}"

    def _open_attribution(self) -> str:
        a = self.settings.attribution
        if not a.enabled:
            return "off"
        sampler = CpuTimeSampler(a.cgroup_root, a.proc_root, a.include, a.exclude)
        try:
            sampler.open()
        except Exception as exc:  # no cgroup accounting: records simply carry no per-unit split
            return f"unavailable: {exc}"
        self._cpu_time = sampler
        h = sampler.hierarchy
        return f"cgroup {h.version if h else '?'} at {h.path if h else '?'}"

    def _read_cpu_time(self) -> tuple[CpuTimeDelta | None, str]:
        if self._cpu_time is None:
            return None, ""
        try:
            return self._cpu_time.read(), ""
        except Exception as exc:  # one interval without a split, never a lost record
            return None, f"attribution: {type(exc).__name__}: {exc}"

    def _sink_stats(self) -> SinkStats:
        ndjson, state = self._ndjson.stats, self._ledger.stats
        return SinkStats(
            written=ndjson.written, pending=self._ndjson.pending, dropped=ndjson.dropped,
            write_errors=ndjson.write_errors + state.errors, last_error=ndjson.last_error or state.last_error,
        )

    def _measure_file_sizes(self) -> None:
        log_file = self.settings.log_file
        try:
            log_bytes = log_file.stat().st_size if log_file else 0
        except OSError:
            log_bytes = 0
        self._file_sizes = (ndjson_files.total_bytes(self.output_dir), log_bytes)

    def _publish(self, record: EmissionsRecord | None) -> None:
        """Recompute the health snapshot and the /metrics page (with ``record`` when there is one)."""
        online = self._chain.online
        totals = self._accountant.totals if self._accountant is not None else Totals()
        source = self._source
        if source is not None:  # name and degradation follow the source (codecarbon starting, failing)
            self._source_status = SourceStatus(source.name, True, "", source.degradation)
        health = build_health(
            self._info, self._source_status, self._stats, totals, self._sink_stats(), self._intensity,
            online.last_error if online is not None else "", *self._file_sizes,
            meter=source.platform_meter if source is not None else None,
            fit=self._accountant.fit.fit() if self._accountant is not None else None,
        )
        # One attribute, replaced whole: the HTTP thread never pairs one snapshot's verdict with another's body.
        self._published = HealthBodies(health)
        self._prometheus.update(health, record)

    def _health_route(self, authenticated: bool) -> tuple[bool, bytes]:
        published = self._published
        return is_healthy(published.health, time.time()), published.body(authenticated)
