"""NVIDIA GPU energy through NVML (``pynvml``, shipped as ``nvidia-ml-py``, a codecarbon dependency).

Per GPU, one of two methods, chosen at ``open()``:

- ``nvml`` (measured): ``nvmlDeviceGetTotalEnergyConsumption``, a millijoule counter
  kept by the driver since it loaded (Volta and newer). The interval's energy is the
  counter's difference: exact to 1 mJ, however the power moved in between.
- ``nvml_power`` (sampled): GPUs without that counter (``NVMLError_NotSupported``,
  pre-Volta) report only ``nvmlDeviceGetPowerUsage``, the board's power in mW right now
  (itself averaged by the driver over a short window). We sample it every
  ``power_sample_interval_s`` seconds (the daemon calls :meth:`NvmlSource.sample` between
  intervals) and integrate with the trapezoid rule on the monotonic clock. Power changes
  between samples are missed or smeared, so this is an estimate (``estimated: true``).

Device keys are ``gpu0``, ``gpu1`` ... in NVML index order (the order of
``nvidia-smi``, not necessarily CUDA's). All GPUs add up to component ``gpu``; when
GPUs use different methods the component says ``nvml_power`` (the weaker one), and
``energy_assumptions.gpu`` names each GPU's method.

pynvml is imported in :meth:`open`, never at module import: on machines without the
NVIDIA driver (the common case) ``nvmlInit`` raises ``NVMLError_LibraryNotFound`` or
``NVMLError_DriverNotLoaded`` and the source is :class:`SourceUnavailable` with a
one-line reason.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from src.components.carbon.record import ComponentEnergy, DeviceInfo, IntervalEnergy, SourceUnavailable
from src.components.carbon.sources import SourceDefaults

METHOD_COUNTER = "nvml"
METHOD_POWER = "nvml_power"
DEFAULT_POWER_SAMPLE_S = 1.0
_MJ_PER_J = 1000


class NvmlReadError(RuntimeError):
    """A GPU could not be read now (GPU lost, driver reset). No state changed."""


@dataclass(slots=True)
class _Gpu:
    index: int
    key: str  # "gpu0"
    name: str
    handle: Any
    method: str
    last_mj: int = 0  # counter path: last counter reading
    pending_mj: int = 0  # counter path: energy read but not yet returned
    last_w: float = 0.0  # power path: last sample
    last_t: float = 0.0  # power path: when it was taken (monotonic)
    pending_j: float = 0.0  # power path: integrated but not yet returned


class NvmlSource(SourceDefaults):
    """Energy per interval for every NVIDIA GPU NVML lists."""

    name = "nvml"

    def __init__(self, power_sample_interval_s: float = DEFAULT_POWER_SAMPLE_S) -> None:
        self.power_sample_interval_s = power_sample_interval_s
        self._nvml: Any = None
        self._gpus: list[_Gpu] | None = None
        self._lock = threading.Lock()

    # -- lifecycle --------------------------------------------------------------

    def open(self) -> None:
        nvml = _init_nvml()
        try:
            count = nvml.nvmlDeviceGetCount()
            if count < 1:
                raise SourceUnavailable("NVML unavailable: the driver reports no GPU")
            gpus = [_open_gpu(nvml, i) for i in range(count)]
        except SourceUnavailable:
            _shutdown(nvml)
            raise
        except nvml.NVMLError as exc:
            _shutdown(nvml)
            raise SourceUnavailable(f"NVML unavailable: {type(exc).__name__}: {exc}") from None
        with self._lock:
            self._nvml, self._gpus = nvml, gpus

    def sample(self) -> None:
        """Take a power sample on ``nvml_power`` GPUs (and fold counters); ends no interval."""
        with self._lock:
            self._sample_locked()

    def read_interval(self) -> IntervalEnergy:
        with self._lock:
            self._sample_locked()
            return self._drain_locked()

    def close(self) -> IntervalEnergy:
        """The tail since the last read, then ``nvmlShutdown``; closed even if the read fails."""
        with self._lock:
            if self._gpus is None:
                return IntervalEnergy(components={})
            try:
                self._sample_locked()
                return self._drain_locked()
            finally:
                self._gpus = None
                _shutdown(self._nvml)
                self._nvml = None

    # -- introspection ----------------------------------------------------------

    @property
    def devices(self) -> tuple[DeviceInfo, ...]:
        """One entry per GPU, in NVML index order: key ``gpu0``, kind ``gpu``, the product name."""
        return tuple(DeviceInfo(g.key, "gpu", g.index, g.name, "gpu") for g in self._require_open())

    @property
    def methods(self) -> dict[str, str]:
        """Device key -> ``nvml`` or ``nvml_power``."""
        return {g.key: g.method for g in self._require_open()}

    @property
    def max_sample_interval_s(self) -> float | None:
        """How often :meth:`sample` must run: only GPUs without an energy counter need it."""
        if any(g.method == METHOD_POWER for g in self._require_open()):
            return self.power_sample_interval_s
        return None

    # -- internals --------------------------------------------------------------

    def _require_open(self) -> list[_Gpu]:
        if self._gpus is None:
            raise RuntimeError("NvmlSource is not open")
        return self._gpus

    def _sample_locked(self) -> None:
        gpus = self._require_open()
        nvml = self._nvml
        # Read everything first so a failure changes nothing (the next read covers the gap).
        readings: list[tuple[int, float]] = []
        try:
            for g in gpus:
                if g.method == METHOD_COUNTER:
                    readings.append((int(nvml.nvmlDeviceGetTotalEnergyConsumption(g.handle)), 0.0))
                else:
                    readings.append((int(nvml.nvmlDeviceGetPowerUsage(g.handle)), time.monotonic()))
        except nvml.NVMLError as exc:
            raise NvmlReadError(f"NVML read failed on gpu{len(readings)}: {type(exc).__name__}: {exc}") from None
        for g, (value, t) in zip(gpus, readings, strict=True):
            if g.method == METHOD_COUNTER:
                # The counter only restarts (lower value) when the driver reloads or the GPU
                # resets; then the new reading is the energy since that restart.
                g.pending_mj += value - g.last_mj if value >= g.last_mj else value
                g.last_mj = value
            else:
                watts = value / 1000.0
                g.pending_j += (g.last_w + watts) / 2.0 * max(0.0, t - g.last_t)
                g.last_w, g.last_t = watts, t

    def _drain_locked(self) -> IntervalEnergy:
        gpus = self._require_open()
        devices: dict[str, float] = {}
        for g in gpus:
            if g.method == METHOD_COUNTER:
                devices[g.key] = g.pending_mj / _MJ_PER_J
                g.pending_mj = 0
            else:
                devices[g.key] = g.pending_j
                g.pending_j = 0.0
        methods = {g.method for g in gpus}
        method = METHOD_COUNTER if methods == {METHOD_COUNTER} else METHOD_POWER
        basis = "; ".join(
            f"{g.key} ({g.name}): "
            + ("total-energy counter" if g.method == METHOD_COUNTER
               else f"power sampled every {self.power_sample_interval_s:g} s, trapezoid")
            for g in gpus
        )
        return IntervalEnergy(
            components={"gpu": ComponentEnergy(sum(devices.values()), method)},
            devices=devices,
            assumptions={"gpu": basis} if method == METHOD_POWER else {},
        )


def nvml_available() -> tuple[bool, str]:
    """(True, what would be measured) or (False, one-line reason), for ``gpu: auto``."""
    source = NvmlSource()
    try:
        source.open()
    except SourceUnavailable as exc:
        return False, str(exc)
    try:
        return True, "NVML: " + ", ".join(f"{g.key} {g.name} ({g.method})" for g in source._require_open())
    finally:
        source.close()


# -- pynvml calls -------------------------------------------------------------------


def _init_nvml() -> Any:
    try:
        import pynvml
    except Exception as exc:  # ImportError, or a broken install raising anything
        raise SourceUnavailable(f"NVML unavailable: pynvml cannot be imported: {type(exc).__name__}: {exc}") from None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        hint = {
            "NVMLError_LibraryNotFound": " (no NVIDIA driver installed: libnvidia-ml.so.1 not found)",
            "NVMLError_DriverNotLoaded": " (NVIDIA kernel driver not loaded)",
            "NVMLError_NoPermission": " (no access to /dev/nvidia*: check DeviceAllow= in the unit)",
        }.get(type(exc).__name__, "")
        raise SourceUnavailable(f"NVML unavailable: {type(exc).__name__}: {exc}{hint}") from None
    return pynvml


def _open_gpu(nvml: Any, index: int) -> _Gpu:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    name = nvml.nvmlDeviceGetName(handle)
    if isinstance(name, bytes):  # older pynvml returns bytes
        name = name.decode(errors="replace")
    gpu = _Gpu(index=index, key=f"gpu{index}", name=str(name), handle=handle, method=METHOD_COUNTER)
    try:
        gpu.last_mj = int(nvml.nvmlDeviceGetTotalEnergyConsumption(handle))
    except nvml.NVMLError_NotSupported:
        gpu.method = METHOD_POWER
        gpu.last_w = nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0
        gpu.last_t = time.monotonic()
    return gpu


def _shutdown(nvml: Any) -> None:
    try:
        nvml.nvmlShutdown()
    except Exception:  # nothing useful to do about a failed shutdown
        pass
