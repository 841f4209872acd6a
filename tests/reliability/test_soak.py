"""Months of intervals in accelerated time: RSS must not grow with the number of intervals."""

from __future__ import annotations

import gc
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from tests.fixtures.fake_rapl import FakeRapl
from tests.reliability.conftest import FULL

DAYS_30 = 30 * 24 * 3600 // 15  # 172,800 intervals of 15 s


def _rss_kib() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError


@pytest.fixture
def shm_dir():
    """Output and state on tmpfs (/dev/shm): fsync is free there, so the soak measures the daemon, not the disk."""
    d = Path(tempfile.mkdtemp(prefix="tta-soak-", dir="/dev/shm"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _component(tmp: Path, source: str, powercap: Path):
    from src.components.carbon_component import CarbonComponent
    from src.orchestration import TTAConfig

    cfg = TTAConfig.load({"output_dir": tmp / "out", "state_dir": tmp / "state", "log_file": None,
                          "energy_source": source, "powercap_root": powercap, "measurement_interval": 15,
                          "country_iso_code": "FRA", "config_file": "/dev/null", "env_file": "/dev/null"}, environ={})
    comp = CarbonComponent(cfg)
    comp.start(serve_metrics=False)
    return comp


def _soak(comp, n: int, step) -> dict:
    out = comp.output_dir
    warm = min(2000, n // 10)
    for i in range(n):
        step(i)
        assert comp.measure_once().record is not None
        if i == warm:
            gc.collect()
            rss0 = _rss_kib()
        if i % 5000 == 4999:
            for p in out.glob("emissions_*.json"):  # logrotate's job; keeps /dev/shm small
                p.unlink()
    gc.collect()
    growth = _rss_kib() - rss0
    return {"intervals": n, "rss_after_warmup_kib": rss0, "rss_growth_kib": growth,
            "growth_bytes_per_interval": round(growth * 1024 / (n - warm), 3)}


def test_soak_rapl_source(shm_dir, figures):
    """RAPL source on a fake powercap tree, 20,000 intervals (172,800 = 30 days at 15 s with TTA_FULL_SOAK=1): RSS growth bounded, totals exact."""
    n = DAYS_30 if FULL else 20_000
    rapl = FakeRapl(shm_dir / "powercap", dram=True)
    comp = _component(shm_dir, "rapl", shm_dir / "powercap")
    res = _soak(comp, n, lambda i: rapl.advance(15, {"package-0": 42.0, "package-0/core": 30.0, "package-0/dram": 3.0}))
    t = comp._accountant.totals
    assert t.seq == n
    assert t.energy_j["cpu"] + t.energy_j["ram"] == pytest.approx(45.0 * 15 * n, rel=1e-6)
    comp.stop()
    assert res["rss_growth_kib"] < 8 * 1024, res  # 8 MiB for 20k..173k intervals: no per-interval leak
    figures.update(**res, energy_error_rel=abs(t.energy_j["cpu"] + t.energy_j["ram"] - 45.0 * 15 * n) / (45.0 * 15 * n))


def test_soak_codecarbon_source(shm_dir, figures):
    """codecarbon source, 2,000 intervals (20,000 with TTA_FULL_SOAK=1), tracker recycled every ~200: RSS growth bounded."""
    n = 20_000 if FULL else 2_000
    comp = _component(shm_dir, "codecarbon", shm_dir / "none")
    src = comp._source

    def step(i):  # recycle the tracker every 200 intervals (every hour at 15 s would be 240)
        src._recycle_after_s = 0.0 if i % 200 == 199 else 10**9

    res = _soak(comp, n, step)
    comp.stop()
    assert res["rss_growth_kib"] < 16 * 1024, res
    figures.update(**res, recycles=n // 200)


def test_soak_default_source(shm_dir, figures):
    """What `auto` runs on these VMs: codecarbon's EmissionsTracker (flush() every interval) plus per-unit
    attribution on the host's real cgroup tree, 20,000 intervals (172,800 = 30 days at 15 s with TTA_FULL_SOAK=1)."""
    n = DAYS_30 if FULL else 20_000
    comp = _component(shm_dir, "auto", shm_dir / "none")
    assert comp.health.energy_source == "codecarbon"
    deadline = time.monotonic() + 30
    while comp.measure_once().record.energy_method.get("cpu") != "codecarbon_cpu_load":  # tracker built after start
        assert time.monotonic() < deadline and not comp.health.energy_source_degraded, comp.health
        time.sleep(0.1)
    res = _soak(comp, n, lambda i: None)
    assert comp._accountant.totals.seq >= n
    comp.stop()
    assert res["rss_growth_kib"] < 5 * 1024, res  # the bound: 5 MB over 30 days
    figures.update(**res)
