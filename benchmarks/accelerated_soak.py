#!/usr/bin/env python3
"""RSS growth per interval in accelerated time, for one side of the benchmark.

    python benchmarks/accelerated_soak.py default --intervals 172800
    python benchmarks/accelerated_soak.py lean --intervals 172800
    python benchmarks/accelerated_soak.py codecarbon --intervals 172800

Drives the per-interval path back to back, as fast as it runs, and prints one JSON line:
intervals, RSS after warm-up, RSS at the end, growth. A wall-clock window of minutes cannot
resolve a leak of bytes per interval (RSS moves in pages and allocator arenas), so run.py uses
this for the "growth per 30 simulated days" row.

- default: ``CarbonComponent.measure_once()`` with the default ``auto`` source, i.e. exactly what
  the daemon runs each interval on this machine (source read, accounting, per-unit attribution,
  NDJSON append, ledger save, metrics render). Output and state on /dev/shm so the figure is the
  process's memory, not the disk. ``auto`` builds codecarbon's tracker on a background thread
  after start (our CPU-load estimate counts until then), so the loop first waits for a record
  whose energy_method names codecarbon (``codecarbon_cpu_load`` here): the warm-up baseline is
  then taken with the tracker running, and its construction is not counted as growth.
- lean: the same with ``energy_source: cpu_load_tdp`` (our CPU-load estimate, no codecarbon).
- codecarbon: ``OfflineEmissionsTracker.flush()``, its public call that measures power and energy
  and computes emissions, which is what ``codecarbon monitor``'s loop does each interval. Its
  1 Hz utilisation sampler grows with wall time, not with intervals, so accelerated time does not
  show that part (run.py reports a time-based bound for it separately).
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]


def rss_kib() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


TRACKER_TIMEOUT_S = 120.0
Setup = tuple[Callable[[int], None], Callable[[], None], dict[str, float]]


def uses_tracker(methods: dict[str, str]) -> bool:
    """A record measured by codecarbon's tracker (cpu ``codecarbon_cpu_load`` on a machine without RAPL)."""
    return any(m.startswith("codecarbon_") for m in methods.values())


def ours_step(tmp: Path, energy_source: str) -> Setup:
    import time

    sys.path.insert(0, str(REPO))
    from src.components.carbon_component import CarbonComponent
    from src.orchestration import TTAConfig

    cfg = TTAConfig.load({"output_dir": tmp / "out", "state_dir": tmp / "state", "log_file": None,
                          "energy_source": energy_source, "measurement_interval": 15, "country_iso_code": "FRA",
                          "config_file": "/dev/null", "env_file": "/dev/null"}, environ={})
    comp = CarbonComponent(cfg)
    t0 = time.monotonic()
    report = comp.start(serve_metrics=False)
    out = comp.output_dir
    info = {"tracker_wait_s": 0.0, "pre_tracker_intervals": 0}
    if energy_source == "auto" and "codecarbon" in report.source:
        # Not counted: the tracker is still being built on its background thread.
        while True:
            record = comp.measure_once().record
            if record is not None and uses_tracker(record.energy_method):
                break
            info["pre_tracker_intervals"] += 1
            if time.monotonic() - t0 > TRACKER_TIMEOUT_S:
                comp.stop()
                raise RuntimeError(f"codecarbon's tracker did not take over within {TRACKER_TIMEOUT_S:g} s "
                                   f"(last energy_method {record.energy_method if record else None})")
            time.sleep(0.1)
        info["tracker_wait_s"] = time.monotonic() - t0

    def step(i: int) -> None:
        if comp.measure_once().record is None:
            raise RuntimeError(f"interval {i} produced no record")
        if i % 5000 == 4999:  # logrotate's job; keeps /dev/shm small
            for p in out.glob("emissions_*.json"):
                p.unlink()

    return step, comp.stop, info


def codecarbon_step(tmp: Path) -> Setup:
    import logging

    from codecarbon import OfflineEmissionsTracker

    logging.getLogger("codecarbon").setLevel(logging.ERROR)
    tracker = OfflineEmissionsTracker(country_iso_code="FRA", measure_power_secs=15, save_to_file=False,
                                      output_dir=str(tmp), log_level="error")
    tracker.start()

    def step(i: int) -> None:
        tracker.flush()

    return step, tracker.stop, {}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("side", choices=["default", "lean", "codecarbon"])
    ap.add_argument("--intervals", type=int, default=20_000)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tta-bench-soak-", dir="/dev/shm"))
    try:
        if args.side == "codecarbon":
            step, close, info = codecarbon_step(tmp)
        else:
            step, close, info = ours_step(tmp, "auto" if args.side == "default" else "cpu_load_tdp")
        n = args.intervals
        warm = min(2000, n // 10)
        rss0 = 0
        for i in range(n):
            step(i)
            if i == warm:
                gc.collect()
                rss0 = rss_kib()
        gc.collect()
        rss1 = rss_kib()
        close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({"side": args.side, "intervals": n, "measured_intervals": n - warm - 1,
                      "rss_after_warmup_kib": rss0, "rss_end_kib": rss1, "growth_kib": rss1 - rss0, **info}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
