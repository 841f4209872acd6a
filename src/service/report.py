"""`tta-carbon report`: totals from the NDJSON files, rotated and compressed ones included.

One directory (the configured ``output_dir`` or ``--dir``) or a fleet: several ``--dir`` and
``--fleet ROOT`` (every subdirectory of ROOT is one host's records, as rsync or a log
collector leaves them). Files are streamed line by line; memory grows with the number of
hosts, days, units and daemon runs, never with the number of records.
"""

from __future__ import annotations

import json
import math
import sys
import zlib
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from src.components.carbon.attribution import OTHER, UNATTRIBUTED
from src.components.carbon.ndjson_files import is_records_file, iter_lines, list_files
from src.components.carbon.record import ACCOUNTED, MEASURED_METHODS, PLATFORM, REMAINDER, JOULES_PER_KWH
from src.service.exit_codes import EX_CANTCREAT, EX_FAILURE, EX_OK

SHOWN_INVALID = 5  # invalid lines named in the warning (all of them are counted)
UNLABELLED = "unlabelled"  # a component's energy whose record names no energy_method for it
FROM_RECORD, FROM_DIR = "record", "dir"


@dataclass
class Totals:
    """One group's sums. ``embodied_g`` is kept apart: it is never part of ``emissions_g``."""

    records: int = 0
    energy_j: dict[str, float] = field(default_factory=lambda: dict.fromkeys(ACCOUNTED, 0.0))
    emissions_g: dict[str, float] = field(default_factory=lambda: dict.fromkeys(ACCOUNTED, 0.0))
    embodied_g: float = 0.0
    measured_j: float = 0.0  # energy whose method is a hardware counter or meter (MEASURED_METHODS)

    def add(self, rec: ParsedRecord) -> None:
        self.records += 1
        for c in ACCOUNTED:
            self.energy_j[c] += rec.energy_j[c]
            self.emissions_g[c] += rec.emissions_g[c]
        self.embodied_g += rec.embodied_g
        self.measured_j += rec.measured_j

    def merge(self, other: Totals) -> None:
        self.records += other.records
        for c in ACCOUNTED:
            self.energy_j[c] += other.energy_j[c]
            self.emissions_g[c] += other.emissions_g[c]
        self.embodied_g += other.embodied_g
        self.measured_j += other.measured_j

    def as_dict(self) -> dict[str, Any]:
        total_j = sum(self.energy_j.values())
        return {
            "records": self.records,
            "energy_j": {**_shown(self.energy_j), "total": total_j},
            "emissions_g": {**_shown(self.emissions_g), "total": sum(self.emissions_g.values())},
            # operational (emissions_g.total) and embodied side by side, never summed into one another
            "embodied_g": self.embodied_g,
            "measured_energy_j": self.measured_j,
            "estimated_energy_j": total_j - self.measured_j,
        }

    @property
    def parts(self) -> tuple[str, ...]:
        """The accounted parts to print: the remainder only where a platform meter measured one."""
        return tuple(c for c in ACCOUNTED if c != REMAINDER or self.energy_j[REMAINDER])


def _shown(parts: dict[str, float]) -> dict[str, float]:
    return parts if parts[REMAINDER] else {k: v for k, v in parts.items() if k != REMAINDER}


@dataclass(frozen=True, slots=True)
class ParsedRecord:
    """The figures of one line, every one checked finite before any is counted."""

    key: tuple[str, int]
    day: str
    end: str  # interval_end as written (RFC 3339 UTC, fixed width: sorts as text)
    host: str | None  # the record's own `host`; None when absent (record_hostname: false)
    duration_s: float
    energy_j: dict[str, float]
    emissions_g: dict[str, float]
    units: dict[str, tuple[float, float, float, float]]  # unit -> (joules, grams, cpu seconds, embodied grams)
    embodied_g: float = 0.0  # absent from records written without embodied carbon configured
    intensity: float | None = None  # carbon_intensity_g_per_kwh
    intensity_source: str | None = None
    methods: tuple[tuple[str, str], ...] = ()  # (part, energy_method): the remainder's is the platform meter's
    assumptions: tuple[str, ...] = ()  # energy_assumptions texts
    measured_j: float = 0.0  # the parts' energy whose method is in MEASURED_METHODS


