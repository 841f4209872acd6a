"""Energy types shared between sources and the accountant.

Placeholder for the rapl branch: the lead's record.py defines these same classes
(plus the record and totals types); on merge, keep the lead's file.
"""

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ComponentEnergy:
    joules: float
    method: str  # "rapl", "cpu_load_tdp", "constant", "nvml"


@dataclass(frozen=True, slots=True)
class IntervalEnergy:
    components: dict[str, ComponentEnergy]  # keys: "cpu", "ram", "gpu"
    devices: dict[str, float] = field(default_factory=dict)  # per-device joules, e.g. "package-0", "package-0/dram", "gpu0"


class SourceUnavailable(Exception):
    """The source cannot measure on this machine; the message says why in one line."""
