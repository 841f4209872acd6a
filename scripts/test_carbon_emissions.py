#!/usr/bin/env python3
"""Verify emissions tracking end to end (the deployment guide's `uv run python scripts/test_carbon_emissions.py`).

Runs a short, real tracking session with the configured settings (TTAConfig:
/etc/tta/staging, env overrides) but writes into a temporary directory, so the
production ledger and files are untouched. Checks each record and prints a
summary. Exit 0 when the records are sound, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.components.carbon_component import CarbonComponent  # noqa: E402
from src.orchestration import ConfigError, TTAConfig  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--intervals", type=int, default=3, choices=range(1, 61), metavar="N",
                        help="measurements to take (1-60, default 3)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between measurements (default 1)")
    args = parser.parse_args()
    try:
        base = TTAConfig()
    except ConfigError as exc:
        print(f"❌ Configuration: invalid: {exc}")
        return 1
    with tempfile.TemporaryDirectory(prefix="tta-carbon-test-") as tmp:
        cfg = base.model_copy(update={"output_dir": Path(tmp) / "out", "state_dir": Path(tmp) / "state",
                                      "measurement_interval": args.interval})
        carbon = CarbonComponent(cfg)
        carbon.start(serve_metrics=False)
        if not carbon.health.tracker_available:
            print(f"❌ Energy source unavailable: {carbon.health.tracker_error}")
            carbon.stop()
            return 1
        for _ in range(args.intervals):
            time.sleep(args.interval)
            carbon.measure_once()
        carbon.stop()
        lines = [json.loads(line) for p in sorted(cfg.output_dir.glob("emissions_*.json"))
                 for line in p.read_text().splitlines()]
    problems = []
    if len(lines) != args.intervals + 1:
        problems.append(f"expected {args.intervals + 1} records (with the final one), found {len(lines)}")
    if [r["seq"] for r in lines] != list(range(1, len(lines) + 1)):
        problems.append("sequence numbers are not 1..N")
    if lines and not lines[-1]["final"]:
        problems.append("last record is not marked final")
    for r in lines:
        # The final record covers only the few ms since the last interval; it may round to zero.
        if r["energy_j"]["total"] <= 0 and not r["final"]:
            problems.append(f"record {r['seq']}: no energy")
        expected = r["energy_kwh"]["total"] * r["carbon_intensity_g_per_kwh"]
        if abs(r["emissions_g"]["total"] - expected) > 1e-9 * max(1.0, expected):
            problems.append(f"record {r['seq']}: emissions do not equal energy x intensity")
    total_j = sum(r["energy_j"]["total"] for r in lines)
    total_g = sum(r["emissions_g"]["total"] for r in lines)
    seconds = sum(r["duration_s"] for r in lines)
    print(f"Records: {len(lines)} over {seconds:.1f}s, method {lines[-1]['energy_method'] if lines else '-'}")
    print(f"Energy: {total_j:.1f} J ({total_j / 3.6e6:.9f} kWh), average {total_j / max(seconds, 1e-9):.1f} W")
    print(f"Emissions: {total_g:.6f} gCO2eq at {lines[-1]['carbon_intensity_g_per_kwh'] if lines else 0} g/kWh "
          f"({lines[-1]['intensity_source'] if lines else '-'})")
    for p in problems:
        print(f"❌ {p}")
    print("✅ Emissions tracking: OK" if not problems else "❌ Emissions tracking: FAILED")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
