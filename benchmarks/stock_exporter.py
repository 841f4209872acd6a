"""A stock prometheus-client exporter, the baseline for the /metrics scrape benchmark.

``prometheus_client.start_http_server`` (a ThreadingHTTPServer that renders the
registry on every request) serving a page of about 2 KB: the default process,
platform and GC collectors plus a few labelled families shaped like ours.

    python benchmarks/stock_exporter.py PORT

Prints ``READY <page bytes>`` on stdout once listening; exits on SIGTERM/SIGINT.
"""

from __future__ import annotations

import signal
import sys
import threading

from prometheus_client import REGISTRY, Counter, Gauge, generate_latest, start_http_server

TARGET_BYTES = 2048


def main() -> int:
    port = int(sys.argv[1])
    energy = Counter("stock_energy_joules", "Energy used", ["component"])
    power = Gauge("stock_power_watts", "Average power over the last interval", ["component"])
    for i, comp in enumerate(("cpu", "ram", "gpu")):
        energy.labels(comp).inc(1000.5 * (i + 1))
        power.labels(comp).set(3.25 * (i + 1))
    # Pad with plain gauges until the page is about TARGET_BYTES.
    n = 0
    while len(generate_latest(REGISTRY)) < TARGET_BYTES:
        Gauge(f"stock_padding_{n}_value", f"Padding gauge {n}").set(n)
        n += 1
    size = len(generate_latest(REGISTRY))
    server, thread = start_http_server(port, addr="127.0.0.1")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"READY {size}", flush=True)
    stop.wait()
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