def _number(value: Any) -> float:
    """A finite float, or ValueError: ``1e400`` is inf, a 400-digit integer overflows float()."""
    if type(value) is float and math.isfinite(value):  # nearly every figure: the fast way
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"not a number: {type(value).__name__}")
    number = float(value)  # OverflowError for huge integers
    if not math.isfinite(number):
        raise ValueError("not finite")
    return number


def _host(value: Any) -> str | None:
    """The record's host: a string, or ``{"name": ...}`` (a shipper's ECS ``host`` object)."""
    if value is None:
        return None
    if isinstance(value, dict):
        value = value.get("name")
    if not isinstance(value, str):
        raise ValueError("host is not a string")
    return value or None


def parse_record(raw: bytes) -> ParsedRecord:
    """Raises ValueError (or KeyError, TypeError, OverflowError, AttributeError) for a line to skip."""
    rec = json.loads(raw)
    seq = rec["seq"]
    if isinstance(seq, bool) or not isinstance(seq, int):
        raise ValueError("seq is not an integer")
    units = {}
    for unit, share in (rec.get("units") or {}).items():
        units[str(unit)] = (_number(share.get("energy_j", 0.0)), _number(share.get("emissions_g", 0.0)),
                            _number(share.get("cpu_s", 0.0)), _number(share.get("embodied_g", 0.0)))
    end = str(rec["interval_end"])
    energy_j = {c: _number(rec["energy_j"].get(c, 0.0)) for c in ACCOUNTED}
    raw_methods = rec.get("energy_method") or {}
    methods = []
    measured_j = 0.0
    for c in ACCOUNTED:
        # the remainder is what the platform meter saw beyond the components: its method is the meter's
        method = raw_methods.get(PLATFORM if c == REMAINDER else c)
        if method is not None and not isinstance(method, str):
            raise ValueError("energy_method is not a string")
        if method or energy_j[c]:  # a part with no energy and no method (no GPU) is no figure to explain
            methods.append((c, method or UNLABELLED))
        if method in MEASURED_METHODS:
            measured_j += energy_j[c]
    assumptions = tuple(str(v) for v in (rec.get("energy_assumptions") or {}).values())
    intensity = rec.get("carbon_intensity_g_per_kwh")
    source = rec.get("intensity_source")
    return ParsedRecord(
        key=(str(rec["run_id"]), seq), day=end[:10], end=end, host=_host(rec.get("host")),
        duration_s=_number(rec.get("duration_s", 0.0)),
        energy_j=energy_j,
        emissions_g={c: _number(rec["emissions_g"].get(c, 0.0)) for c in ACCOUNTED},
        units=units,
        embodied_g=_number(rec.get("embodied_g", 0.0)),
        intensity=None if intensity is None else _number(intensity),
        intensity_source=None if source is None else str(source),
        methods=tuple(methods), assumptions=assumptions, measured_j=measured_j,
    )


class SeenRecords:
    """The (run_id, seq) pairs counted so far, as ranges of seq per run.

    A run's records are numbered +1 each, so a run read in any order, from any number of
    copies, ends as one or a few ranges: memory grows with the runs (daemon starts), not
    with the records. (A set of every pair took ~170 bytes a record, 10 MB for 60,000:
    ~29 GB for 1,000 hosts x 30 days at 15 s.)
    """

    def __init__(self) -> None:
        # run_id -> (starts, ends, host): seq ranges, inclusive, and the host the run was first counted for
        self._runs: dict[str, tuple[list[int], list[int], str]] = {}

    def add(self, key: tuple[str, int], host: str) -> str | None:
        """None when ``key`` is new (now recorded); when seen before, the host it was counted for."""
        run_id, seq = key
        runs = self._runs.get(run_id)
        if runs is None:
            self._runs[run_id] = ([seq], [seq], host)
            return None
        starts, ends, first_host = runs
        i = bisect_right(starts, seq) - 1
        if i >= 0 and seq <= ends[i]:
            return first_host
        joins_left = i >= 0 and ends[i] == seq - 1
        joins_right = i + 1 < len(starts) and starts[i + 1] == seq + 1
        if joins_left and joins_right:
            ends[i] = ends[i + 1]
            del starts[i + 1], ends[i + 1]
        elif joins_left:
            ends[i] = seq
        elif joins_right:
            starts[i + 1] = seq
        else:
            starts.insert(i + 1, seq)
            ends.insert(i + 1, seq)
        return None

    def ranges(self) -> int:
        return sum(len(r[0]) for r in self._runs.values())


