"""`tta-carbon report`: totals from the NDJSON files, rotated and compressed ones included."""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from src.components.carbon.attribution import OTHER, UNATTRIBUTED
from src.components.carbon.ndjson_files import list_files, read_lines
from src.components.carbon.record import COMPONENTS, JOULES_PER_KWH
from src.service.exit_codes import EX_FAILURE, EX_OK


@dataclass
class Totals:
    records: int = 0
    energy_j: dict[str, float] = field(default_factory=lambda: dict.fromkeys(COMPONENTS, 0.0))
    emissions_g: dict[str, float] = field(default_factory=lambda: dict.fromkeys(COMPONENTS, 0.0))

    def add(self, rec: dict[str, Any]) -> None:
        self.records += 1
        for c in COMPONENTS:
            self.energy_j[c] += float(rec["energy_j"].get(c, 0.0))
            self.emissions_g[c] += float(rec["emissions_g"].get(c, 0.0))

    def as_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "energy_j": {**self.energy_j, "total": sum(self.energy_j.values())},
            "emissions_g": {**self.emissions_g, "total": sum(self.emissions_g.values())},
        }


@dataclass
class Report:
    overall: Totals = field(default_factory=Totals)
    by_day: dict[str, Totals] = field(default_factory=lambda: defaultdict(Totals))
    files: int = 0
    duplicates: int = 0
    invalid_lines: list[str] = field(default_factory=list)
    # unit -> [joules, grams, cpu seconds, records], from each record's "units" (docs/attribution.md)
    by_unit: dict[str, list[float]] = field(default_factory=dict)

    def add_units(self, rec: dict[str, Any]) -> None:
        for unit, share in (rec.get("units") or {}).items():
            acc = self.by_unit.setdefault(str(unit), [0.0, 0.0, 0.0, 0])
            acc[0] += float(share.get("energy_j", 0.0))
            acc[1] += float(share.get("emissions_g", 0.0))
            acc[2] += float(share.get("cpu_s", 0.0))
            acc[3] += 1


def build_report(directory: Path) -> Report:
    """Each record counts once, keyed by (run_id, seq), whichever file it sits in."""
    report = Report()
    seen: set[tuple[str, int]] = set()
    for path in list_files(directory):
        report.files += 1
        for lineno, raw in enumerate(read_lines(path), start=1):
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw)
                key = (str(rec["run_id"]), int(rec["seq"]))
                day = str(rec["interval_end"])[:10]
            except (ValueError, KeyError, TypeError):
                report.invalid_lines.append(f"{path.name} line {lineno}")
                continue
            if key in seen:
                report.duplicates += 1
                continue
            seen.add(key)
            try:
                report.by_day[day].add(rec)
                report.overall.add(rec)
                report.add_units(rec)
            except (KeyError, TypeError, ValueError, AttributeError):
                report.invalid_lines.append(f"{path.name} line {lineno}")
    return report


def run_report(directory: Path, *, as_json: bool, by: str = "day") -> int:
    if not directory.is_dir():
        print(f"tta-carbon: error: output directory {directory} does not exist or is not a directory", file=sys.stderr)
        return EX_FAILURE
    report = build_report(directory)
    if report.invalid_lines:
        shown = ", ".join(report.invalid_lines[:5]) + (" ..." if len(report.invalid_lines) > 5 else "")
        print(f"tta-carbon: warning: skipped {len(report.invalid_lines)} invalid line(s): {shown}", file=sys.stderr)
    if as_json:
        print(json.dumps({
            "directory": str(directory), "files": report.files, "duplicates_skipped": report.duplicates,
            "invalid_lines": len(report.invalid_lines), "overall": report.overall.as_dict(),
            "by_day": {day: t.as_dict() for day, t in sorted(report.by_day.items())},
            "by_unit": {u: {"energy_j": a[0], "emissions_g": a[1], "cpu_s": a[2], "records": a[3]}
                        for u, a in sorted(report.by_unit.items())},
        }, indent=2))
        return EX_OK
    if by == "unit":
        print_by_unit(report)
    elif by == "component":
        print(f"{'component':<10} {'energy kWh':>14} {'emissions g':>14}")
        for c in COMPONENTS:
            print(f"{c:<10} {report.overall.energy_j[c] / JOULES_PER_KWH:>14.6f} {report.overall.emissions_g[c]:>14.3f}")
    else:
        print(f"{'day':<10} {'records':>8} {'cpu kWh':>12} {'ram kWh':>12} {'gpu kWh':>12} {'emissions g':>14}")
        for day, t in sorted(report.by_day.items()):
            print(f"{day:<10} {t.records:>8} " + " ".join(f"{t.energy_j[c] / JOULES_PER_KWH:>12.6f}" for c in COMPONENTS)
                  + f" {sum(t.emissions_g.values()):>14.3f}")
    o = report.overall
    print(f"{'total':<10} {o.records:>8} records, {sum(o.energy_j.values()) / JOULES_PER_KWH:.6f} kWh, "
          f"{sum(o.emissions_g.values()):.3f} gCO2eq ({sum(o.emissions_g.values()) / 1000:.6f} kg)")
    return EX_OK


def print_by_unit(report: Report) -> None:
    """Units by energy, largest first; ``other`` and ``unattributed`` last."""
    if not report.by_unit:
        print("no per-unit data in these records (attribution off or unavailable; see docs/attribution.md)")
        return
    total_j = sum(a[0] for a in report.by_unit.values()) or 1.0
    tail = [u for u in (OTHER, UNATTRIBUTED) if u in report.by_unit]
    named = sorted((u for u in report.by_unit if u not in tail), key=lambda u: -report.by_unit[u][0])
    width = max(10, *(len(u) for u in report.by_unit))
    print(f"{'unit':<{width}} {'energy kWh':>14} {'share':>7} {'emissions g':>14} {'cpu s':>10}")
    for u in named + tail:
        j, g, cpu_s, _ = report.by_unit[u]
        print(f"{u:<{width}} {j / JOULES_PER_KWH:>14.6f} {100 * j / total_j:>6.1f}% {g:>14.3f} {cpu_s:>10.1f}")
