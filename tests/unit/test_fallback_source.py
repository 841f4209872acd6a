"""FallbackSource with the real parts: codecarbon's tracker preferred, our CPU-load estimate as the fallback.

The only fault injected is at codecarbon's API boundary: its tracker's flush() delivering nothing,
which is how codecarbon reports a failed measurement (it swallows its own exceptions).
"""
from __future__ import annotations

import logging
import time

import pytest

from src.components.carbon.sources.codecarbon_tracker import CodecarbonSource
from src.components.carbon.sources.cpu_estimate import CpuLoadTdpSource
from src.components.carbon.sources.fallback import FallbackSource


def make(ram_only: bool = False) -> FallbackSource:
    components = ("ram",) if ram_only else ("cpu", "ram")
    return FallbackSource(
        lambda: CodecarbonSource("FRA", "test", "/tmp", components=components),
        CpuLoadTdpSource(components=components), labels=lambda tracker: tracker.methods)


def wait_preferred(source: FallbackSource, timeout: float = 30) -> None:
    """Until the tracker has taken over (it builds for a few seconds on its own thread)."""
    deadline = time.monotonic() + timeout
    while not isinstance(source._active, CodecarbonSource):
        assert time.monotonic() < deadline, source.degradation
        time.sleep(0.05)


def test_handover_counts_every_second_once_then_a_failed_flush_costs_one_interval(caplog):
    caplog.set_level(logging.WARNING, logger="tta.sources")
    source = make()
    t0 = time.monotonic()
    source.open()
    assert source.name == "codecarbon" and source.degradation == ""  # preferred while it builds
    assert source.max_sample_interval_s == 1.0  # the estimate counts (and samples) meanwhile
    wait_preferred(source)
    assert source.degradation == "" and source.max_sample_interval_s is None
    time.sleep(1.0)
    first = source.read_interval()
    # The estimate's energy up to the handover is carried in, under codecarbon's labels: the RAM
    # model is 20 W-class on both sides, so the joules cover exactly the time since open().
    assert {c: e.method for c, e in first.components.items()} == {"cpu": "codecarbon_cpu_load",
                                                                   "ram": "codecarbon_ram_model"}
    ram_w = first.components["ram"].joules / (time.monotonic() - t0)
    estimate = CpuLoadTdpSource()
    estimate.open()
    assert ram_w == pytest.approx(estimate.ram.watts, rel=0.02)

    tracker = source._active
    assert isinstance(tracker, CodecarbonSource)
    tracker._tracker.flush = lambda: None  # codecarbon: flush() delivers nothing when its measurement fails
    with pytest.raises(Exception, match="delivered no measurement"):
        source.read_interval()
    assert source.name == "cpu_load_tdp"
    assert source.degradation.startswith("codecarbon failed mid-run (MeasurementFailed: ")
    assert source.degradation.endswith("; using cpu_load_tdp")
    time.sleep(0.3)
    after = source.read_interval()
    assert {c: e.method for c, e in after.components.items()} == {"cpu": "cpu_load_tdp", "ram": "constant"}
    assert after.components["ram"].joules > 0
    assert [r.message for r in caplog.records].count(f"energy source degraded: {source.degradation}") == 1

    source.recover()  # SIGHUP: codecarbon again
    wait_preferred(source)
    assert source.degradation == ""
    time.sleep(0.3)
    assert source.read_interval().components["cpu"].method == "codecarbon_cpu_load"
    tail = source.close()
    assert tail.components["ram"].method == "codecarbon_ram_model"


def test_close_while_the_tracker_builds_leaves_no_tracker_running():
    source = make(ram_only=True)
    source.open()
    tail = source.close()  # before the tracker is ready: the estimate's tail
    assert tail.components["ram"].method == "constant" and set(tail.components) == {"ram"}
    builder = source._building
    assert builder is not None
    builder.join(30)
    assert not builder.is_alive()
    assert not isinstance(source._active, CodecarbonSource)  # built after close(): stopped at once, not kept