TOP_UNITS = 10  # units named in top_units (and the HTML chart); the rest sum into "other"


class Grouped:
    """Totals overall, per day, per unit, per hour of intensity and per method: for one host, or the fleet.

    Intensity over time is kept per UTC hour and intensity source (not per record): memory and
    the page stay small over months of 15 s records, and an hour is finer than any grid signal
    the sources give. Its value is the energy-weighted mean, i.e. the hour's grams / kWh.
    """

    def __init__(self) -> None:
        self.overall = Totals()
        self.by_day: dict[str, Totals] = defaultdict(Totals)
        # unit -> [joules, grams, cpu seconds, records, embodied grams], from each record's "units" (docs/attribution.md)
        self.by_unit: dict[str, list[float]] = {}
        # (hour "YYYY-MM-DDTHH", source) -> [records, sum of intensity x joules, joules, sum of intensity]
        self.by_hour: dict[tuple[str, str], list[float]] = {}
        self.methods: dict[tuple[str, str], float] = {}  # (part, energy_method) -> joules
        self.assumptions: dict[str, int] = {}  # energy_assumptions text -> records

    def add(self, rec: ParsedRecord) -> None:
        self.by_day[rec.day].add(rec)
        self.overall.add(rec)
        for unit, (j, g, cpu_s, emb) in rec.units.items():
            acc = self.by_unit.setdefault(unit, [0.0, 0.0, 0.0, 0, 0.0])
            acc[0] += j
            acc[1] += g
            acc[2] += cpu_s
            acc[3] += 1
            acc[4] += emb
        if rec.intensity is not None:
            joules = sum(rec.energy_j.values())
            acc = self.by_hour.setdefault((rec.end[:13], rec.intensity_source or "unknown"), [0, 0.0, 0.0, 0.0])
            acc[0] += 1
            acc[1] += rec.intensity * joules
            acc[2] += joules
            acc[3] += rec.intensity
        for part, method in rec.methods:
            self.methods[(part, method)] = self.methods.get((part, method), 0.0) + rec.energy_j[part]
        for text in rec.assumptions:
            self.assumptions[text] = self.assumptions.get(text, 0) + 1

    def merge(self, other: Grouped) -> None:
        """Add ``other``'s totals (the fleet is the sum of its hosts: rows and fleet agree)."""
        self.overall.merge(other.overall)
        for d, t in sorted(other.by_day.items()):
            self.by_day[d].merge(t)
        for unit, a in other.by_unit.items():
            acc = self.by_unit.setdefault(unit, [0.0, 0.0, 0.0, 0, 0.0])
            for i in range(5):
                acc[i] += a[i]
        for key, a in other.by_hour.items():
            acc = self.by_hour.setdefault(key, [0, 0.0, 0.0, 0.0])
            for i in range(4):
                acc[i] += a[i]
        for key, j in other.methods.items():
            self.methods[key] = self.methods.get(key, 0.0) + j
        for text, n in other.assumptions.items():
            self.assumptions[text] = self.assumptions.get(text, 0) + n

    def intensity_by_hour(self) -> list[dict[str, Any]]:
        """Per UTC hour and source: the energy-weighted mean intensity (plain mean when no energy)."""
        rows = []
        for (hour, source), (n, weighted, joules, plain) in sorted(self.by_hour.items()):
            rows.append({"hour": f"{hour}:00:00Z", "intensity_source": source, "records": n, "energy_j": joules,
                         "g_per_kwh": weighted / joules if joules > 0 else plain / n})
        return rows

    def top_units(self, n: int = TOP_UNITS) -> list[dict[str, Any]]:
        """The ``n`` units with most energy, then ``other`` (the rest, the daemon's own ``other`` included)
        and ``unattributed``; shares are of the units' energy (which equals energy_j.total)."""
        total_j = sum(a[0] for a in self.by_unit.values())
        named = sorted((u for u in self.by_unit if u not in (OTHER, UNATTRIBUTED)),
                       key=lambda u: (-self.by_unit[u][0], u))
        rows = [(u, self.by_unit[u]) for u in named[:n]]
        rest = [self.by_unit[u] for u in named[n:]] + ([self.by_unit[OTHER]] if OTHER in self.by_unit else [])
        if rest:
            rows.append((OTHER, [sum(a[i] for a in rest) for i in range(5)]))
        if UNATTRIBUTED in self.by_unit:
            rows.append((UNATTRIBUTED, self.by_unit[UNATTRIBUTED]))
        return [{"unit": u, "energy_j": a[0], "share": a[0] / total_j if total_j > 0 else 0.0,
                 "emissions_g": a[1], "embodied_g": a[4]} for u, a in rows]

    def energy_by_method(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for (part, method), j in sorted(self.methods.items()):
            out.setdefault(part, {})[method] = j
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "overall": self.overall.as_dict(),
            "by_day": {day: t.as_dict() for day, t in sorted(self.by_day.items())},
            "by_unit": {u: {"energy_j": a[0], "emissions_g": a[1], "cpu_s": a[2], "records": a[3], "embodied_g": a[4]}
                        for u, a in sorted(self.by_unit.items())},
            "top_units": self.top_units(),
            "intensity_by_hour": self.intensity_by_hour(),
            "energy_by_method": self.energy_by_method(),
            "energy_assumptions": dict(sorted(self.assumptions.items())),
        }


