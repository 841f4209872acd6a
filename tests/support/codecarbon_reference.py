"""codecarbon's own OfflineEmissionsTracker, run as users run it, as the reference for fidelity tests.

Usage: ``python -m tests.support.codecarbon_reference SECONDS COUNTRY``. Starts the tracker (its
default 1 Hz monitor and 15 s measurement) and prints ``{"event": "ready"}``; waits for a line on
stdin, which opens the window; runs for SECONDS; stops, and prints ``{"event": "stopped", "t":
..., "cpu_w": ..., "ram_w": ..., "duration_s": ...}``: average powers over the window, from
codecarbon's own cumulative energy and duration figures.

The go line lets the caller open the window on a record boundary of the daemon it compares
(a daemon's records cover whole intervals, so the two windows then hold the same seconds). The
window opens with one ``flush()``: it takes the tracker's cumulative figures at that moment, at
the cost of one extra load sample in the ~SECONDS that follow (well under 0.1 % of the figure).
Starting the tracker at the go line instead would put its hardware probing (~1.4 s) inside the
window.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import time
from typing import Any

from codecarbon.output_methods.base_output import BaseOutput  # a peer process: it runs codecarbon anyway


class _Totals(BaseOutput):
    """A codecarbon output handler that keeps the last cumulative figures it was given."""

    def __init__(self) -> None:
        self.cpu_kwh = self.ram_kwh = self.duration_s = 0.0

    def out(self, total: Any, delta: Any) -> None:
        self.cpu_kwh, self.ram_kwh, self.duration_s = total.cpu_energy, total.ram_energy, float(total.duration)


def main() -> None:
    seconds, country = float(sys.argv[1]), sys.argv[2]
    from codecarbon import OfflineEmissionsTracker

    logging.getLogger("codecarbon").setLevel(logging.ERROR)
    totals = _Totals()
    with tempfile.TemporaryDirectory() as out:
        tracker = OfflineEmissionsTracker(country_iso_code=country, output_dir=out, save_to_file=False,
                                          output_handlers=[totals], log_level="error", allow_multiple_runs=True,
                                          tracking_mode="machine")
        tracker.start()
        print(json.dumps({"event": "ready"}), flush=True)
        sys.stdin.readline()
        tracker.flush()
        opened = (totals.cpu_kwh, totals.ram_kwh, totals.duration_s)
        print(json.dumps({"event": "started", "t": time.time()}), flush=True)
        time.sleep(seconds)
        tracker.stop()
        duration = totals.duration_s - opened[2]
        print(json.dumps({"event": "stopped", "t": time.time(), "duration_s": duration,
                          "cpu_w": (totals.cpu_kwh - opened[0]) * 3.6e6 / duration,
                          "ram_w": (totals.ram_kwh - opened[1]) * 3.6e6 / duration}),
              flush=True)


if __name__ == "__main__":
    main()
