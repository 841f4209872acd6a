"""Choose the energy source the settings ask for."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from src.components.carbon.secret import Secret
from src.components.carbon.sources import EnergySource
from src.components.carbon.sources.codecarbon_tracker import CodecarbonSource
from src.components.carbon.sources.composite import CompositeSource
from src.components.carbon.sources.cpu_estimate import CpuLoadTdpSource
from src.components.carbon.sources.fallback import FallbackSource
from src.components.carbon.sources.hwmon import HwmonMeter, platform_meters
from src.components.carbon.sources.nvml import NvmlSource, nvml_available
from src.components.carbon.sources.platform import DEFAULT_MAX_WATTS, PlatformSource, PowerMeter
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
    # The platform meter (docs/platform-power.md): "auto" (a hwmon power meter when present),
    # "off", "hwmon", "ipmi_dcmi" or "redfish" (the BMC ones only when asked for).
    platform_meter: str = "auto"
    hwmon_root: Path = Path("/sys/class/hwmon")
    hwmon_device: str = ""  # a hwmon device's name or hwmonN; "" = the first platform meter found
    platform_sample_s: float | None = None  # None: the meter's default (1 s hwmon, 5 s BMC)
    platform_max_watts: float = DEFAULT_MAX_WATTS
    ipmi_host: str = ""  # "" = the local BMC, in-band
    ipmi_port: int = 623
    ipmi_user: str = ""
    ipmi_password: Secret | None = None
    redfish_url: str = ""  # https://bmc.example (the service root's host); its Chassis are searched
    redfish_user: str = ""
    redfish_password: Secret | None = None
    redfish_ca_file: Path | None = None  # CA bundle for the BMC's certificate; None = the system's
    redfish_verify_tls: bool = True


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
    platform, platform_why = _platform_source(settings)
    if settings.energy_source == "auto":
        source, reason = _auto_source(settings, platform)
    else:
        cpu, reason = _cpu_source(settings)
        gpu, why = (None, "") if settings.energy_source == "codecarbon" else _gpu_source(settings)
        parts = [p for p in (cpu, platform, gpu) if p is not None]
        source = parts[0] if len(parts) == 1 else CompositeSource(*parts)
        reason = f"{reason}; {why}" if why else reason
    return source, f"{reason}; {platform_why}" if platform_why else reason


def _platform_source(s: SourceSettings) -> tuple[PlatformSource | None, str]:
    """The platform meter the settings ask for, or None; the reason for the choice."""
    meter: PowerMeter
    if s.platform_meter == "off":
        return None, ""
    if s.platform_meter in ("auto", "hwmon"):
        found = platform_meters(s.hwmon_root, s.hwmon_device)
        if not found and s.platform_meter == "auto":
            return None, "no platform meter"
        wanted = f"hwmon device {s.hwmon_device!r}" if s.hwmon_device else "a hwmon power meter"
        meter = HwmonMeter(found[0] if found else None,
                           missing=f"platform_meter is hwmon but {wanted} with energy1_input, power1_average or "
                                   f"power1_input was not found under {s.hwmon_root}")
    elif s.platform_meter == "ipmi_dcmi":
        from src.components.carbon.sources.ipmi_dcmi import IpmiDcmiMeter  # a BMC: only when configured

        meter = IpmiDcmiMeter(s.ipmi_host, s.ipmi_user, s.ipmi_password, port=s.ipmi_port)
    elif s.platform_meter == "redfish":
        from src.components.carbon.sources.redfish import RedfishMeter  # a BMC: only when configured

        meter = RedfishMeter(s.redfish_url, s.redfish_user, s.redfish_password, ca_file=s.redfish_ca_file,
                             verify_tls=s.redfish_verify_tls)
    else:  # TTAConfig allows only the names above
        raise ValueError(f"unknown platform_meter {s.platform_meter!r}")
    source = PlatformSource(meter, period_s=s.platform_sample_s, max_watts=s.platform_max_watts)
    return source, f"platform: {meter.method} {meter.device.name}"


def _gpu_source(s: SourceSettings) -> tuple[NvmlSource | None, str]:
    if s.gpu == "off":
        return None, "gpu: off"
    if s.gpu == "on":
        return NvmlSource(), "NVML (gpu: on)"
    present, why = nvml_available()
    return (NvmlSource(), why) if present else (None, f"no GPU ({why})")


def _auto_source(s: SourceSettings, platform: PlatformSource | None) -> tuple[EnergySource, str]:
    parts: list[EnergySource] = []
    reasons: list[str] = []
    measured = rapl_components(s.powercap_root)
    if measured:
        parts.append(RaplSource(s.powercap_root))
        reasons.append(f"RAPL counters under {s.powercap_root} for {', '.join(sorted(measured))}")
    if platform is not None:  # next to the counters: read right at the boundary too
        parts.append(platform)
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