class HostTotals(Grouped):
    def __init__(self) -> None:
        super().__init__()
        self.measured_s = 0.0
        self.first: str | None = None
        self.last: str | None = None
        self.duplicates = 0
        self.sources: set[str] = set()  # FROM_RECORD / FROM_DIR: where the host name came from
        self.directories: set[str] = set()  # where its records were found, copies included
        self.named_by: set[str] = set()  # directories whose name was taken as this host's

    def add(self, rec: ParsedRecord) -> None:
        super().add(rec)
        self.measured_s += rec.duration_s
        if self.first is None or rec.end < self.first:
            self.first = rec.end
        if self.last is None or rec.end > self.last:
            self.last = rec.end

    @property
    def host_from(self) -> str:
        return "+".join(s for s in (FROM_RECORD, FROM_DIR) if s in self.sources) or FROM_DIR

    def as_dict(self) -> dict[str, Any]:
        return {"host_from": self.host_from, "directories": sorted(self.directories),
                "records": self.overall.records, "measured_s": self.measured_s,
                "first_record": self.first, "last_record": self.last,
                "duplicates_skipped": self.duplicates, **super().as_dict()}


@dataclass(frozen=True)
class Source:
    """One directory of records; ``name`` is the host of its records that carry no ``host``."""

    path: Path
    name: str


def dir_host_name(path: Path) -> str:
    return path.resolve().name or str(path)


@dataclass
class Report:
    """What ``build_report`` read. ``overall``/``by_day``/``by_unit`` cover the selected hosts."""

    fleet: Grouped = field(default_factory=Grouped)
    hosts: dict[str, HostTotals] = field(default_factory=dict)
    directories: list[str] = field(default_factory=list)
    files: int = 0
    duplicates: int = 0
    invalid_count: int = 0
    invalid_lines: list[str] = field(default_factory=list)  # the first SHOWN_INVALID, "file line N"
    unreadable_files: list[str] = field(default_factory=list)  # "name: why"; lines read before the problem count
    unreadable_dirs: list[str] = field(default_factory=list)  # "dir: why"; nothing in it counted

    @property
    def overall(self) -> Totals:
        return self.fleet.overall

    @property
    def by_day(self) -> dict[str, Totals]:
        return self.fleet.by_day

    @property
    def by_unit(self) -> dict[str, list[float]]:
        return self.fleet.by_unit

    def host(self, name: str) -> HostTotals:
        totals = self.hosts.get(name)
        if totals is None:
            totals = self.hosts[name] = HostTotals()
        return totals


