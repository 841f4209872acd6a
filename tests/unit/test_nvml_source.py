"""NvmlSource, CompositeSource and the per-GPU metrics against the fake pynvml.

The fake is the real library boundary: ``import pynvml`` inside the source gets the fake
module (registered in ``sys.modules``), driven by a JSON state file. Both the fake and the
source read ``time.monotonic`` through their module's ``time``; tests swap in one manual
clock so integrals are exact and deterministic.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from src.components.carbon.accounting import Accountant, Identity
from src.components.carbon.health import HealthSnapshot
from src.components.carbon.record import ComponentEnergy, DeviceInfo, Intensity, IntervalEnergy, SourceUnavailable, Totals
from src.components.carbon.sinks.prometheus import PrometheusSink
from src.components.carbon.sources import nvml as nvml_module
from src.components.carbon.sources.composite import CompositeSource, merge
from src.components.carbon.sources.nvml import NvmlReadError, NvmlSource, nvml_available
from src.components.carbon.sources.rapl import RaplSource
from src.components.carbon.sources.select import SourceSettings, select_source
from tests.fixtures.fake_nvml import FakeGpu, FakeNvml, fake_pynvml_module
from tests.fixtures.fake_rapl import FakeRapl


def gpu_names(source) -> dict[str, str]:
    """NVML index (the metric label) -> product name, from the source's device list."""
    return {str(d.index): d.name for d in source.devices if d.kind == "gpu"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def pynvml(monkeypatch, tmp_path, clock):
    module = fake_pynvml_module()
    module.time = types.SimpleNamespace(monotonic=clock.monotonic)
    monkeypatch.setitem(sys.modules, "pynvml", module)
    monkeypatch.setattr(nvml_module, "time", types.SimpleNamespace(monotonic=clock.monotonic))
    monkeypatch.setenv("FAKE_PYNVML_STATE", str(tmp_path / "nvml.json"))
    return module


def make(tmp_path: Path, clock: Clock, gpus: list[FakeGpu], init_error: str | None = None) -> FakeNvml:
    fake = FakeNvml(tmp_path / "nvml.json", gpus, init_error=init_error)
    fake.start(at=clock.now)
    return fake


# -- unavailable -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "words"),
    [("LibraryNotFound", "libnvidia-ml.so.1 not found"), ("DriverNotLoaded", "kernel driver not loaded"),
     ("NoPermission", "DeviceAllow")],
)
def test_missing_driver_is_one_line_source_unavailable(pynvml, tmp_path, clock, error, words):
    make(tmp_path, clock, [FakeGpu()], init_error=error)
    with pytest.raises(SourceUnavailable) as info:
        NvmlSource().open()
    message = str(info.value)
    assert "\n" not in message and f"NVMLError_{error}" in message and words in message
    assert pynvml._init_count == 0
    assert nvml_available() == (False, message)


def test_no_state_file_is_library_not_found(pynvml):
    with pytest.raises(SourceUnavailable, match="NVMLError_LibraryNotFound"):
        NvmlSource().open()


def test_zero_gpus_is_unavailable_and_shuts_nvml_down(pynvml, tmp_path, clock):
    make(tmp_path, clock, [])
    with pytest.raises(SourceUnavailable, match="no GPU"):
        NvmlSource().open()
    assert pynvml.calls == ["nvmlInit", "nvmlShutdown"] and pynvml._init_count == 0


