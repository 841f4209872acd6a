"""Regenerate docs/report-example.png: `tta-carbon report --html` of a realistic sample, in headless Chromium.

A week of two hosts' records at 5-minute intervals (the daemon writes every 15 s; the
figures are the same shape): web-1 measured by RAPL with a Redfish platform meter (a
remainder) from the fourth day on, gpu-1 estimated by codecarbon's models with NVML for
its GPU, Electricity Maps intensity with a cached stretch and a country-mix fallback,
embodied carbon configured on gpu-1 only.

    uv run python scripts/report_screenshot.py [--out docs/report-example.png] [--keep DIR]

Needs `chromium` (Debian: apt-get install chromium).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STEP_S = 300
UNITS = {"web-1": ["nginx.service", "api-gateway.service", "postgresql.service", "redis-server.service",
                   "celery-worker.service", "node-exporter.service"],
         "gpu-1": ["inference@llama.service", "inference@whisper.service", "batch-embeddings.service",
                   "jupyterhub.service", "prometheus.service", "containerd.service", "sshd.service",
                   "systemd-journald.service", "cron.service", "rsyslog.service", "tta-carbon.service",
                   "docker.service"]}


def sample(root: Path, days: int = 7, start: str = "2026-11-24") -> None:
    """Write ``root/<host>/emissions_<day>.json`` for ``days`` days."""
    rnd = random.Random(18)
    t0 = datetime.datetime.fromisoformat(start + "T00:00:00+00:00")
    for host in ("web-1", "gpu-1"):
        seq = 0
        for i in range(days * 86400 // STEP_S - 1):  # the last ends at 23:55 of the last day
            seq += 1
            end = t0 + datetime.timedelta(seconds=(i + 1) * STEP_S)
            mid = end - datetime.timedelta(seconds=STEP_S / 2)  # the interval's middle: its hour and day
            hour = mid.hour + mid.minute / 60
            load = 0.35 + 0.45 * max(0.0, math.sin((hour - 7) / 24 * 2 * math.pi)) + rnd.uniform(-0.05, 0.05)
            if host == "web-1":
                e = {"cpu": 95 * load * STEP_S, "ram": 9.0 * STEP_S, "gpu": 0.0}
                methods = {"cpu": "rapl", "ram": "rapl"}
                if i >= 3 * 86400 // STEP_S:
                    platform = (e["cpu"] + e["ram"]) * 1.22 + 25 * STEP_S
                    e["remainder"] = platform - e["cpu"] - e["ram"]
                    methods["platform"] = "redfish"
            else:
                e = {"cpu": 140 * load * STEP_S, "ram": 18.0 * STEP_S, "gpu": (60 + 230 * load) * STEP_S}
                methods = {"cpu": "codecarbon_cpu_load", "ram": "codecarbon_ram_model", "gpu": "nvml"}
            e["total"] = sum(e.values())
            day_no = (mid - t0).days
            if 70 <= (i % (86400 // STEP_S)) < 90 and day_no == 2:
                source, ci = "electricitymaps_cached", 212.0
            elif day_no == 5 and hour < 6:
                source, ci = "country_mix", 369.5
            else:
                source = "electricitymaps"
                ci = 180 + 90 * math.sin((hour - 18) / 24 * 2 * math.pi) + 25 * math.sin(day_no) + rnd.uniform(-6, 6)
            g = {k: v / 3.6e6 * ci for k, v in e.items()}
            shares = [rnd.random() ** 2 * (len(UNITS[host]) - n) for n, _ in enumerate(UNITS[host])]
            busy = 0.75 * e["cpu"]
            units = {u: {"energy_j": busy * s / sum(shares), "emissions_g": busy * s / sum(shares) / 3.6e6 * ci,
                         "cpu_s": STEP_S * load * s / sum(shares)} for u, s in zip(UNITS[host], shares)}
            units["unattributed"] = {"energy_j": e["total"] - busy, "emissions_g": (e["total"] - busy) / 3.6e6 * ci,
                                     "cpu_s": 0.0}
            rec = {"timestamp": end.strftime("%Y-%m-%dT%H:%M:%S.000Z"), "interval_end": end.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                   "duration_s": float(STEP_S), "seq": seq, "run_id": f"run-{host}", "host": host,
                   "energy_j": e, "emissions_g": g, "carbon_intensity_g_per_kwh": ci, "intensity_source": source,
                   "intensity_location": "DEU", "energy_method": methods,
                   "estimated": host == "gpu-1", "units": units}
            if host == "gpu-1":
                rec["embodied_g"] = 0.0021 * STEP_S  # ~1.3 t CO2eq over 6 years of a GPU server
                for u in units.values():
                    u["embodied_g"] = rec["embodied_g"] * u["energy_j"] / e["total"]
            path = root / host / f"emissions_{end.date().isoformat()}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a") as f:
                f.write(json.dumps(rec) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "report-example.png")
    parser.add_argument("--keep", type=Path, help="leave the sample records and the page in this directory")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("report_screenshot: chromium not found (apt-get install chromium)", file=sys.stderr)
        return 1
    work = Path(args.keep or tempfile.mkdtemp(prefix="report-example-"))
    work.mkdir(parents=True, exist_ok=True)
    sample(work / "fleet")
    page = work / "report.html"
    cli = Path(sys.executable).parent / "tta-carbon"
    subprocess.run([str(cli), "report", "--fleet", str(work / "fleet"), "--html", str(page)], check=True, timeout=120)
    subprocess.run([chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    '--host-resolver-rules=MAP * ~NOTFOUND', f"--screenshot={args.out.resolve()}",
                    "--window-size=1280,2400", page.resolve().as_uri()], check=True, timeout=120,
                   capture_output=True)
    print(f"wrote {args.out}")
    if not args.keep:
        shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