def _why(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def build_report(directories: Path | Sequence[Source], hosts: Iterable[str] | None = None,
                 since: str | None = None, until: str | None = None) -> Report:
    """Each record counts once, keyed by (run_id, seq), whichever file or directory it sits in.

    Files are streamed line by line. A line is counted whole or not at all; a file that is
    not what its name says (a ``.gz`` that is not gzip, or cut short) is named and skipped
    from where it breaks; a directory that cannot be listed is named and skipped. ``hosts``,
    when given, limits the fleet totals to those hosts (every host still gets its own).
    ``since``/``until`` (YYYY-MM-DD, inclusive) keep the records whose interval_end falls on
    those UTC days; the others are not counted anywhere (nor as duplicates).
    """
    sources = [Source(directories, dir_host_name(directories))] if isinstance(directories, Path) else directories
    wanted = None if hosts is None else set(hosts)
    report = Report()
    seen = SeenRecords()
    single = len(sources) == 1
    for source in sources:
        report.directories.append(str(source.path))
        try:
            files = list_files(source.path)
        except OSError as exc:
            report.unreadable_dirs.append(f"{source.path}: {_why(exc)}")
            continue
        parsed = 0
        for path in files:
            report.files += 1
            label = path.name if single else str(path)
            lineno = 0
            try:
                for lineno, raw in enumerate(iter_lines(path), start=1):
                    if not raw.strip():
                        continue
                    try:
                        rec = parse_record(raw)
                    except (ValueError, KeyError, TypeError, AttributeError, OverflowError, RecursionError):
                        report.invalid_count += 1
                        if len(report.invalid_lines) < SHOWN_INVALID:
                            report.invalid_lines.append(f"{label} line {lineno}")
                        continue
                    parsed += 1
                    if (since is not None and rec.day < since) or (until is not None and rec.day > until):
                        continue
                    name = rec.host or source.name
                    counted_for = seen.add(rec.key, name)
                    if counted_for is not None:
                        report.duplicates += 1
                        owner = report.host(counted_for)
                        owner.duplicates += 1
                        owner.directories.add(str(source.path))
                        continue
                    totals = report.host(name)
                    totals.directories.add(str(source.path))
                    if rec.host:
                        totals.sources.add(FROM_RECORD)
                    else:
                        totals.sources.add(FROM_DIR)
                        totals.named_by.add(str(source.path.resolve()))
                    totals.add(rec)
            except (OSError, EOFError, zlib.error) as exc:
                report.unreadable_files.append(f"{label}: {_why(exc)} (after line {lineno})")
        if parsed == 0:  # a host that sent nothing still gets its row (0 records)
            totals = report.host(source.name)
            totals.directories.add(str(source.path))
            totals.sources.add(FROM_DIR)
    for name, totals in sorted(report.hosts.items()):
        if wanted is None or name in wanted:
            report.fleet.merge(totals)
    return report


def fleet_sources(root: Path) -> tuple[list[Source], list[str]]:
    """One Source per subdirectory of ``root`` (hidden ones skipped), sorted by name; problems as lines.

    Raises OSError when ``root`` cannot be listed.
    """
    sources, notes = [], []
    strays = 0
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            sources.append(Source(entry, entry.name))
        elif is_records_file(entry.name):
            strays += 1
    if strays:
        notes.append(f"{root} itself holds {strays} emissions_* file(s): --fleet reads only its subdirectories "
                     f"(add --dir {root} to read them too)")
    if not sources:
        notes.append(f"{root} has no subdirectories: --fleet expects one directory per host")
    return sources, notes


def _subdirs_with_records(directory: Path) -> int:
    count = 0
    try:
        for entry in directory.iterdir():
            if not entry.name.startswith(".") and entry.is_dir() and list_files(entry):
                count += 1
    except OSError:
        pass
    return count


def warn(text: str) -> None:
    print(f"tta-carbon: warning: {printable(text)}", file=sys.stderr)


def run_report(directory: Path | None = None, *, as_json: bool, by: str = "day", dirs: Sequence[Path] = (),
               fleets: Sequence[Path] = (), hosts: Sequence[str] = (), since: str | None = None,
               until: str | None = None, html: Path | None = None) -> int:
    """One directory (``directory``) or several (``dirs``, each subdirectory of each ``fleets`` root).

    ``since``/``until``: UTC days, inclusive. ``html``: write the page there (report_html.py)
    instead of printing tables; ``as_json`` still prints the JSON when both are given.
    """
    named = ([directory] if directory is not None else []) + list(dirs)
    multi = len(named) + len(fleets) > 1 or bool(fleets)
    failed = False
    sources: list[Source] = []
    for d in named:
        if not d.is_dir():
            print(f"tta-carbon: error: {'output ' if not multi else ''}directory {printable(str(d))} does not exist "
                  f"or is not a directory{' (skipped)' if multi else ''}", file=sys.stderr)
            failed = True
            continue
        sources.append(Source(d, dir_host_name(d)))
    for root in fleets:
        try:
            found, notes = fleet_sources(root)
        except OSError as exc:
            print(f"tta-carbon: error: --fleet {printable(str(root))}: {printable(_why(exc))} (skipped)",
                  file=sys.stderr)
            failed = True
            continue
        for note in notes:
            warn(note)
        sources.extend(found)
    if not sources and failed:
        return EX_FAILURE
    report = build_report(sources, hosts or None, since, until)
    for problem in report.unreadable_dirs:
        print(f"tta-carbon: error: cannot read directory {printable(problem)} (skipped)", file=sys.stderr)
        failed = True
    for problem in report.unreadable_files:
        warn(f"skipped the rest of {problem}")
    if report.invalid_count:
        shown = ", ".join(report.invalid_lines) + (" ..." if report.invalid_count > len(report.invalid_lines) else "")
        warn(f"skipped {report.invalid_count} invalid line(s): {shown}")
    if not multi and report.files == 0 and (n := _subdirs_with_records(sources[0].path)):
        warn(f"{sources[0].path} holds no emissions_* files but {n} of its subdirectories do: "
             f"for one host per subdirectory use --fleet {sources[0].path}")
    shared = {n: sorted(h.named_by) for n, h in report.hosts.items() if len(h.named_by) > 1}
    for name, paths in shared.items():
        warn(f"host {name!r} is the name of {len(paths)} directories ({', '.join(paths)}): their records without "
             f"a host field are counted as one host")
    missing = [h for h in hosts if h not in report.hosts]
    for name in missing:
        known = sorted(report.hosts)
        warn(f"no records of host {name!r} (hosts: {', '.join(known[:5])}{' ...' if len(known) > 5 else ''})")
    if html is not None:
        from src.service.report_html import write_html

        try:
            write_html(html, report, since=since, until=until, selected_hosts=hosts)
        except OSError as exc:
            print(f"tta-carbon: error: cannot write {printable(str(html))}: {printable(_why(exc))}", file=sys.stderr)
            return EX_CANTCREAT
        if not as_json:
            print(f"wrote {printable(str(html))} ({report.overall.records} records)", file=sys.stderr)
            return EX_FAILURE if failed else EX_OK
    if as_json:
        print(json.dumps({
            "directory": str(named[0]) if len(named) == 1 and not fleets else None,
            "directories": report.directories, "files": report.files, "duplicates_skipped": report.duplicates,
            "invalid_lines": report.invalid_count, "unreadable_files": report.unreadable_files,
            "unreadable_dirs": report.unreadable_dirs, "selected_hosts": sorted(hosts) if hosts else None,
            "period": {"from": since, "to": until},
            **report.fleet.as_dict(),
            "hosts": {name: h.as_dict() for name, h in sorted(report.hosts.items())},
        }, indent=2, allow_nan=False))
        return EX_FAILURE if failed else EX_OK
    if multi or len(report.hosts) > 1 or hosts:
        print_hosts(report, hosts)
        print()
    if by == "unit":
        print_by_unit(report)
    elif by == "component":
        print(f"{'component':<10} {'energy kWh':>14} {'emissions g':>14}")
        for c in report.overall.parts:
            print(f"{c:<10} {report.overall.energy_j[c] / JOULES_PER_KWH:>14.6f} {report.overall.emissions_g[c]:>14.3f}")
    else:
        parts = report.overall.parts
        print(f"{'day':<10} {'records':>8} " + " ".join(f"{c + ' kWh':>12}" for c in parts) + f" {'emissions g':>14}")
        for day, t in sorted(report.by_day.items()):
            print(f"{printable(day):<10} {t.records:>8} "
                  + " ".join(f"{t.energy_j[c] / JOULES_PER_KWH:>12.6f}" for c in parts)
                  + f" {sum(t.emissions_g.values()):>14.3f}")
    o = report.overall
    print(f"{'total':<10} {o.records:>8} records, {sum(o.energy_j.values()) / JOULES_PER_KWH:.6f} kWh, "
          f"{sum(o.emissions_g.values()):.3f} gCO2eq ({sum(o.emissions_g.values()) / 1000:.6f} kg)")
    if o.embodied_g:  # its own line: embodied carbon is never part of the operational figure above
        print(f"{'embodied':<10} {o.embodied_g:.3f} gCO2eq (hardware manufacture, apportioned; not in the total above)")
    return EX_FAILURE if failed else EX_OK


def print_hosts(report: Report, selected: Sequence[str] = ()) -> None:
    """One row per host (name order), then the fleet row; ``from`` says where each name came from."""
    names = sorted(n for n in report.hosts if not selected or n in selected)
    shown = {n: printable(n) for n in names}
    width = max(10, *(len(v) for v in shown.values())) if shown else 10
    print(f"{'host':<{width}} {'from':<10} {'records':>8} {'measured s':>11} {'first record':<24} {'last record':<24} "
          f"{'energy kWh':>12} {'emissions g':>12} {'dups':>6}")
    fleet_first: list[str] = []
    fleet_last: list[str] = []
    sums = [0, 0.0, 0.0, 0.0, 0]
    for n in names:
        h = report.hosts[n]
        kwh = sum(h.overall.energy_j.values()) / JOULES_PER_KWH
        grams = sum(h.overall.emissions_g.values())
        print(f"{shown[n]:<{width}} {h.host_from:<10} {h.overall.records:>8} {h.measured_s:>11.1f} "
              f"{printable(h.first or '-'):<24} {printable(h.last or '-'):<24} {kwh:>12.6f} {grams:>12.3f} "
              f"{h.duplicates:>6}")
        fleet_first += [h.first] if h.first else []
        fleet_last += [h.last] if h.last else []
        for i, v in enumerate((h.overall.records, h.measured_s, kwh, grams, h.duplicates)):
            sums[i] += v
    label = f"fleet ({len(names)} host{'s' if len(names) != 1 else ''})"
    print(f"{label:<{width + 11}} {sums[0]:>8} {sums[1]:>11.1f} {printable(min(fleet_first, default='-')):<24} "
          f"{printable(max(fleet_last, default='-')):<24} {sums[2]:>12.6f} {sums[3]:>12.3f} {sums[4]:>6}")
    print(f"{len(report.directories)} director{'ies' if len(report.directories) != 1 else 'y'}, {report.files} files; "
          "host from: record = the records' host field, dir = the directory's name (records without host)")


def print_by_unit(report: Report) -> None:
    """Units by energy, largest first; ``other`` and ``unattributed`` last."""
    if not report.by_unit:
        print("no per-unit data in these records (attribution off or unavailable; see docs/attribution.md)")
        return
    total_j = sum(a[0] for a in report.by_unit.values()) or 1.0
    tail = [u for u in (OTHER, UNATTRIBUTED) if u in report.by_unit]
    named = sorted((u for u in report.by_unit if u not in tail), key=lambda u: -report.by_unit[u][0])
    shown = {u: printable(u) for u in report.by_unit}  # a unit name may hold ESC, CR, LF: never raw to a terminal
    width = max(10, *(len(v) for v in shown.values()))
    print(f"{'unit':<{width}} {'energy kWh':>14} {'share':>7} {'emissions g':>14} {'cpu s':>10}")
    for u in named + tail:
        j, g, cpu_s, _, _ = report.by_unit[u]
        print(f"{shown[u]:<{width}} {j / JOULES_PER_KWH:>14.6f} {100 * j / total_j:>6.1f}% {g:>14.3f} {cpu_s:>10.1f}")


def printable(text: str) -> str:
    """``text`` with control characters escaped (``\\x1b``), as it must reach a terminal."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")
