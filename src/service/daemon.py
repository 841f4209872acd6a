"""The service shell: monotonic schedule, signals, sd_notify, SIGHUP reload.

Only this module knows about systemd. The loop itself sends WATCHDOG=1, so a
hung measurement really trips systemd's watchdog instead of a helper thread
keeping a dead daemon "alive".
"""

from __future__ import annotations

import os
import select
import signal
import socket
import time
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING

import sdnotify

from src.components.carbon_component import CarbonComponent, DirectoryInUse, IntervalOutcome, OutputDirUnwritable
from src.orchestration import ConfigError
from src.orchestration.values import ConfigValues
from src.service import logs
from src.service.exit_codes import EX_CANTCREAT, EX_OK, EX_UNAVAILABLE
from src.service.reload import APPLIED, REJECTED, STARTED, StatusPublisher, monotonic_ns, status_path

if TYPE_CHECKING:
    from src.orchestration import TTAConfig


class Daemon:
    def __init__(self, config: TTAConfig | ConfigValues, load_config: Callable[[], TTAConfig | ConfigValues]) -> None:
        self.config = config
        self._load_config = load_config
        self.component = CarbonComponent(config)
        self._notifier = sdnotify.SystemdNotifier()
        if self._notifier.socket is not None:
            # A notification must never block the measurement loop: if nobody drains the
            # socket (a wedged manager, a test harness), drop the message (EAGAIN, swallowed).
            self._notifier.socket.setblocking(False)
        # Signal handlers only set flags; the C-level wakeup fd interrupts the wait.
        # (Taking a lock inside a handler, as Event.set() does, can deadlock the main thread.)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stop = False
        self._reload = False
        self._log = logs.get_logger(component="carbon")
        # Each reload's outcome, for `tta-carbon reload` (ExecReload) to wait on: src/service/reload.py.
        self._reload_status = StatusPublisher(status_path(config.state_dir))
        watchdog_usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        watchdog_pid = os.environ.get("WATCHDOG_PID")
        if watchdog_pid and watchdog_pid != str(os.getpid()):
            watchdog_usec = 0
        self._watchdog_every = watchdog_usec / 2e6 if watchdog_usec > 0 else None
        self._watchdog_due = 0.0  # monotonic time of the next ping the loop owes systemd

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            self._reload = True
        else:
            self._stop = True

    def run(self) -> int:
        self._reload_status.clear()  # an earlier process's file must not vouch for this one
        signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        log = self._log
        try:
            started = self.component.start()
        except OutputDirUnwritable as exc:
            log.error("start_failed", error=str(exc))
            _print_error(str(exc))
            return EX_CANTCREAT
        except DirectoryInUse as exc:
            log.error("start_failed", error=str(exc))
            _print_error(str(exc))
            return EX_UNAVAILABLE
        except OSError as exc:
            cfg = self.config
            if exc.errno in (98, 99, 13):  # EADDRINUSE, EADDRNOTAVAIL, EACCES on bind
                msg = f"cannot listen on {cfg.metrics_address}:{cfg.metrics_port}: {exc.strerror}"
                log.error("start_failed", error=msg)
                _print_error(msg + " (set CARBON_METRICS_PORT or metrics_port)")
                return EX_UNAVAILABLE
            msg = f"cannot prepare directories: {exc.strerror} ({exc.filename})"
            log.error("start_failed", error=msg)
            _print_error(msg)
            return EX_CANTCREAT
        comp = self.component
        health = comp.health
        log.info(
            "started", version=health.version, run_id=comp.run_id, pid=os.getpid(),
            metrics=f"http://{self.config.metrics_address}:{comp.metrics_port}/metrics",
            output_dir=str(comp.output_dir), interval_s=self.config.measurement_interval,
            energy_source=started.source, ledger=started.ledger.note, attribution=started.attribution,
            intensity_g_per_kwh=health.intensity_g_per_kwh, intensity_source=health.intensity_source,
        )
        if started.ledger.damaged:
            log.error("state_file_damaged", error=started.ledger.note)
        if started.source_error:
            log.error("energy_source_unavailable", error=started.source_error)
        if logs.TEE.error:
            log.error("log_file_unavailable", error=logs.TEE.error)
        self._reload_status.publish(STARTED, monotonic_ns())  # SIGHUP handled from here on: reloads may come
        if self._reload_status.error:
            log.error("reload_status_unavailable", error=self._reload_status.error,
                      effect="`tta-carbon reload` (ExecReload) cannot report outcomes; SIGHUP still reloads")
        self._notifier.notify(f"READY=1\nSTATUS=started; first measurement in {self.config.measurement_interval:g}s\n"
                              f"MAINPID={os.getpid()}")
        try:
            self._loop()
        finally:
            self._reload_status.clear()
            self._notifier.notify("STOPPING=1\nSTATUS=stopping: writing final record")
            final = comp.stop()
            record = final.record if final is not None else None
            log.info("stopped", final_seq=record.seq if record else None,
                     total_emissions_g=comp.health.total_emissions_g)
        return EX_OK

    def _loop(self) -> None:
        interval = self.config.measurement_interval
        base = time.monotonic()
        ticks = 0
        while not self._stop:
            deadline = base + (ticks + 1) * interval
            now = time.monotonic()
            if now >= deadline:
                ticks += 1
                self._measure()
                if now - deadline >= interval:
                    # We fell a whole interval behind (suspend, or a stall): resume the
                    # grid from here rather than firing a burst of catch-up measurements.
                    ticks = int((now - base) // interval)
                continue
            if self._reload:
                self._reload = False
                self._apply_reload()
                continue
            self._ping_watchdog(now)
            wait = deadline - now
            if self._watchdog_every is not None:
                wait = min(wait, self._watchdog_due - now)
            sample_every = self.component.sample_every_s
            if sample_every is not None:
                wait = min(wait, sample_every)
            self._sleep(wait)
            if sample_every is not None and time.monotonic() < deadline:
                self.component.sample()

    def _measure(self) -> None:
        outcome = self.component.measure_once()
        self._log_outcome(outcome)
        self._notifier.notify(f"STATUS={self.component.health.status_line()}")
        self._ping_watchdog()

    def _log_outcome(self, outcome: IntervalOutcome) -> None:
        record, h = outcome.record, self.component.health
        if record is not None:
            self._log.debug("measured", seq=record.seq, power_w=round(h.last_power_w, 3),
                            emissions_g=round(record.emissions_total_g, 6))
        if outcome.error:
            self._log.error("measurement_failed", error=outcome.error, errors=h.measurement_errors)
        if outcome.write_failed:
            s = outcome.sinks
            self._log.error("write_failed", error=s.last_error, pending=s.pending, dropped=s.dropped)

    def _sleep(self, seconds: float) -> None:
        readable, _, _ = select.select([self._wake_r], [], [], max(0.0, seconds))
        if readable:
            try:
                while self._wake_r.recv(4096):
                    pass
            except BlockingIOError:
                pass

    def _ping_watchdog(self, now: float | None = None) -> None:
        """Ping when one is due (``now`` given: the loop's wake-ups), or unconditionally.

        The loop wakes every second when the source is sampled (the CPU-load estimate); one ping
        per half WatchdogSec is all systemd needs, not one per wake-up.
        """
        if self._watchdog_every is None:
            return
        if now is None:
            now = time.monotonic()
        elif now < self._watchdog_due:
            return
        self._notifier.notify("WATCHDOG=1")
        self._watchdog_due = now + self._watchdog_every

    def _apply_reload(self) -> None:
        began = monotonic_ns()  # before the config is read: what `tta-carbon reload` matches its signal against
        status = self._reload_status
        status.generation += 1
        self._notifier.notify(f"RELOADING=1\nMONOTONIC_USEC={began // 1000}")
        try:
            new = self._load_config()
        except ConfigError as exc:
            self._log.error("reload_rejected", error=str(exc), keeping="previous configuration",
                            generation=status.generation)
            logs.TEE.reopen(self.config.log_file)
            status.publish(REJECTED, began, error=str(exc))  # after the log line: it is there when ExecReload returns
            self._notifier.notify("READY=1")
            return
        logs.configure(new.log_level, new.log_file, ConfigValues.of(new).secrets())  # also reopens the log file
        needs_restart = self.component.reconfigure(new)
        self.config = self.component.config
        self._log.info("reloaded", log_level=new.log_level, project=new.project_name,
                       intensity_g_per_kwh=self.component.health.intensity_g_per_kwh,
                       needs_restart=needs_restart or None, generation=status.generation)
        status.publish(APPLIED, began, needs_restart=needs_restart)
        self._notifier.notify("READY=1")


def _print_error(message: str) -> None:
    logs.console(f"tta-carbon: error: {message}")  # an err in the journal under systemd

