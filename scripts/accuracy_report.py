#!/usr/bin/env python3
"""Our daemon and codecarbon's own tracker, side by side, on the same fake RAPL tree.

    sudo uv run python scripts/accuracy_report.py [--quick] [--json FILE] [--write-doc docs/accuracy.md]

Needs root: codecarbon hard-codes /sys/class/powercap, so the script re-runs itself in a
private mount namespace (``unshare --mount --propagation private``) with a tmpfs over
/sys/class, and builds the fake tree there (tests/fixtures/fake_rapl.py). Nothing leaks
to the host's mount table; the mount goes away with the namespace.

For each profile (constant 42 W; a step 20 -> 80 W), on a fresh tree whose counters wrap
every 100 J (several wraps per run) with a DRAM domain at 6 W:

- ours: the real daemon, ``tta-carbon run --set energy_source=rapl`` at 1 s intervals;
  its NDJSON records are read back;
- codecarbon: ``OfflineEmissionsTracker(measure_power_secs=1, api_call_interval=1)`` with an
  output handler collecting ``live_out``/``out`` (``cpu_power``, ``cpu_energy``), then ``stop()``.

Each runs the same profile for the same time, started before the profile and stopped with
the counters held still, so "programmed" is exactly the energy either could have seen.
Per-interval programmed power is the profile's average over that interval (wall-clock
interval ends, ms resolution).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.fixtures.fake_rapl import FakeRapl, powercap_namespace_argv  # noqa: E402

POWERCAP = Path("/sys/class/powercap")
MAX_RANGE_UJ = 100_000_000  # 100 J: wraps every 2.4 s at 42 W, 1.25 s at 80 W
DRAM_W = 6.0
PROFILES: dict[str, list[tuple[float, float]]] = {
    "constant 42 W": [(0.0, 42.0)],
    "step 20 -> 80 W": [(0.0, 20.0), (0.5, 80.0)],  # step time scaled to the run, see _profile()
}


# -- profile arithmetic -------------------------------------------------------------------------


def _profile(name: str, seconds: float) -> list[tuple[float, float]]:
    steps = PROFILES[name]
    return [(0.0, steps[0][1])] + [(round(frac * seconds, 3), w) for frac, w in steps[1:]]


def programmed_j(steps: list[tuple[float, float]], t0: float, t1: float) -> float:
    """Package energy the profile programs between seconds t0 and t1 of the live run."""
    total = 0.0
    for i, (begin, watts) in enumerate(steps):
        end = steps[i + 1][0] if i + 1 < len(steps) else math.inf
        lo, hi = max(begin, t0, 0.0), min(end, t1)
        if hi > lo:
            total += watts * (hi - lo)
    return total


def _epoch(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


# -- the two runs (inside the namespace) ------------------------------------------------------


def _fresh_tree() -> FakeRapl:
    if POWERCAP.exists():
        shutil.rmtree(POWERCAP)
    return FakeRapl(POWERCAP, packages=1, dram=True, max_energy_range_uj=MAX_RANGE_UJ)


def run_ours(steps: list[tuple[float, float]], seconds: float, workdir: Path) -> dict:
    from tests.support.daemon import DaemonProc

    fake = _fresh_tree()
    d = DaemonProc(workdir=workdir, interval=1.0,
                   settings={"energy_source": "rapl", "powercap_root": str(POWERCAP), "gpu": "off"})
    d.start()
    wall0 = time.time()
    fake.start_live([(t, {"package-0": w, "package-0/dram": DRAM_W}) for t, w in steps])
    time.sleep(seconds + 0.5)  # end mid-interval, so there is a tail to account for
    with fake.paused():
        stop_wall = time.time()
        rc = d.stop(signal.SIGTERM)
        truth_cpu, truth_ram = fake.energy_j("package-0"), fake.energy_j("package-0/dram")
    fake.stop_live()
    if rc != 0:
        raise SystemExit(f"daemon exited {rc}: {d.stderr()}")
    records = d.records()
    intervals = []
    for r in records:
        end = _epoch(r["interval_end"]) - wall0
        start = end - r["duration_s"]
        intervals.append({"t0": start, "t1": end, "energy_j": r["energy_j"]["cpu"], "final": r["final"],
                          "programmed_j": programmed_j(steps, start, min(end, stop_wall - wall0))})
    return {
        "truth_cpu_j": truth_cpu, "truth_ram_j": truth_ram,
        "cpu_j": sum(r["energy_j"]["cpu"] for r in records), "ram_j": sum(r["energy_j"]["ram"] for r in records),
        "ram_method": records[-1]["energy_method"].get("ram", ""),
        "intervals": intervals, "stop_t": stop_wall - wall0,
        "tail_j": intervals[-1]["energy_j"] if intervals and intervals[-1]["final"] else 0.0,
    }


class _Collector:
    """codecarbon output handler: what it reports at every measurement (api_call_interval=1)."""

    def __init__(self) -> None:
        self.tracker = None  # set after construction, to read its last-measurement power
        self.stopping = False  # set just before stop(): rows from then on are the tail
        self.live: list[dict] = []
        self.final: dict | None = None

    def _row(self, total, delta) -> dict:
        last = getattr(self.tracker, "_cpu_power", None)  # private: the power of this measurement alone
        return {"wall": time.time(), "in_stop": self.stopping, "cpu_power": float(total.cpu_power),
                "last_power": float(last.W) if last is not None else float("nan"),
                "cpu_kwh": float(total.cpu_energy), "ram_kwh": float(total.ram_energy)}

    def live_out(self, total, delta) -> None:
        self.live.append(self._row(total, delta))

    def out(self, total, delta) -> None:
        self.final = self._row(total, delta)

    def task_out(self, data, experiment_name) -> None:
        pass

    def exit(self) -> None:
        pass


def run_codecarbon(steps: list[tuple[float, float]], seconds: float, workdir: Path) -> dict:
    import logging

    from codecarbon import OfflineEmissionsTracker

    fake = _fresh_tree()
    workdir.mkdir(parents=True, exist_ok=True)
    handler = _Collector()
    tracker = OfflineEmissionsTracker(
        country_iso_code="FRA", output_dir=str(workdir), save_to_file=False, output_handlers=[handler],
        measure_power_secs=1, api_call_interval=1, tracking_mode="machine", log_level="error",
        allow_multiple_runs=True,
    )
    handler.tracker = tracker
    logging.getLogger("codecarbon").setLevel(logging.ERROR)
    tracker.start()
    hardware = dict(tracker.get_detected_hardware())
    wall0 = time.time()
    fake.start_live([(t, {"package-0": w, "package-0/dram": DRAM_W}) for t, w in steps])
    time.sleep(seconds + 0.5)  # end mid-interval, so there is a tail to account for
    with fake.paused():
        stop_t = time.time() - wall0
        handler.stopping = True
        tracker.stop()
        truth_cpu = fake.energy_j("package-0")
    fake.stop_live()
    final = handler.final or {"cpu_kwh": 0.0, "ram_kwh": 0.0, "cpu_power": 0.0}
    intervals = []
    prev_t, prev_kwh = None, 0.0
    for row in handler.live:
        if row["in_stop"]:
            continue
        t = row["wall"] - wall0
        if prev_t is not None:  # an interval runs from one measurement to the next
            intervals.append({"t0": prev_t, "t1": t, "energy_j": (row["cpu_kwh"] - prev_kwh) * 3.6e6,
                              "cpu_power": row["cpu_power"], "last_power": row["last_power"], "final": False,
                              "programmed_j": programmed_j(steps, prev_t, t)})
        prev_t, prev_kwh = t, row["cpu_kwh"]
    last_t = prev_t if prev_t is not None else 0.0
    in_run = [i for i in intervals if i["t0"] >= 0]
    return {
        "truth_cpu_j": truth_cpu, "cpu_j": final["cpu_kwh"] * 3.6e6, "ram_j": final["ram_kwh"] * 3.6e6,
        "intervals": intervals, "stop_t": stop_t,
        "reported_cpu_power": [i["cpu_power"] for i in in_run], "last_power": [i["last_power"] for i in in_run],
        "final_cpu_power": final["cpu_power"],
        "tail_j": (final["cpu_kwh"] - prev_kwh) * 3.6e6, "tail_programmed_j": programmed_j(steps, last_t, stop_t),
        "hardware": {k: str(v) for k, v in hardware.items() if k in ("cpu_model", "cpu_count", "ram_total_size")},
    }


def child(args: argparse.Namespace) -> None:
    seconds = args.seconds
    names = ["step 20 -> 80 W"] if args.quick else list(PROFILES)
    results = []
    with tempfile.TemporaryDirectory(prefix="tta-accuracy-") as tmp:
        for i, name in enumerate(names):
            steps = _profile(name, seconds)
            ours = run_ours(steps, seconds, Path(tmp) / f"ours{i}")
            theirs = run_codecarbon(steps, seconds, Path(tmp) / f"cc{i}")
            results.append({"profile": name, "steps": steps, "seconds": seconds, "ours": ours, "codecarbon": theirs})
    Path(args.child_out).write_text(json.dumps(results))


# -- summary and report (outside the namespace) ----------------------------------------------


def _pct(got: float, want: float) -> float:
    return (got / want - 1.0) * 100.0 if want else float("nan")


def summarise(results: list[dict]) -> list[dict]:
    rows = []
    for res in results:
        for tool in ("ours", "codecarbon"):
            run = res[tool]
            full = [i for i in run["intervals"] if not i["final"] and i["t1"] - i["t0"] > 0.5 and i["t0"] >= 0]
            power = [i["energy_j"] / (i["t1"] - i["t0"]) for i in full]
            prog = [i["programmed_j"] / (i["t1"] - i["t0"]) for i in full]
            errs = [p - q for p, q in zip(power, prog, strict=True)]
            if tool == "ours":
                regular = sum(i["energy_j"] for i in run["intervals"] if not i["final"])
                tail_prog = run["truth_cpu_j"] - regular
            else:
                tail_prog = run["tail_programmed_j"]
            rows.append({
                "profile": res["profile"], "tool": tool, "seconds": res["seconds"],
                "programmed_j": run["truth_cpu_j"], "measured_j": run["cpu_j"],
                "error_pct": _pct(run["cpu_j"], run["truth_cpu_j"]),
                "intervals": len(full),
                "power_min": min(power, default=float("nan")), "power_max": max(power, default=float("nan")),
                "power_mean": sum(power) / len(power) if power else float("nan"),
                "programmed_min": min(prog, default=float("nan")), "programmed_max": max(prog, default=float("nan")),
                "max_abs_interval_err_w": max((abs(e) for e in errs), default=float("nan")),
                "reported_cpu_power_min": min(run.get("reported_cpu_power") or [float("nan")]),
                "reported_cpu_power_max": max(run.get("reported_cpu_power") or [float("nan")]),
                "last_power_min": min(run.get("last_power") or [float("nan")]),
                "last_power_max": max(run.get("last_power") or [float("nan")]),
                "tail_j": run["tail_j"], "tail_programmed_j": tail_prog,
                "ram_j": run["ram_j"], "truth_ram_j": run.get("truth_ram_j"),
            })
    return rows


def markdown(rows: list[dict]) -> str:
    out = ["| profile | tool | programmed cpu J | measured J | error | per-interval W min / mean / max "
           "(programmed min / max) | worst interval W error | tail at stop: reported / programmed J |",
           "|---|---|---:|---:|---:|---|---:|---|"]
    for r in rows:
        out.append(
            f"| {r['profile']} | {r['tool']} | {r['programmed_j']:.3f} | {r['measured_j']:.3f} | "
            f"{r['error_pct']:+.3f}% | {r['power_min']:.2f} / {r['power_mean']:.2f} / {r['power_max']:.2f} "
            f"({r['programmed_min']:.2f} / {r['programmed_max']:.2f}) | {r['max_abs_interval_err_w']:.2f} | "
            f"{r['tail_j']:.2f} / {r['tail_programmed_j']:.2f} |"
        )
    cc = [r for r in rows if r["tool"] == "codecarbon"]
    if cc:
        out.append("")
        out.append("codecarbon's own power figures over the same full intervals: the `cpu_power` field its "
                   "output handler receives (in codecarbon 3.x a running mean since `start()`, so it lags "
                   "the load), and the power it computed at each measurement (`tracker._cpu_power`, private: "
                   "`CPU.total_power()`, from its own power-sampling history, not from the energy delta):")
        out.append("")
        for r in cc:
            out.append(f"- {r['profile']}: `cpu_power` {r['reported_cpu_power_min']:.2f} W to "
                       f"{r['reported_cpu_power_max']:.2f} W; per measurement {r['last_power_min']:.2f} W to "
                       f"{r['last_power_max']:.2f} W (programmed {r['programmed_min']:.2f} W to "
                       f"{r['programmed_max']:.2f} W)")
    dram = [r for r in rows if r["tool"] == "ours" and r["truth_ram_j"]]
    if dram:
        out.append("")
        out.append("DRAM domain (programmed 6 W): " + "; ".join(
            f"{r['profile']}: ours {r['ram_j']:.3f} J of {r['truth_ram_j']:.3f} J "
            f"({_pct(r['ram_j'], r['truth_ram_j']):+.3f}%)" for r in dram)
            + ". codecarbon leaves DRAM out of RAPL by default (`rapl_include_dram=False`) and reports its "
              "per-DIMM RAM model instead: " + "; ".join(
            f"{r['profile']}: {r['ram_j']:.1f} J" for r in rows if r["tool"] == "codecarbon") + ".")
    return "\n".join(out) + "\n"


DOC_HEAD = """# Accuracy: our RAPL reader and codecarbon's tracker on the same fake RAPL tree

