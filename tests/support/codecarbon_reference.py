"""codecarbon's own OfflineEmissionsTracker, run as users run it, as the reference for fidelity tests.

Usage: ``python -m tests.support.codecarbon_reference SECONDS COUNTRY``. Starts the tracker
(its default 1 Hz monitor and 15 s measurement), prints ``{"event": "started", "t": <wall>}``,
runs for SECONDS, stops, and prints ``{"event": "stopped", "t": ..., "cpu_w": ..., "ram_w": ...,
"duration_s": ...}``: average powers from codecarbon's own energy and duration figures.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import time


def main() -> None:
    seconds, country = float(sys.argv[1]), sys.argv[2]
    from codecarbon import OfflineEmissionsTracker

    logging.getLogger("codecarbon").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as out:
        tracker = OfflineEmissionsTracker(country_iso_code=country, output_dir=out, save_to_file=False,
                                          log_level="error", allow_multiple_runs=True, tracking_mode="machine")
        tracker.start()
        t0 = time.monotonic()
        print(json.dumps({"event": "started", "t": time.time()}), flush=True)
        time.sleep(seconds)
        tracker.stop()
        data = tracker.final_emissions_data
        # codecarbon's own duration: the wall time around stop() includes its shutdown, after
        # its last measurement, and would read its constant RAM model ~1 % low.
        duration = float(data.duration) if data.duration else time.monotonic() - t0
        print(json.dumps({"event": "stopped", "t": time.time(), "duration_s": duration,
                          "cpu_w": data.cpu_energy * 3.6e6 / duration, "ram_w": data.ram_energy * 3.6e6 / duration}),
              flush=True)


if __name__ == "__main__":
    main()
