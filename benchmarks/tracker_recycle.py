"""CPU of one hourly tracker recycle in the default mode (run by benchmarks/run.py).

    uv run python benchmarks/tracker_recycle.py [N]

``CodecarbonSource`` replaces codecarbon's tracker every hour to bound its sample history
(see its docstring): ``stop()``, a new ``OfflineEmissionsTracker`` (hardware probing), ``start()``
and one ``flush()``. That happens once per 3600 s, so the soak's 300 s window never sees it;
this measures it on its own: a source that recycles at every read, N times, next to one that
never does.
Prints JSON: the CPU-s (all threads, ``time.process_time``) of each recycling read and of a
plain read, for comparison.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.components.carbon.sources.codecarbon_tracker import CodecarbonSource  # noqa: E402


def cpu_of(fn: Callable[[], object]) -> float:
    c = time.process_time()
    fn()
    return time.process_time() - c


def main(n: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="tta-recycle-") as td:
        recycling = CodecarbonSource("FRA", "bench", td, recycle_after_s=0.0)  # every read recycles
        plain = CodecarbonSource("FRA", "bench", td, recycle_after_s=float("inf"))
        recycling.open()
        plain.open()
        time.sleep(1.5)
        recycles, reads = [], []
        for _ in range(n):
            recycles.append(cpu_of(recycling.read_interval))
            reads.append(cpu_of(plain.read_interval))
            time.sleep(1.5)
        recycling.close()
        plain.close()
    return {"recycle_cpu_s": statistics.median(recycles), "recycles": recycles,
            "plain_read_cpu_s": statistics.median(reads)}


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)))