Generated by `scripts/accuracy_report.py` on {date} on `{host}` ({machine}, {cpus} CPUs,
Python {python}, codecarbon {cc}); {seconds:g} s per run. Re-run as root with
`uv run python scripts/accuracy_report.py --write-doc docs/accuracy.md`.
CI runs a short version (`tests/integration/test_accuracy_report.py`) that asserts our
error stays under 0.5 % and prints codecarbon's figures.

## Method

- A fake powercap tree (`tests/fixtures/fake_rapl.py`) is mounted at `/sys/class/powercap`
  in a private mount namespace (`unshare --mount --propagation private`, tmpfs over
  `/sys/class`), because codecarbon hard-codes that path. Package `package-0` with a
  `core` subzone and a `dram` subzone at {dram:g} W; `max_energy_range_uj` = 100 J, so the
  counters wrap every 1.25 s to 5 s: several wraps per run.
- Profiles: constant 42 W; a step from 20 W to 80 W halfway through the run. The fake
  integrates power exactly in real time (a live writer thread, 2 ms ticks).
- Ours: the real daemon, `tta-carbon run --set energy_source=rapl --set gpu=off`,
  1 s intervals, SIGTERM at the end (the final record covers the tail).
- codecarbon: `OfflineEmissionsTracker(measure_power_secs=1, api_call_interval=1,
  tracking_mode="machine")`, an output handler recording `live_out(total, delta)` at every
  measurement and `out()` at `stop()`; energy is `total.cpu_energy` after `stop()`.
