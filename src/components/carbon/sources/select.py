"""Choose the energy source the settings ask for."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from src.components.carbon.sources import EnergySource
from src.components.carbon.sources.codecarbon_tracker import CodecarbonSource
from src.components.carbon.sources.composite import CompositeSource
from src.components.carbon.sources.cpu_estimate import CpuLoadTdpSource
from src.components.carbon.sources.nvml import NvmlSource, nvml_available
from src.components.carbon.sources.rapl import RaplSource, rapl_readable


@dataclass(frozen=True, slots=True)
class SourceSettings:
    """What the energy sources need to know (docs/energy-sources.md explains each choice)."""

    energy_source: str = "auto"  # "auto", "rapl", "cpu_load_tdp" or "codecarbon"
    powercap_root: Path = Path("/sys/class/powercap")
    country_iso_code: str = "USA"  # codecarbon's tracker wants one
    project_name: str = "TTA"
    codecarbon_dir: Path = Path(".")  # codecarbon's tracker insists on an existing output_dir
    cpu_tdp_watts: float | None = None
    ram_watts: float | None = None
    gpu: str = "auto"  # "auto", "on" or "off"


def select_source(settings: SourceSettings) -> tuple[EnergySource, str]:
    """Return the source and a one-line reason for the choice.

    ``auto`` prefers our own RAPL reader: it is exact and costs one read per
    zone per interval. Without a readable RAPL tree (VMs, or energy_uj still
    root-only) it falls back to the CPU-load x TDP estimate computed from
    /proc/stat, which is codecarbon's model without the cost of running
    codecarbon's tracker (docs/energy-sources.md has the figures).
    ``codecarbon`` runs codecarbon's EmissionsTracker itself (GPUs included, its way).

    ``gpu`` adds NVIDIA GPUs through NVML to the RAPL / cpu_load_tdp source: ``auto``
    when NVML initialises and lists at least one GPU, ``on`` always (the source is then
    unavailable without NVML), ``off`` never. See docs/gpu.md.
    """
    cpu, reason = _cpu_source(settings)
    if settings.energy_source == "codecarbon" or settings.gpu == "off":
        return cpu, reason
    if settings.gpu == "auto":
        present, why = nvml_available()
        if not present:
            return cpu, f"{reason}; no GPU ({why})"
        return CompositeSource(cpu, NvmlSource()), f"{reason}; {why}"
    return CompositeSource(cpu, NvmlSource()), f"{reason}; NVML (gpu: on)"


def _cpu_source(s: SourceSettings) -> tuple[EnergySource, str]:
    readable, why = rapl_readable(s.powercap_root)
    if s.energy_source == "rapl" or (s.energy_source == "auto" and readable):
        return RaplSource(s.powercap_root), f"RAPL counters under {s.powercap_root}"
    if s.energy_source == "codecarbon":
        cpu_method = "rapl" if readable else "cpu_load_tdp"
        source = CodecarbonSource(s.country_iso_code, s.project_name, str(s.codecarbon_dir), cpu_method=cpu_method)
        return source, "codecarbon EmissionsTracker (configured)"
    reason = "configured" if s.energy_source == "cpu_load_tdp" else f"no readable RAPL ({why})"
    return CpuLoadTdpSource(s.cpu_tdp_watts, s.ram_watts), f"CPU-load x TDP estimate: {reason}"
