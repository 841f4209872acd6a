"""Choose the energy source the configuration asks for."""

from __future__ import annotations

from pathlib import Path

from src.components.carbon.sources import EnergySource
from src.components.carbon.sources.codecarbon_tracker import CodecarbonSource
from src.components.carbon.sources.composite import CompositeSource
from src.components.carbon.sources.cpu_estimate import CpuLoadTdpSource
from src.components.carbon.sources.nvml import NvmlSource, nvml_available
from src.components.carbon.sources.rapl import RaplSource, rapl_readable


def select_source(
    energy_source: str,
    powercap_root: Path,
    country_iso_code: str,
    project: str,
    output_dir: Path,
    cpu_tdp_watts: float | None = None,
    ram_watts: float | None = None,
    gpu: str = "auto",
) -> tuple[EnergySource, str]:
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
    cpu, reason = _cpu_source(
        energy_source, powercap_root, country_iso_code, project, output_dir, cpu_tdp_watts, ram_watts
    )
    if energy_source == "codecarbon" or gpu == "off":
        return cpu, reason
    if gpu == "auto":
        present, why = nvml_available()
        if not present:
            return cpu, f"{reason}; no GPU ({why})"
        return CompositeSource(cpu, NvmlSource()), f"{reason}; {why}"
    return CompositeSource(cpu, NvmlSource()), f"{reason}; NVML (gpu: on)"


def _cpu_source(
    energy_source: str,
    powercap_root: Path,
    country_iso_code: str,
    project: str,
    output_dir: Path,
    cpu_tdp_watts: float | None,
    ram_watts: float | None,
) -> tuple[EnergySource, str]:
    readable, why = rapl_readable(powercap_root)
    if energy_source == "rapl" or (energy_source == "auto" and readable):
        return RaplSource(powercap_root), f"RAPL counters under {powercap_root}"
    if energy_source == "codecarbon":
        cpu_method = "rapl" if readable else "cpu_load_tdp"
        source = CodecarbonSource(country_iso_code, project, str(output_dir), cpu_method=cpu_method)
        return source, "codecarbon EmissionsTracker (configured)"
    reason = "configured" if energy_source == "cpu_load_tdp" else f"no readable RAPL ({why})"
    return CpuLoadTdpSource(cpu_tdp_watts, ram_watts), f"CPU-load x TDP estimate: {reason}"