- Each tool is started before the profile and stopped while the fake's counters are held
  still, so the programmed energy is exactly what it could have seen. "Per-interval W" is
  each full interval's energy over its length; "programmed" is the profile's average over
  the same interval; "worst interval W error" is the largest difference between the two.
  "Tail at stop" is the energy reported after the last regular measurement against what
  the profile produced in that time.

## Results

"""


def summary(rows: list[dict], cc_version: str) -> str:
    ours = [r for r in rows if r["tool"] == "ours"]
    cc = [r for r in rows if r["tool"] == "codecarbon"]
    worst = max(abs(r["error_pct"]) for r in ours)
    cc_worst = max(abs(r["error_pct"]) for r in cc)
    lines = [
        "",
        "## Summary",
        "",
        f"- Ours: total energy within {worst:.4f} % of the programmed energy on every profile "
        f"(CI asserts < 0.5 %); every full interval within "
        f"{max(r['max_abs_interval_err_w'] for r in ours):.2f} W of the programmed power; the final "
        "record carries the tail since the last interval.",
        f"- codecarbon {cc_version}: total energy within {cc_worst:.4f} % "
        f"(tail after the last measurement: " + ", ".join(
            f"{r['tail_j']:.2f} of {r['tail_programmed_j']:.2f} J" for r in cc) + " reported at `stop()`); "
        "its per-interval energy tracks the profile, but the `cpu_power` field its output handlers "
        "receive ranged " + ", ".join(
            f"{r['reported_cpu_power_min']:.2f}-{r['reported_cpu_power_max']:.2f} W ({r['profile']})" for r in cc)
        + ".",
        "- The issue reported codecarbon's `cpu_power` anywhere from 38 W to 121 W for a true 42 W "
        "and energy losing the tail at stop. With the codecarbon version above, on this fixture, the "
        "energy and the tail are right; its power figure is a running mean that lags the load "
        "(and the per-measurement value comes from a separate sampling history), so read power "
        "from energy deltas, as we do, not from `cpu_power`.",
        "",
    ]
    return "\n".join(lines)


def write_doc(path: Path, rows: list[dict], table: str) -> None:
    try:
        from importlib.metadata import version
        cc = version("codecarbon")
    except Exception:
        cc = "?"
    head = DOC_HEAD.format(
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), host=platform.node(), machine=platform.machine(),
        cpus=os.cpu_count(), python=platform.python_version(), cc=cc, seconds=rows[0]["seconds"], dram=DRAM_W,
    )
    path.write_text(head + table + summary(rows, cc))


def parent(args: argparse.Namespace) -> int:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        print("accuracy_report: needs root and unshare(1) (a private mount namespace over /sys/class)",
              file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="tta-accuracy-out-") as tmp:
        out = Path(tmp) / "results.json"
        argv = [sys.executable, str(Path(__file__).resolve()), "--child-out", str(out), "--seconds", str(args.seconds)]
        if args.quick:
            argv.append("--quick")
        proc = subprocess.run(powercap_namespace_argv(argv), cwd=REPO, timeout=600)
        if proc.returncode != 0:
            print(f"accuracy_report: measurement child exited {proc.returncode}", file=sys.stderr)
            return 1
        results = json.loads(out.read_text())
    rows = summarise(results)
    table = markdown(rows)
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "raw": results}, indent=1))
    if args.write_doc:
        write_doc(Path(args.write_doc), rows, table)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one profile (the step), for CI")
    ap.add_argument("--seconds", type=float, default=None, help="seconds per run (default 20, quick 4)")
    ap.add_argument("--json", help="also write the figures as JSON here")
    ap.add_argument("--write-doc", help="write the Markdown report (method + table) here")
    ap.add_argument("--child-out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.seconds is None:
        args.seconds = 4.0 if args.quick else 20.0
    if args.child_out:
        child(args)
        return 0
    return parent(args)


if __name__ == "__main__":
    sys.exit(main())
