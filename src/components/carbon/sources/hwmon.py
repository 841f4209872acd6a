"""Platform power from a hwmon power meter: ACPI ``power_meter`` and its kin, read-only sysfs.

Which devices count (``platform_meters``): hwmon devices whose ``name`` is a whole-machine
meter's driver: ``power_meter`` (the ACPI 4.0 power meter, ``power_meter-acpi-0`` in
``sensors``), ``aem1``/``aem2`` (IBM Active Energy Manager). Other hwmon power sensors
(``amd_energy``, ``ina2xx``, GPU boards) measure a part of the machine and are not
platform meters; ``hwmon_device`` names one explicitly when an operator knows better.

Attributes (Documentation/hwmon/sysfs-interface.rst), looked for in the device directory and,
as older drivers put them, in its ``device/`` subdirectory:

- ``energy1_input`` (µJ, cumulative): read as a counter, exact. Preferred.
- ``power1_average`` (µW): the mean over ``power1_average_interval`` (ms); what ACPI meters give.
- ``power1_input`` (µW): instantaneous.

Reading one costs an ACPI method call in the kernel (tens of µs to a few ms): read in the
measurement loop, at each boundary and every ``period_s`` between.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from src.components.carbon.record import DeviceInfo
from src.components.carbon.sources.platform import MeterError, MeterReading, platform_device

DEFAULT_ROOT = Path("/sys/class/hwmon")
METHOD = "hwmon"
PLATFORM_DRIVERS = frozenset({"power_meter", "aem1", "aem2"})
# Attributes in order of preference: a counter is exact; an average beats an instant.
ATTRIBUTES = (("energy1_input", "energy"), ("power1_average", "power"), ("power1_input", "power"))
_MAX_ATTRIBUTE_BYTES = 64


@dataclass(frozen=True, slots=True)
class HwmonCandidate:
    path: Path  # /sys/class/hwmon/hwmonN
    name: str  # the driver's name file
    attribute: Path  # the file read
    kind: str  # "energy" (µJ counter) or "power" (µW)

    def describe(self) -> str:
        return f"{self.name} ({self.path.name}, {self.attribute.name})"


def _read_small(path: Path) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    try:
        return os.read(fd, _MAX_ATTRIBUTE_BYTES).decode("ascii", "replace").strip()
    finally:
        os.close(fd)


def _attribute(device: Path) -> tuple[Path, str] | None:
    for base in (device, device / "device"):
        for attr, kind in ATTRIBUTES:
            path = base / attr
            if path.is_file():
                return path, kind
    return None


def platform_meters(root: Path = DEFAULT_ROOT, wanted: str = "") -> list[HwmonCandidate]:
    """hwmon platform meters under ``root``, in hwmonN order. ``wanted``: a device's ``name``
    or its ``hwmonN`` directory name, which is then taken whatever its driver."""
    try:
        entries = sorted(root.iterdir(), key=lambda p: (len(p.name), p.name))
    except OSError:
        return []
    found = []
    for entry in entries:
        try:
            name = _read_small(entry / "name") if (entry / "name").is_file() else ""
            if not name and (entry / "device" / "name").is_file():
                name = _read_small(entry / "device" / "name")
        except OSError:
            continue
        if wanted:
            if wanted not in (name, entry.name):
                continue
        elif name not in PLATFORM_DRIVERS:
            continue
        attribute = _attribute(entry)
        if attribute is not None:
            found.append(HwmonCandidate(entry, name, *attribute))
    return found


class HwmonMeter:
    """One hwmon platform meter (see the module docstring)."""

    method = METHOD
    blocking_ok = True  # sysfs: read in the loop
    default_period_s = 1.0

    def __init__(self, candidate: HwmonCandidate | None, missing: str = "") -> None:
        """``candidate`` None: the meter asked for is not there; every read says ``missing``
        (so an explicit ``platform_meter: hwmon`` fails at open like any unavailable source)."""
        self.candidate = candidate
        self.missing = missing
        shown = f"{candidate.name} ({candidate.path.name})" if candidate else "none found"
        self.device: DeviceInfo = platform_device(shown)

    def read(self, timeout_s: float) -> MeterReading:
        c = self.candidate
        if c is None:
            raise MeterError(self.missing)
        try:
            text = _read_small(c.attribute)
            micro = int(text)
        except OSError as exc:
            raise MeterError(f"hwmon {c.describe()}: cannot read: {exc.strerror or exc}") from None
        except ValueError:
            raise MeterError(f"hwmon {c.describe()}: not a number: {text[:20]!r}") from None
        if c.kind == "energy":
            return MeterReading(energy_j=micro / 1e6)
        return MeterReading(watts=micro / 1e6)

    def close(self) -> None:
        """Nothing held: each read opens the file."""
