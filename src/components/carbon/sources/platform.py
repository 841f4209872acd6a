"""Whole-machine power from a platform meter (hwmon, IPMI DCMI, Redfish), integrated per interval.

A platform meter sees what RAPL cannot: PSU losses, fans, disks, NICs, the board. Meters
give power, most of them not energy, so this module owns the integration; each meter
(``hwmon.py``, ``ipmi_dcmi.py``, ``redfish.py``) only knows how to take one reading.

Integration (docs/platform-power.md#integration). A reading taken at time t is the power
of the time since the previous reading: that is what an averaging meter reports (ACPI's
``power1_average`` is the mean over its averaging window, a BMC's DCMI "current power" the
mean over its sampling period), and for an instantaneous meter sampled every second the
error is one sampling period's worth of a step, which the next interval gets back. So the
energy between readings t[i-1] and t[i] is ``P[i] x (t[i] - t[i-1])``. At an interval
boundary T the segment since the last reading is held at the last power (``P[n] x (T -
t[n])``) and the next reading's segment starts at T: every second counted once, no gap.

A meter with an energy counter (hwmon ``energy*_input``) is read as a counter instead:
exact, and the integration above is not used.

Failures. A reading that fails, times out or is absurd (not finite, negative, above
``max_watts``) is not used; one log line says so when a failure starts, one when it ends.
The last good power is held for at most ``hold_s``; time beyond that is not covered. An
interval whose coverage is short of its duration by more than ``COVERAGE_TOLERANCE`` gets
no platform figure at all (the record falls back to the component sum and says why in
``energy_assumptions.platform``): a partial platform figure would read as a smaller machine.

Scheduling. A meter that is cheap and local (``PowerMeter.blocking_ok``: sysfs) is read in
the measurement loop, at the boundary and from ``sample()``. A remote one (a BMC over the
network, or ipmitool in-band, which can take seconds) is read by a background thread, one
read at a time with a total deadline: a slow or dead BMC never stalls the loop.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from src.components.carbon.record import PLATFORM, ComponentEnergy, DeviceInfo, IntervalEnergy, SourceUnavailable
from src.components.carbon.sources import MeterStatus, SourceDefaults

_log = logging.getLogger("tta.sources")

# No single server draws this much (a full 8-GPU node: ~10 kW); above it a reading is garbage.
DEFAULT_MAX_WATTS = 50_000.0
# Uncovered time allowed in an interval before its platform figure is dropped.
COVERAGE_TOLERANCE = 0.01


class MeterError(Exception):
    """One reading failed; ``str()`` is one line naming the meter and what went wrong (no secret)."""


@dataclass(frozen=True, slots=True)
class MeterReading:
    """``watts``: the power since the previous reading; ``energy_j``: a cumulative counter, if the meter has one."""

    watts: float | None = None
    energy_j: float | None = None


class PowerMeter(Protocol):
    """One platform meter. ``read`` returns within ``timeout_s`` or raises MeterError."""

    method: str  # the records' energy_method.platform: "hwmon", "ipmi_dcmi", "redfish"
    device: DeviceInfo  # kind "platform", component "platform"
    blocking_ok: bool  # cheap and local: read in the measurement loop (sysfs)
    default_period_s: float  # how often to read when the settings do not say

    def read(self, timeout_s: float) -> MeterReading:
        """One reading; MeterError (one line) if it cannot be had in time."""

    def close(self) -> None:
        """Release what the meter holds (sessions, connections)."""


@dataclass(slots=True)
class _Integral:
    """Joules and covered seconds of the current interval."""

    joules: float = 0.0
    covered_s: float = 0.0


class PlatformSource(SourceDefaults):
    """The ``platform`` component from one meter (see the module docstring)."""

    def __init__(
        self,
        meter: PowerMeter,
        *,
        period_s: float | None = None,
        timeout_s: float | None = None,
        hold_s: float | None = None,
        max_watts: float = DEFAULT_MAX_WATTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.meter = meter
        self.name = meter.method
        self.period_s = period_s or meter.default_period_s
        # A read may take most of a period, never more: the next one is due then.
        self.timeout_s = timeout_s or max(0.2, 0.8 * self.period_s)
        self.hold_s = hold_s if hold_s is not None else max(1.0, 3 * self.period_s)
        self.max_watts = max_watts
        self.devices = (meter.device,)  # type: ignore[misc]  # an instance value for SourceDefaults' default
        self._clock = clock
        self._lock = threading.Lock()
        self._interval = _Integral()
        self._interval_start = 0.0
        self._last_t = 0.0  # time up to which the interval is integrated
        self._last_good_t = 0.0  # time of the last good reading
        self._last_w: float | None = None
        self._last_counter: float | None = None
        self._held_j = 0.0  # credited at the held power since the last good reading
        self._failed_since_good = False
        self._error = ""  # the current failure, "" while readings succeed
        self.failures = 0  # readings refused since open (for metrics)
        self.last_watts: float | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def max_sample_interval_s(self) -> float | None:
        return self.period_s if self.meter.blocking_ok else None

    @property
    def platform_meter(self) -> MeterStatus:
        return MeterStatus(self.name, self.meter.device.name, self._error, self.failures, self.last_watts)

    def open(self) -> None:
        """A local meter (hwmon) must read now: SourceUnavailable if it cannot. A BMC that does
        not answer yet is not fatal: the thread keeps trying, and the intervals it misses
        carry no platform figure (and say so)."""
        first: MeterReading | None = None
        try:
            first = self.meter.read(self.timeout_s)
            self._check(first)
        except MeterError as exc:
            if self.meter.blocking_ok:
                raise SourceUnavailable(str(exc)) from None
            first = None
            self._failed(str(exc))
        # After the first read: a BMC's discovery (TLS, four GETs: ~90 ms here, seconds on real
        # ones) must not count as time the record covers (seen: +15.9 J on a 471 J first record).
        now = self._clock()
        with self._lock:
            self._interval_start = self._last_t = now
            if first is not None:
                self._last_good_t = now
                self._last_w = first.watts
                self._last_counter = first.energy_j
                self.last_watts = first.watts
            else:
                self._last_good_t = now - self.hold_s  # nothing to hold
        if not self.meter.blocking_ok:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=f"platform-{self.name}", daemon=True)
            self._thread.start()

    def sample(self) -> None:
        if self.meter.blocking_ok:
            self._take_reading()

    def read_interval(self) -> IntervalEnergy:
        if self.meter.blocking_ok:
            self._take_reading()
        return self._end_interval()

    def close(self) -> IntervalEnergy:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(self.timeout_s + 1.0)
        tail = self.read_interval() if self.meter.blocking_ok else self._end_interval()
        try:
            self.meter.close()
        except Exception:  # closing a session must not lose the tail
            pass
        return tail

    # ------------------------------------------------------------------ internals
    def _run(self) -> None:
        next_due = self._clock() + self.period_s
        while not self._stop.wait(max(0.0, next_due - self._clock())):
            self._take_reading()
            next_due += self.period_s
            now = self._clock()
            if next_due < now:  # a read ran over: skip the slots it covered, keep the phase
                next_due += math.ceil((now - next_due) / self.period_s) * self.period_s

    def _take_reading(self) -> None:
        try:
            reading = self.meter.read(self.timeout_s)
            self._check(reading)
        except MeterError as exc:
            self._failed(str(exc))
            return
        now = self._clock()
        with self._lock:
            self._fold(now, reading)
            if self._error:
                _log.warning("platform meter %s: readings good again", self.name)
                self._error = ""

    def _check(self, reading: MeterReading) -> None:
        for what, value in (("power", reading.watts), ("energy counter", reading.energy_j)):
            if value is None:
                continue
            if not math.isfinite(value) or value < 0:
                raise MeterError(f"{self.name}: absurd {what} reading {value!r}; ignored")
        if reading.watts is not None and reading.watts > self.max_watts:
            raise MeterError(f"{self.name}: absurd power reading {reading.watts:g} W "
                             f"(above platform_max_watts {self.max_watts:g}); ignored")
        if reading.watts is None and reading.energy_j is None:
            raise MeterError(f"{self.name}: the meter returned no reading")

    def _failed(self, error: str) -> None:
        with self._lock:
            self.failures += 1
            self._failed_since_good = True
            if error != self._error:  # one line when a failure starts (or changes), not one per read
                _log.warning("platform meter: %s (holding the last good power for up to %gs)", error, self.hold_s)
                self._error = error

    def _fold(self, now: float, reading: MeterReading) -> None:
        """Credit the time up to ``now`` from a good reading (lock held).

        A power reading covers the time since the last credited instant, but never more than
        ``hold_s`` back: after a long failure it says nothing of the gap. A counter reading
        credits the energy gained since the previous counter reading, less what a boundary
        already credited at the held power since then (so the run's sum is the counter's)."""
        counter, last_counter = reading.energy_j, self._last_counter
        if counter is not None and last_counter is not None and counter >= last_counter \
                and (not self._failed_since_good or now - self._last_good_t <= self.hold_s):
            gained = counter - last_counter
            span = now - self._last_good_t
            if span > 0 and gained / span <= self.max_watts:  # else a reset or garbage: credit nothing
                self._interval.joules += gained - self._held_j
                self._interval.covered_s += max(0.0, now - self._last_t)
                self._last_w = gained / span
        else:
            watts = reading.watts if reading.watts is not None else self._last_w
            # A late read (a busy loop) still covers the time since the last one; after failed
            # reads, the good one speaks for hold_s at most: the rest of the gap stays uncovered.
            start = max(self._last_t, now - self.hold_s) if self._failed_since_good else self._last_t
            if watts is not None and now > start:
                self._interval.joules += watts * (now - start)
                self._interval.covered_s += now - start
            if reading.watts is not None:
                self._last_w = reading.watts
        self._last_counter = counter
        self._last_t = self._last_good_t = now
        self._held_j = 0.0
        self._failed_since_good = False
        self.last_watts = self._last_w

    def _cover_held(self, now: float) -> None:
        """At a boundary: credit the time since the last credited instant at the last good power,
        up to ``hold_s`` after the last good reading; the rest stays uncovered (lock held)."""
        if self._last_w is not None:
            span = max(0.0, min(now, self._last_good_t + self.hold_s) - self._last_t)
            self._interval.joules += self._last_w * span
            self._interval.covered_s += span
            self._held_j += self._last_w * span
        self._last_t = now

    def _end_interval(self) -> IntervalEnergy:
        now = self._clock()
        with self._lock:
            self._cover_held(now)
            got, self._interval = self._interval, _Integral()
            duration = now - self._interval_start
            self._interval_start = now
        key = self.meter.device.key
        if duration > 0 and got.covered_s < duration * (1.0 - COVERAGE_TOLERANCE):
            missing = duration - got.covered_s
            return IntervalEnergy(
                {}, assumptions={PLATFORM: f"meter {self.name} had no reading for {missing:.1f} s of "
                                           f"{duration:.1f} s: not counted ({self._error or 'no reading yet'})"})
        joules = max(0.0, got.joules)
        return IntervalEnergy({PLATFORM: ComponentEnergy(joules, self.name)}, devices={key: joules})


def platform_device(name: str, index: int = 0) -> DeviceInfo:
    """The DeviceInfo of a platform meter: one per host, component ``platform``."""
    return DeviceInfo(key=f"platform-{index}", kind="platform", index=index, name=name, component=PLATFORM)
