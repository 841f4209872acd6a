"""RAPL energy source: the Linux powercap ``energy_uj`` counters, wrap-aware.

Which zones count (everything under the ``intel-rapl`` control type):

- cpu = top-level zones named ``package-N`` (``package-N-die-M`` on multi-die parts).
- ram = zones named ``dram``: subzones ``intel-rapl:N:M`` (the MSR driver files DRAM under
  its package) or a top-level zone. DRAM is its own RAPL domain, not part of PKG, even
  though sysfs nests it, so it is added, not subtracted.
- core (PP0) and uncore (PP1) subzones are parts of PKG: never added.
- psys (platform) contains PKG and more: never added.
- Other control types are not read: ``intel-rapl-mmio`` exposes the same package counter
  again and would double count. AMD Zen parts appear under ``intel-rapl`` (the
  intel_rapl_msr driver serves them) with the same names, so they need nothing special.

Counter semantics (drivers/powercap/intel_rapl_common.c): ``energy_uj`` is a 32-bit raw
counter times the energy unit, and ``max_energy_range_uj`` is the largest raw value
(0xFFFFFFFF) times that unit. Readings lie in ``[0, max_energy_range_uj]`` inclusive and
the one after the maximum is 0, so deltas are taken modulo ``max_energy_range_uj + 1``.
The hardware period is really max + one energy unit (15.3 to 61 µJ), which sysfs does not
expose: the error is under 61 µJ per wrap of at least 65 kJ (< 1e-9). (Kepler uses
``max - prev + cur``, 1 µJ less per wrap; Scaphandre drops the sample across a wrap.)

A counter cannot tell k wraps from k+1: more than one period between two reads is lost
silently. A package period is ~262 kJ: at 15 s that takes > 17 kW, but at 3600 s only
~73 W. Call :meth:`RaplSource.sample` at least every ``max_sample_interval_s`` seconds
when the reporting interval is longer than that.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from src.components.carbon.record import ComponentEnergy, DeviceInfo, IntervalEnergy, SourceUnavailable
from src.components.carbon.sources import SourceDefaults

DEFAULT_ROOT = Path("/sys/class/powercap")
CONTROL_TYPE = "intel-rapl"
METHOD = "rapl"
# No single RAPL domain draws this much today (top server parts: ~500 W package).
ASSUMED_PEAK_WATTS = 1000.0
PERMISSION_HINT = (
    "energy_uj is root-only since Linux 5.10 (CVE-2020-8694): run as root or grant read "
    "access to the energy_uj files, see docs/rapl.md#permissions"
)

_TOP = re.compile(r"intel-rapl:(\d+)")
_SUB = re.compile(r"intel-rapl:(\d+):(\d+)")
_UJ_PER_J = 1_000_000


class RaplReadError(RuntimeError):
    """A counter readable at open() cannot be read now (zone unplugged, I/O error,
    garbage). No state changed: the energy stays pending for the next good read."""


@dataclass(slots=True)
class _Zone:
    key: str  # device key: "package-0", "package-0/dram", "dram"
    component: str  # "cpu" or "ram"
    energy_path: Path
    period_uj: int  # max_energy_range_uj + 1
    device: DeviceInfo
    last_uj: int = 0
    pending_uj: int = 0  # sampled but not yet returned by read_interval


class RaplSource(SourceDefaults):
    """Energy per interval from RAPL counters. Integer µJ inside, float joules out."""

    name = "rapl"

    def __init__(self, root: Path = DEFAULT_ROOT) -> None:
        self.root = Path(root)
        self._zones: list[_Zone] | None = None
        # The daemon may sample() from a timer while the loop calls read_interval().
        self._lock = threading.Lock()

    # -- lifecycle --------------------------------------------------------------

    def open(self) -> None:
        """Discover zones and take the baseline; raise SourceUnavailable (one line) if
        any counted zone is unreadable or there is no package zone. Calling it again
        rediscovers zones and starts a new baseline (unreturned energy is dropped)."""
        zones = _discover(self.root)
        with self._lock:
            self._zones = zones

    def sample(self) -> None:
        """Fold the counters into the pending energy without ending the interval.

        Needed only when intervals may be longer than ``max_sample_interval_s``."""
        with self._lock:
            self._sample_locked()

    def read_interval(self) -> IntervalEnergy:
        """Energy since open() or the previous read_interval()."""
        with self._lock:
            self._sample_locked()
            return self._drain_locked()

    def close(self) -> IntervalEnergy:
        """Energy since the last read (the tail); the source is closed even if that read
        fails. Closing a source that is not open returns an empty IntervalEnergy."""
        with self._lock:
            if self._zones is None:
                return IntervalEnergy(components={})
            try:
                self._sample_locked()
                return self._drain_locked()
            finally:
                self._zones = None

    # -- introspection ----------------------------------------------------------

    @property
    def devices(self) -> tuple[DeviceInfo, ...]:
        """Zones measured, in discovery order (keys "package-0", "package-0/dram", ...)."""
        return tuple(z.device for z in self._require_open())

    @property
    def max_sample_interval_s(self) -> float:
        """Longest safe gap between two counter reads, assuming ASSUMED_PEAK_WATTS per zone."""
        return min(z.period_uj for z in self._require_open()) / _UJ_PER_J / ASSUMED_PEAK_WATTS

    # -- internals --------------------------------------------------------------

    def _require_open(self) -> list[_Zone]:
        if self._zones is None:
            raise RuntimeError("RaplSource is not open")
        return self._zones

    def _sample_locked(self) -> None:
        zones = self._require_open()
        # Read every zone before touching state, so a failure leaves all baselines
        # intact and the next good read still covers the whole gap.
        readings = [_read_counter_checked(z) for z in zones]
        for zone, cur in zip(zones, readings, strict=True):
            zone.pending_uj += (cur - zone.last_uj) % zone.period_uj
            zone.last_uj = cur

    def _drain_locked(self) -> IntervalEnergy:
        zones = self._require_open()
        totals: dict[str, int] = {}
        devices: dict[str, float] = {}
        for zone in zones:
            totals[zone.component] = totals.get(zone.component, 0) + zone.pending_uj
            devices[zone.key] = zone.pending_uj / _UJ_PER_J
            zone.pending_uj = 0
        # Sum in integer µJ, convert once: no float drift however many zones or reads.
        components = {c: ComponentEnergy(joules=uj / _UJ_PER_J, method=METHOD) for c, uj in totals.items()}
        return IntervalEnergy(components=components, devices=devices)


def rapl_readable(root: Path = DEFAULT_ROOT) -> tuple[bool, str]:
    """(True, what would be measured) or (False, one-line reason): for ``auto`` selection."""
    try:
        zones = _discover(Path(root))
    except SourceUnavailable as exc:
        return False, str(exc)
    return True, "RAPL readable: " + ", ".join(z.key for z in zones)


def rapl_components(root: Path = DEFAULT_ROOT) -> frozenset[str]:
    """The record components RAPL measures here: {"cpu"}, {"cpu", "ram"} with a DRAM zone, or none."""
    try:
        return frozenset(z.component for z in _discover(Path(root)))
    except SourceUnavailable:
        return frozenset()


# -- discovery and reading --------------------------------------------------------


def _discover(root: Path) -> list[_Zone]:
    control = root / CONTROL_TYPE
    if not root.is_dir():
        raise SourceUnavailable(
            f"RAPL unavailable: no {root} (no powercap support, or no RAPL on this machine, e.g. a VM)"
        )
    if not control.is_dir():
        raise SourceUnavailable(
            f"RAPL unavailable: no {control} (intel_rapl_msr not loaded, or no RAPL on this machine, e.g. a VM)"
        )
    zones: list[_Zone] = []
    try:
        for top in _numbered(control, _TOP):
            name = _read_text(top / "name")
            number = int(_TOP.fullmatch(top.name).group(1))  # type: ignore[union-attr]  (_numbered matched it)
            if name.startswith("package-"):
                zones.append(_make_zone(DeviceInfo(name, "package", number, name, "cpu"), top))
                for sub in _numbered(top, _SUB):
                    # core/uncore are inside the package: skipping them avoids double counting.
                    if _read_text(sub / "name") == "dram":
                        zones.append(_make_zone(DeviceInfo(f"{name}/dram", "dram", number, "dram", "ram"), sub))
            elif name == "dram":
                zones.append(_make_zone(DeviceInfo(name, "dram", number, name, "ram"), top))
            # psys and anything unknown: not added (psys contains the packages).
    except PermissionError as exc:
        raise SourceUnavailable(
            f"RAPL unavailable: cannot read {exc.filename}: permission denied; {PERMISSION_HINT}"
        ) from exc
    except (OSError, ValueError) as exc:
        raise SourceUnavailable(f"RAPL unavailable: {_reason(exc)}") from exc
    if not any(z.component == "cpu" for z in zones):
        raise SourceUnavailable(f"RAPL unavailable: no package zone under {control}")
    keys = [z.key for z in zones]
    if len(set(keys)) != len(keys):
        raise SourceUnavailable(f"RAPL unavailable: duplicate zone names under {control}: {', '.join(keys)}")
    return zones


def _make_zone(device: DeviceInfo, path: Path) -> _Zone:
    max_range = _read_int(path / "max_energy_range_uj")
    if max_range <= 0:
        raise ValueError(f"{path / 'max_energy_range_uj'} is {max_range}, expected > 0")
    zone = _Zone(key=device.key, component=device.component, energy_path=path / "energy_uj", period_uj=max_range + 1,
                 device=device)
    # Reading now proves the counter is readable and sets the baseline.
    zone.last_uj = _read_int(zone.energy_path)
    _check_range(zone, zone.last_uj)
    return zone


def _numbered(directory: Path, pattern: re.Pattern[str]) -> list[Path]:
    found = []
    with os.scandir(directory) as entries:
        for entry in entries:
            match = pattern.fullmatch(entry.name)
            if match and entry.is_dir():
                found.append((tuple(int(g) for g in match.groups()), Path(entry.path)))
    return [path for _, path in sorted(found)]


def _read_text(path: Path) -> str:
    with open(path, encoding="ascii") as f:
        return f.read().strip()


def _read_int(path: Path) -> int:
    # Reopened every read, not pread on a kept fd: it costs a few µs every 15 s, and a
    # kept fd would hide a zone that was unplugged (or a file replaced by rename).
    with open(path, "rb", buffering=0) as f:
        data = f.read(64)
    try:
        return int(data)
    except ValueError:
        raise ValueError(f"{path} holds {data!r}, not an integer") from None


def _check_range(zone: _Zone, value: int) -> None:
    if not 0 <= value < zone.period_uj:
        # Outside the declared range the wrap arithmetic would be wrong: refuse it.
        raise ValueError(f"{zone.energy_path} reads {value}, outside [0, {zone.period_uj - 1}] (max_energy_range_uj)")


def _read_counter_checked(zone: _Zone) -> int:
    try:
        value = _read_int(zone.energy_path)
        _check_range(zone, value)
    except (OSError, ValueError) as exc:
        raise RaplReadError(
            f"RAPL zone {zone.key}: {_reason(exc)}; energy since the last good read is kept "
            "(if the zone is gone for good, open() again to rediscover)"
        ) from exc
    return value


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"cannot read {exc.filename}: {exc.strerror or exc}"
    return str(exc).replace("\n", " ")
