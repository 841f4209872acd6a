"""A preferred source with a fallback: codecarbon's tracker, degrading to our own estimate.

The default (``energy_source: auto``) measures what codecarbon measures with codecarbon's
own EmissionsTracker. Building that tracker probes the hardware for about 1.4 s, which
must not hold READY back, and it can fail (codecarbon missing or broken). So:

- ``open()`` opens the fallback (cheap) and builds the preferred source on a background
  thread. Until it is ready the fallback counts; at the handover the fallback's energy so
  far is carried into the next interval under the preferred source's labels (the same
  model, for the ~1.5 s of start-up), so no second goes uncounted.
- If the preferred source cannot be built, the fallback simply goes on: ``degradation``
  says so, once in the log and wherever health is shown.
- If the preferred source fails mid-run, that interval fails (the caller counts one
  measurement error), the fallback takes over from then on, and ``degradation`` says why.
- ``recover()`` (SIGHUP) builds the preferred source again in the background.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from src.components.carbon.memory import release_free_memory
from src.components.carbon.record import ComponentEnergy, DeviceInfo, IntervalEnergy
from src.components.carbon.sources import EnergySource, MeterStatus
from src.components.carbon.sources.composite import merge

_log = logging.getLogger("tta.sources")


def relabel(energy: IntervalEnergy, methods: dict[str, str]) -> IntervalEnergy:
    """The same joules under other method labels; a relabelled component drops its old assumption."""
    return IntervalEnergy(
        {c: ComponentEnergy(e.joules, methods.get(c, e.method)) for c, e in energy.components.items()},
        devices=dict(energy.devices),
        assumptions={c: a for c, a in energy.assumptions.items() if c not in methods},
    )


class FallbackSource[P: EnergySource]:
    """``labels(preferred)`` gives the method labels the start-up carry is recorded under."""

    def __init__(
        self,
        make_preferred: Callable[[], P],
        fallback: EnergySource,
        labels: Callable[[P], dict[str, str]],
        preferred_name: str = "codecarbon",
    ) -> None:
        self._make_preferred = make_preferred
        self._fallback: EnergySource | None = fallback
        self._fallback_template = fallback
        self._labels = labels
        self._preferred_name = preferred_name
        self._active: EnergySource = fallback
        self._preferred_ready = False
        self._carry: IntervalEnergy | None = None
        self._degradation = ""
        self._closed = False
        self._building: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- EnergySource --------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The preferred source's name unless it is known to have failed."""
        return self._fallback_template.name if self._degradation else self._preferred_name

    def open(self) -> None:
        self._fallback_template.open()  # SourceUnavailable propagates: then nothing can measure
        self._build_in_background()

    def sample(self) -> None:
        with self._lock:
            self._active.sample()

    @property
    def max_sample_interval_s(self) -> float | None:
        return self._active.max_sample_interval_s

    @property
    def devices(self) -> tuple[DeviceInfo, ...]:
        return self._active.devices

    @property
    def platform_meter(self) -> MeterStatus | None:
        return self._active.platform_meter

    @property
    def degradation(self) -> str:
        return self._degradation

    def recover(self) -> None:
        with self._lock:
            if self._closed or self._preferred_ready or (self._building is not None and self._building.is_alive()):
                return
        self._build_in_background()

    def read_interval(self) -> IntervalEnergy:
        with self._lock:
            active = self._active
            try:
                energy = active.read_interval()
            except Exception as exc:
                if active is self._fallback:
                    raise
                self._degrade_locked(f"{self._preferred_name} failed mid-run ({type(exc).__name__}: {exc})")
                raise
            return self._with_carry(energy)

    def close(self) -> IntervalEnergy:
        with self._lock:
            self._closed = True
            try:
                return self._with_carry(self._active.close())
            finally:
                if self._fallback is not None and self._fallback is not self._active:
                    _close_quietly(self._fallback)

    # -- internals ------------------------------------------------------------------------

    def _with_carry(self, energy: IntervalEnergy) -> IntervalEnergy:
        carry, self._carry = self._carry, None
        return energy if carry is None else merge(carry, energy)

    def _build_in_background(self) -> None:
        self._building = threading.Thread(target=self._build, name=f"{self._preferred_name}-start", daemon=True)
        self._building.start()

    def _build(self) -> None:
        try:
            preferred = self._make_preferred()
            preferred.open()
        except Exception as exc:  # SourceUnavailable or a broken install: the fallback goes on
            with self._lock:
                if not self._closed:
                    self._note_degraded(f"{self._preferred_name} unavailable ({exc})")
            return
        with self._lock:
            if self._closed:  # stopped while we were building: do not leave a tracker running
                _close_quietly(preferred)
                return
            fallback, self._fallback = self._fallback, None
            if fallback is not None:
                # The fallback counted until now: its energy goes into the next interval.
                self._carry = relabel(fallback.close(), self._labels(preferred))
            recovered = bool(self._degradation)
            self._active, self._preferred_ready, self._degradation = preferred, True, ""
        if recovered:
            _log.warning("energy source recovered: %s measuring again", self._preferred_name)
        release_free_memory()  # the build's transient allocations (~18 MB of RSS otherwise)

    def _degrade_locked(self, why: str) -> None:
        """Mid-run failure: stop the preferred source, reopen the fallback from now."""
        failed = self._active
        self._preferred_ready = False
        fallback = self._fallback_template
        try:
            fallback.open()
        except Exception as exc:  # not even the fallback: the next reads fail and are counted
            why = f"{why}; fallback {fallback.name} failed too: {exc}"
        self._active = self._fallback = fallback
        self._note_degraded(why)
        _close_quietly(failed)

    def _note_degraded(self, why: str) -> None:
        self._degradation = f"{why}; using {self._fallback_template.name}"
        _log.warning("energy source degraded: %s", self._degradation)


def _close_quietly(source: EnergySource) -> None:
    try:
        source.close()
    except Exception:  # nothing to account: it is being dropped
        pass
