"""Choose the energy source the settings ask for."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from src.components.carbon.sources import EnergySource
from src.components.carbon.sources.codecarbon_tracker import CodecarbonSource
from src.components.carbon.sources.composite import CompositeSource
from src.components.carbon.sources.cpu_estimate import CpuLoadTdpSource
from src.components.carbon.sources.fallback import FallbackSource
from src.components.carbon.sources.nvml import NvmlSource, nvml_available
from src.components.carbon.sources.rapl import RaplSource, rapl_components, rapl_readable


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
    """Return the source and a one-line reason for the choice (docs/energy-sources.md).

    ``auto`` (the default) runs codecarbon's EmissionsTracker for what our own readers do not
    measure: readable RAPL counters give the CPU (and RAM where a DRAM zone exists), NVML the
    GPUs, and codecarbon the rest. Where codecarbon cannot run, the CPU-load estimate takes its
    place (graceful degradation, see sources/fallback.py). ``rapl`` and ``cpu_load_tdp`` are the
    lean readers alone; ``codecarbon`` runs codecarbon's tracker for everything, its own way.

    ``gpu`` adds NVIDIA GPUs through NVML: ``auto`` when NVML initialises and lists at least
    one GPU, ``on`` always (the source is then unavailable without NVML), ``off`` never.
    """
    if settings.energy_source == "auto":
        return _auto_source(settings)
    cpu, reason = _cpu_source(settings)
    if settings.energy_source == "codecarbon":
        return cpu, reason
    gpu, why = _gpu_source(settings)
    return (cpu, reason) if gpu is None else (CompositeSource(cpu, gpu), f"{reason}; {why}")


def _gpu_source(s: SourceSettings) -> tuple[NvmlSource | None, str]:
    if s.gpu == "off":
        return None, "gpu: off"
    if s.gpu == "on":
        return NvmlSource(), "NVML (gpu: on)"
    present, why = nvml_available()
    return (NvmlSource(), why) if present else (None, f"no GPU ({why})")


def _auto_source(s: SourceSettings) -> tuple[EnergySource, str]:
    parts: list[EnergySource] = []
    reasons: list[str] = []
    measured = rapl_components(s.powercap_root)
    if measured:
        parts.append(RaplSource(s.powercap_root))
        reasons.append(f"RAPL counters under {s.powercap_root} for {', '.join(sorted(measured))}")
    gpu, why = _gpu_source(s)
    if gpu is not None:
        parts.append(gpu)
        measured |= {"gpu"}
    reasons.append(why)
    rest = tuple(c for c in ("cpu", "ram") if c not in measured)
    if rest:
        cc_components = rest if "gpu" in measured or s.gpu == "off" else (*rest, "gpu")
        fallback = CpuLoadTdpSource(s.cpu_tdp_watts, s.ram_watts, components=rest)

        def make_tracker() -> CodecarbonSource:
            return CodecarbonSource(s.country_iso_code, s.project_name, str(s.codecarbon_dir),
                                    components=cc_components, cpu_tdp_watts=s.cpu_tdp_watts, ram_watts=s.ram_watts)

        # Last: counters are read first, right at the interval boundary; codecarbon's flush() after them.
        parts.append(FallbackSource(make_tracker, fallback, labels=lambda tracker: tracker.methods))
        reasons.insert(0, f"codecarbon EmissionsTracker for {', '.join(rest)} (CPU-load estimate until it runs, "
                          "and if it cannot)")
    source = parts[0] if len(parts) == 1 else CompositeSource(*parts)
    return source, "; ".join(reasons)


def _cpu_source(s: SourceSettings) -> tuple[EnergySource, str]:
    readable, why = rapl_readable(s.powercap_root)
    if s.energy_source == "rapl":
        return RaplSource(s.powercap_root), f"RAPL counters under {s.powercap_root}"
    if s.energy_source == "codecarbon":
        cpu_method = "codecarbon_rapl" if readable else "codecarbon_cpu_load"
        source = CodecarbonSource(s.country_iso_code, s.project_name, str(s.codecarbon_dir), cpu_method=cpu_method,
                                  cpu_tdp_watts=s.cpu_tdp_watts, ram_watts=s.ram_watts)
        return source, "codecarbon EmissionsTracker (configured)"
    return CpuLoadTdpSource(s.cpu_tdp_watts, s.ram_watts), "CPU-load x TDP estimate (configured)"