def test_pynvml_not_importable(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import raises ImportError
    with pytest.raises(SourceUnavailable, match="pynvml cannot be imported"):
        NvmlSource().open()


# -- energy counter path (measured) ----------------------------------------------------------


def test_counter_path_is_exact_per_gpu_across_power_steps(pynvml, tmp_path, clock):
    make(tmp_path, clock, [FakeGpu("NVIDIA A100", steps=[(0, 100.0), (2, 300.0)]),
                           FakeGpu("NVIDIA H100", steps=[(0, 50.0)], counter_offset_mj=7)])
    source = NvmlSource()
    source.open()
    assert source.methods == {"gpu0": "nvml", "gpu1": "nvml"} and source.max_sample_interval_s is None
    assert gpu_names(source) == {"0": "NVIDIA A100", "1": "NVIDIA H100"}
    clock.now += 1.0
    first = source.read_interval()
    assert first.devices == {"gpu0": 100.0, "gpu1": 50.0}
    assert first.components == {"gpu": ComponentEnergy(150.0, "nvml")} and first.assumptions == {}
    clock.now += 3.0  # 1 s at 100 W, 2 s at 300 W
    second = source.read_interval()
    assert second.devices == {"gpu0": 700.0, "gpu1": 150.0}
    clock.now += 0.25
    tail = source.close()
    assert tail.devices == {"gpu0": 75.0, "gpu1": 12.5}
    assert pynvml._init_count == 0 and pynvml.calls[-1] == "nvmlShutdown"
    assert source.close() == IntervalEnergy(components={})  # closing twice is harmless


def test_counter_restart_counts_the_new_reading(pynvml, tmp_path, clock):
    fake = make(tmp_path, clock, [FakeGpu(steps=[(0, 100.0)], counter_offset_mj=5_000_000)])
    source = NvmlSource()
    source.open()
    clock.now += 1.0
    assert source.read_interval().devices["gpu0"] == 100.0
    fake.gpus[0].counter_offset_mj = 0  # driver reloaded: counter restarted below our baseline
    fake.write()
    clock.now += 1.0
    assert source.read_interval().devices["gpu0"] == 200.0  # the counter's value since restart
    clock.now += 1.0
    assert source.read_interval().devices["gpu0"] == 100.0


def test_lost_gpu_raises_and_loses_nothing(pynvml, tmp_path, clock):
    fake = make(tmp_path, clock, [FakeGpu(steps=[(0, 100.0)]), FakeGpu(steps=[(0, 10.0)], energy_counter=False)])
    source = NvmlSource()
    source.open()
    clock.now += 1.0
    fake.gpus[0].lost = True
    fake.write()
    with pytest.raises(NvmlReadError, match="gpu0.*NVMLError_GpuIsLost"):
        source.read_interval()
    fake.gpus[0].lost = False
    fake.write()
    clock.now += 1.0
    assert source.read_interval().devices == {"gpu0": 200.0, "gpu1": 20.0}


# -- power sampling path (sampled, estimated) -------------------------------------------------


def test_power_path_integrates_samples_and_asks_to_be_sampled(pynvml, tmp_path, clock):
    make(tmp_path, clock, [FakeGpu("Tesla P100", steps=[(0, 80.0), (1.25, 200.0)], energy_counter=False)])
    source = NvmlSource(power_sample_interval_s=1.0)
    source.open()
    assert source.methods == {"gpu0": "nvml_power"} and source.max_sample_interval_s == 1.0
    assert "nvmlDeviceGetTotalEnergyConsumption" not in pynvml.calls
    clock.now += 0.5
    source.sample()
    clock.now += 0.5
    first = source.read_interval()
    assert first.devices == {"gpu0": pytest.approx(80.0)}
    assert first.components["gpu"].method == "nvml_power"
    assert "power sampled every 1 s" in first.assumptions["gpu"]
    clock.now += 1.0
    # True energy 0.25 s x 80 W + 0.75 s x 200 W = 170 J; samples at 1 s and 2 s see 80 and
    # 200 W, and the trapezoid gives 140 J: sampling misses what happens between samples.
    assert source.read_interval().devices["gpu0"] == pytest.approx(140.0)


def test_mixed_gpus_component_is_sampled_and_devices_add_up(pynvml, tmp_path, clock):
    make(tmp_path, clock, [FakeGpu("A100", steps=[(0, 250.0)]),
                           FakeGpu("P100", steps=[(0, 60.0)], energy_counter=False)])
    source = NvmlSource()
    source.open()
    clock.now += 2.0
    energy = source.read_interval()
    assert energy.devices == {"gpu0": 500.0, "gpu1": pytest.approx(120.0)}
    assert energy.components["gpu"].method == "nvml_power"
    assert energy.components["gpu"].joules == pytest.approx(620.0)
    assert "gpu0 (A100): total-energy counter" in energy.assumptions["gpu"]
    assert "gpu1 (P100): power sampled" in energy.assumptions["gpu"]


# -- composite and selection ------------------------------------------------------------------


def test_composite_merges_rapl_and_nvml_and_closes_both(pynvml, tmp_path, clock):
    make(tmp_path, clock, [FakeGpu(steps=[(0, 200.0)])])
    rapl = FakeRapl(tmp_path / "powercap", dram=True)
    source = CompositeSource(RaplSource(rapl.root), NvmlSource())
    assert source.name == "rapl+nvml"
    source.open()
    assert gpu_names(source) == {"0": "NVIDIA A100-SXM4-40GB"}
    rapl.advance(1.0, {"package-0": 42.0, "package-0/dram": 5.0})
    clock.now += 1.0
    energy = source.read_interval()
    assert {c: e.joules for c, e in energy.components.items()} == {"cpu": 42.0, "ram": 5.0, "gpu": 200.0}
    assert energy.devices == {"package-0": 42.0, "package-0/dram": 5.0, "gpu0": 200.0}
    clock.now += 0.5
    rapl.advance(0.5, {"package-0": 42.0})
    tail = source.close()
    assert tail.devices == {"package-0": 21.0, "package-0/dram": 0.0, "gpu0": 100.0}
    assert pynvml._init_count == 0


def test_composite_failed_part_keeps_the_others_reading(pynvml, tmp_path, clock):
    fake = make(tmp_path, clock, [FakeGpu(steps=[(0, 200.0)])])
    rapl = FakeRapl(tmp_path / "powercap")
    source = CompositeSource(RaplSource(rapl.root), NvmlSource())
    source.open()
    rapl.advance(1.0, {"package-0": 40.0})
    clock.now += 1.0
    fake.gpus[0].lost = True
    fake.write()
    with pytest.raises(NvmlReadError):
        source.read_interval()
    fake.gpus[0].lost = False
    fake.write()
    rapl.advance(1.0, {"package-0": 40.0})
    clock.now += 1.0
    energy = source.read_interval()  # both intervals, nothing counted twice
    assert energy.devices == {"package-0": 80.0, "gpu0": 400.0}


def test_composite_open_failure_closes_opened_parts(pynvml, tmp_path, clock):
    make(tmp_path, clock, [FakeGpu()], init_error="DriverNotLoaded")
    rapl = RaplSource(FakeRapl(tmp_path / "powercap").root)
    with pytest.raises(SourceUnavailable, match="DriverNotLoaded"):
        CompositeSource(rapl, NvmlSource()).open()
    with pytest.raises(RuntimeError, match="not open"):
        rapl.devices


def test_merge_refuses_one_component_two_ways():
    with pytest.raises(ValueError, match="two ways"):
        merge(IntervalEnergy({"gpu": ComponentEnergy(1.0, "nvml")}),
              IntervalEnergy({"gpu": ComponentEnergy(1.0, "nvml_power")}))


@pytest.mark.parametrize(
    ("gpu", "present", "name"),
    [("auto", True, "rapl+nvml"), ("auto", False, "rapl"), ("off", True, "rapl"), ("on", False, "rapl+nvml")],
)
def test_select_source_gpu_setting(pynvml, tmp_path, clock, gpu, present, name):
    make(tmp_path, clock, [FakeGpu()], init_error=None if present else "LibraryNotFound")
    rapl = FakeRapl(tmp_path / "powercap")
    source, reason = select_source(SourceSettings("rapl", rapl.root, "FRA", "p", tmp_path, gpu=gpu))
    assert source.name == name
    if gpu == "auto":
        assert ("gpu0 NVIDIA A100-SXM4-40GB (nvml)" in reason) is present
    if gpu == "on" and not present:
        with pytest.raises(SourceUnavailable, match="LibraryNotFound"):
            source.open()
    assert pynvml._init_count == 0  # probing left NVML shut down


@pytest.mark.parametrize(("dram", "gpus", "name"), [
    (True, 1, "rapl+nvml"),  # everything measured: codecarbon has nothing left to estimate
    (False, 1, "rapl+nvml+codecarbon"),  # RAM from codecarbon's model
    (False, 0, "rapl+codecarbon"),
])
def test_auto_uses_our_readers_where_they_measure_and_codecarbon_for_the_rest(pynvml, tmp_path, clock, dram, gpus,
                                                                                name):
    make(tmp_path, clock, [FakeGpu()] * gpus, init_error=None if gpus else "LibraryNotFound")
    rapl = FakeRapl(tmp_path / "powercap", dram=dram)
    source, reason = select_source(SourceSettings("auto", rapl.root, "FRA", "p", tmp_path))
    assert source.name == name
    assert ("codecarbon EmissionsTracker for ram" in reason) is (not dram)


def test_codecarbon_source_is_never_composed(pynvml, tmp_path, clock):
    make(tmp_path, clock, [FakeGpu()])
    source, _ = select_source(SourceSettings("codecarbon", tmp_path / "none", "FRA", "p", tmp_path, gpu="on"))
    assert source.name == "codecarbon"


# -- metrics ----------------------------------------------------------------------------------


def test_prometheus_per_gpu_power_and_energy(tmp_path):
    sink = PrometheusSink()
    sink.set_devices([DeviceInfo("gpu0", "gpu", 0, "NVIDIA A100", "gpu"), DeviceInfo("gpu1", "gpu", 1, "Tesla P100", "gpu")])
    health = HealthSnapshot(version="t", project="p", env="e", interval_s=2.0, started_at=0.0)
    accountant = Accountant(Totals())
    identity = Identity("r", None, "p", "e")
    for gpu0, gpu1 in ((500.0, 100.0), (300.0, 60.0)):
        energy = IntervalEnergy({"gpu": ComponentEnergy(gpu0 + gpu1, "nvml_power")},
                                devices={"gpu0": gpu0, "gpu1": gpu1, "package-0": 9.0})
        record = accountant.account(energy, end_wall=1e9, elapsed_s=2.0, intensity=Intensity(100.0, "fixed", ""),
                                    identity=identity)
        sink.update(health, record)
    page = sink.page().decode()
    assert 'tta_carbon_gpu_power_watts{gpu="0",name="NVIDIA A100"} 150.0' in page
    assert 'tta_carbon_gpu_power_watts{gpu="1",name="Tesla P100"} 30.0' in page
    assert 'tta_carbon_gpu_energy_joules_total{gpu="0"} 800.0' in page
    assert 'tta_carbon_gpu_energy_joules_total{gpu="1"} 160.0' in page
    assert 'tta_carbon_energy_joules_total{component="gpu"} 960.0' in page
    assert 'tta_carbon_power_watts{component="gpu"} 180.0' in page


def test_prometheus_no_gpu_no_gpu_families():
    sink = PrometheusSink()
    sink.update(HealthSnapshot(version="t", project="p", env="e", interval_s=2.0, started_at=0.0), None)
    assert "tta_carbon_gpu_" not in sink.page().decode()


def test_real_pynvml_on_a_machine_without_driver():
    """The common case here: the real nvidia-ml-py, no libnvidia-ml.so.1."""
    import ctypes.util

    if ctypes.util.find_library("nvidia-ml"):
        pytest.skip("this machine has the NVIDIA driver library")
    assert sys.modules.get("pynvml") is None or not getattr(sys.modules["pynvml"], "FAKE", False)
    ok, why = nvml_available()
    assert ok is False and why.startswith("NVML unavailable: NVMLError_LibraryNotFound") and "\n" not in why
