"""CarbonComponent: energy source -> accountant -> sinks, with one shared health snapshot.

The whole flow in one place: ``start()`` opens everything, ``measure_once()``
turns one interval into one record and hands it to every sink, ``stop()``
accounts for the tail so no energy is lost. Scheduling, signals and systemd
live in ``src.service``; this class knows nothing about them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import time
import uuid
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from src.components.carbon import attribution
from src.components.carbon.accounting import Accountant, Identity
from src.components.carbon.health import HealthSnapshot
from src.components.carbon.intensity import IntensityChain, build_chain
from src.components.carbon.ledger import Ledger
from src.components.carbon.record import EmissionsRecord, Intensity, IntervalEnergy, SourceUnavailable
from src.components.carbon.sinks.http_server import MetricsServer, Routes
from src.components.carbon.sinks.ndjson import NdjsonSink
from src.components.carbon.sinks.prometheus import CONTENT_TYPE, PrometheusSink
from src.components.carbon.sinks.web_config import BasicAuth, WebConfig, load_web_config
from src.components.carbon.sources import EnergySource
from src.components.carbon.sources.cgroups import CpuTimeDelta, CpuTimeSampler
from src.orchestration import TTAConfig

try:
    VERSION = version("tta-staging-carbon")
except PackageNotFoundError:  # running from a plain checkout
    VERSION = "0.0.0+checkout"


class OutputDirUnwritable(Exception):
    """The output directory cannot take records; the message names it and why."""


def probe_writable(directory: Path) -> None:
    """Exclusive-create a uniquely named file: a planted symlink can never redirect the probe."""
    probe = directory / f".write-probe-{os.getpid()}-{uuid.uuid4().hex}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputDirUnwritable(f"cannot write to {directory}: {exc.strerror}") from None


class CarbonComponent:
    def __init__(self, config: TTAConfig) -> None:
        self.config = config
        self.output_dir = Path(config.output_dir)
        self.run_id = str(uuid.uuid4())
        self.health = HealthSnapshot(
            version=VERSION, project=config.project_name, env=config.env,
            interval_s=config.measurement_interval, started_at=time.time(),
        )
        self.source_reason = ""
        self.ledger_note = ""
        self.attribution_note = "off"
        self._cpu_time: CpuTimeSampler | None = None
        self._source: EnergySource | None = None
        self._accountant: Accountant | None = None
        self._ledger = Ledger(Path(config.state_dir), self.output_dir)
        self._ndjson = NdjsonSink(self.output_dir)
        self._prometheus = PrometheusSink()
        self._server: MetricsServer | None = None
        self._chain: IntensityChain = build_chain(config)  # network-free until start()
        self._intensity: Intensity = self._chain.current(time.time())
        self._identity = self._make_identity(config)
        self._last_mono = 0.0
        self._state_write_errors = 0
        self._state_write_error = ""

    def _make_identity(self, config: TTAConfig) -> Identity:
        host = socket.gethostname() if config.record_hostname else None
        return Identity(self.run_id, host, config.project_name, config.env)

    # -- lifecycle -------------------------------------------------------------------------

    def prepare_directories(self) -> None:
        """Create and verify the directories; raises OutputDirUnwritable or OSError."""
        for directory in (self.output_dir, Path(self.config.state_dir)):
            directory.mkdir(parents=True, exist_ok=True)
        probe_writable(self.output_dir)
        probe_writable(Path(self.config.state_dir))

    def start(self, serve_metrics: bool = True) -> None:
        """Open source, ledger and sinks. Raises on what an operator must fix (dirs, port)."""
        from src.components.carbon.sources.select import select_source

        self.prepare_directories()
        totals, self.ledger_note = self._ledger.load()
        self._accountant = Accountant(totals)
        self._prometheus.restore(totals)
        self.health.seq = totals.seq
        self.health.total_emissions_g = sum(totals.emissions_g.values())
        self.health.total_energy_j = sum(totals.energy_j.values())
        cfg = self.config
        source, self.source_reason = select_source(
            cfg.energy_source, cfg.powercap_root, cfg.country_iso_code, cfg.project_name, self.output_dir,
            cfg.cpu_tdp_watts, cfg.ram_watts, cfg.gpu,
        )
        self.health.energy_source = source.name
        try:
            source.open()
            self._source = source
            self._prometheus.gpu_names = dict(getattr(source, "gpu_names", {}))
            self.health.tracker_available = True
        except SourceUnavailable as exc:
            # Keep serving metrics and health: they are how the operator learns about this.
            self.health.tracker_error = str(exc)
        except Exception as exc:  # a source bug must not take the exporter down either
            self.health.tracker_error = f"{source.name} failed to open: {type(exc).__name__}: {exc}"
        self._open_attribution()
        self._chain.start()  # the online provider's refresh thread, if any
        self._set_intensity(self._intensity)
        self._refresh_health_files()
        self._prometheus.update(self.health, None)
        if serve_metrics:
            web = load_web_config(cfg.metrics_web_config) if cfg.metrics_web_config else WebConfig()
            self._server = MetricsServer(
                cfg.metrics_address, cfg.metrics_port,
                Routes(self._prometheus.page, CONTENT_TYPE, self._health_route),
                ssl_context=web.ssl_context(), auth=BasicAuth(web.users) if web.users else None,
            )
            self._server.start()
        self._last_mono = time.monotonic()

    @property
    def sample_every_s(self) -> float | None:
        """How often the source must be read between intervals so counters cannot wrap twice unseen."""
        limit = getattr(self._source, "max_sample_interval_s", None)
        return limit if limit is not None and limit < self.config.measurement_interval else None

    def sample(self) -> None:
        """Fold counters into the current interval without ending it (long intervals on RAPL)."""
        if self._source is not None and hasattr(self._source, "sample"):
            try:
                self._source.sample()
            except Exception as exc:
                self.health.last_measurement_error = f"{type(exc).__name__}: {exc}"

    @property
    def metrics_port(self) -> int | None:
        return self._server.port if self._server else None

    def measure_once(self, *, final: bool = False) -> EmissionsRecord | None:
        """Account one interval (or, with ``final``, the tail) and hand it to every sink."""
        if self._accountant is None:
            raise RuntimeError("start() first")
        now_mono = time.monotonic()
        elapsed = now_mono - self._last_mono
        record = None
        self._set_intensity(self._chain.current(time.time()))  # cheap: no I/O; the metric follows even without a record
        energy = self._read_source(final)
        if energy is not None:
            self._last_mono = now_mono
            cpu_time = self._read_cpu_time()
            record = self._accountant.account(
                energy, end_wall=time.time(), elapsed_s=elapsed, intensity=self._intensity,
                identity=self._identity, final=final,
            )
            record = self._attribute(record, cpu_time)
            self._ndjson.write(record)
            self._ledger_save()
            self._note_record(record)
        else:
            self._ndjson.flush()  # retry anything the disk refused earlier
        self._note_writes()
        self._refresh_health_files()
        self._prometheus.update(self.health, record)
        return record

    def stop(self) -> EmissionsRecord | None:
        """Write the final record covering the tail since the last interval, then close."""
        record = self.measure_once(final=True) if self._accountant is not None else None
        if self._server is not None:
            self._server.stop()
            self._server = None
        self._chain.close()
        self._ndjson.close()
        return record

    LIVE_SETTINGS = frozenset({"log_level", "log_file", "project_name", "intensity_g_per_kwh", "country_iso_code",
                               "region", "record_hostname", "offline", "electricitymaps_token", "electricitymaps_zone",
                               "electricitymaps_url", "electricitymaps_refresh_interval", "electricitymaps_timeout",
                               "intensity_profile_file"})

    def reconfigure(self, config: TTAConfig) -> list[str]:
        """Apply what can change live; return the names of changed settings that need a restart."""
        old, new = self.config.model_dump(), config.model_dump()
        needs_restart = sorted(k for k in old if old[k] != new[k] and k not in self.LIVE_SETTINGS)
        self.config = self.config.model_copy(update={k: getattr(config, k) for k in self.LIVE_SETTINGS})
        self._identity = self._make_identity(config)
        self.health.project = config.project_name
        old_chain, self._chain = self._chain, build_chain(config, reuse=self._chain)
        if old_chain.online is not None and old_chain.online is not self._chain.online:
            old_chain.online.close()
        if self._accountant is not None:  # started: keep the (new) online provider refreshing
            self._chain.start()
        self._set_intensity(self._chain.current(time.time()))
        self._prometheus.update(self.health, None)
        return needs_restart

    # -- internals ---------------------------------------------------------------------------

    def _read_source(self, final: bool) -> IntervalEnergy | None:
        if self._source is None:
            return None
        try:
            energy = self._source.close() if final else self._source.read_interval()
        except Exception as exc:  # any source failure costs one interval, never the daemon
            self.health.measurement_errors += 1
            self.health.last_measurement_error = f"{type(exc).__name__}: {exc}"
            return None
        self.health.last_measurement_error = ""
        return energy

    def _open_attribution(self) -> None:
        cfg = self.config
        if not cfg.attribution_enabled:
            return
        sampler = CpuTimeSampler(cfg.cgroup_root, cfg.proc_root, cfg.attribution_include, cfg.attribution_exclude)
        try:
            sampler.open()
        except Exception as exc:  # no cgroup accounting: records simply carry no per-unit split
            self.attribution_note = f"unavailable: {exc}"
            return
        self._cpu_time = sampler
        h = sampler.hierarchy
        self.attribution_note = f"cgroup {h.version if h else '?'} at {h.path if h else '?'}"

    def _read_cpu_time(self) -> CpuTimeDelta | None:
        if self._cpu_time is None:
            return None
        try:
            return self._cpu_time.read()
        except Exception as exc:  # one interval without a split, never a lost record
            self.health.last_measurement_error = f"attribution: {type(exc).__name__}: {exc}"
            return None

    def _attribute(self, record: EmissionsRecord, cpu_time: CpuTimeDelta | None) -> EmissionsRecord:
        if cpu_time is None:
            return record
        shares = attribution.attribute(
            cpu_time,
            cpu_j=record.energy_j["cpu"], total_j=sum(record.energy_j.values()),
            cpu_g=record.emissions_g["cpu"], total_g=record.emissions_total_g,
            top_n=self.config.attribution_top_n,
        )
        return dataclasses.replace(
            record,
            units={k: v.as_dict() for k, v in shares.items()},
            attribution={**attribution.METHOD, "cgroup": cpu_time.cgroup},
        )

    def _ledger_save(self) -> None:
        try:
            self._ledger.save(self._accountant.totals)  # type: ignore[union-attr]
            self._state_write_error = ""
        except OSError as exc:
            self._state_write_errors += 1
            self._state_write_error = f"state file {self._ledger.path}: {exc.strerror}"

    def _set_intensity(self, intensity: Intensity) -> None:
        self._intensity = intensity
        self.health.intensity_g_per_kwh = intensity.grams_per_kwh
        self.health.intensity_source = intensity.source
        online = self._chain.online
        self.health.intensity_error = online.last_error if online is not None else ""

    def _note_record(self, record: EmissionsRecord) -> None:
        h = self.health
        h.measurements += 1
        h.last_success_at = time.time()
        h.energy_method = dict(record.energy_method)
        h.estimated = record.estimated
        h.last_power_w = sum(record.power_w.values())
        h.seq = record.seq
        h.total_emissions_g = sum(record.totals.emissions_g.values())
        h.total_energy_j = sum(record.totals.energy_j.values())

    def _note_writes(self) -> None:
        stats = self._ndjson.stats
        h = self.health
        h.records_written = stats.written
        h.write_errors = stats.write_errors + self._state_write_errors
        h.records_dropped = stats.dropped
        h.records_pending = self._ndjson.pending
        h.last_write_error = stats.last_error or self._state_write_error

    def _refresh_health_files(self) -> None:
        total = 0
        try:
            with os.scandir(self.output_dir) as entries:
                for entry in entries:
                    if entry.name.startswith("emissions_") and entry.is_file(follow_symlinks=False):
                        total += entry.stat(follow_symlinks=False).st_size
        except OSError:
            pass
        self.health.output_bytes = total
        log_file = self.config.log_file
        try:
            self.health.log_file_bytes = log_file.stat().st_size if log_file else 0
        except OSError:
            self.health.log_file_bytes = 0

    def _health_route(self) -> tuple[bool, bytes]:
        h = self.health
        fresh = h.last_success_at > 0 and time.time() - h.last_success_at < 3 * h.interval_s
        # Unhealthy while a write is failing or records wait in memory; healthy again once the disk
        # takes them (write_errors stays as a counter, for the record).
        ok = h.tracker_available and not h.last_write_error and h.records_pending == 0 and (fresh or h.measurements == 0)
        return ok, json.dumps(h.as_dict()).encode() + b"\n"
