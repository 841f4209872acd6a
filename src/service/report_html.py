"""`tta-carbon report --html FILE`: one self-contained page of the report's figures.

Everything is inline (CSS, SVG from report_svg.py); there is no script, and a
Content-Security-Policy of ``default-src 'none'`` forbids the page to fetch anything, so
it opens from a file, offline, and a hostile host or unit name in the records cannot
make it run or load anything: every text from the records goes through
``report_svg.text`` (escaped, control characters shown as ``\\x..``).

Test hooks: each chart is a ``<figure data-chart="...">`` and each headline figure an
element whose ``data-total`` is ``repr()`` of the same number that ``report --json``
prints, named by ``data-name`` (its --json key) (tests/integration/test_report_html_browser.py compares them).
"""

from __future__ import annotations

import datetime
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from src.components.carbon.attribution import OTHER, UNATTRIBUTED
from src.components.carbon.record import JOULES_PER_KWH, MEASURED_METHODS, REMAINDER
from src.service import report_svg as svg
from src.service.report import UNLABELLED, Report

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
CHART_W, CHART_H = 1000, 230  # viewBox size; the page scales it to its column
PART_COLORS = {"cpu": "#2563eb", "ram": "#8b5cf6", "gpu": "#10b981", REMAINDER: "#9ca3af"}
OPERATIONAL, EMBODIED = "#0f766e", "#f59e0b"
MEASURED, ESTIMATED = "#15803d", "#f97316"
SOURCE_COLORS = {"electricitymaps": "#16a34a", "electricitymaps_cached": "#84cc16", "profile": "#2563eb",
                 "fixed": "#475569", "country_mix": "#dc2626"}
EXTRA_COLORS = ("#db2777", "#0891b2", "#a16207", "#7c3aed", "#4d7c0f")
UNIT_COLOR, OTHER_COLOR, UNATTRIBUTED_COLOR = "#3b82f6", "#94a3b8", "#cbd5e1"

STYLE = """
:root{color-scheme:light}
*{box-sizing:border-box}
body{margin:0;background:#f3f4f6;color:#111827;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
main{max-width:1100px;margin:0 auto;padding:28px 24px 48px}
h1{font-size:26px;margin:0 0 4px}
h2{font-size:17px;margin:0 0 4px}
.sub{color:#4b5563;margin:0 0 20px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(190px,1fr));gap:12px;margin-bottom:20px}
.card{background:#fff;border-radius:10px;padding:14px 16px;box-shadow:0 1px 2px rgba(0,0,0,.06)}
.card .v{font-size:24px;font-weight:650;font-variant-numeric:tabular-nums}
.card .k{color:#6b7280;font-size:13px}
section,figure{background:#fff;border-radius:10px;padding:14px 20px;margin:0 0 14px;box-shadow:0 1px 2px rgba(0,0,0,.06)}
figcaption{color:#4b5563;font-size:13px;margin:0 0 8px}
svg{display:block;max-width:100%;height:auto}
table{border-collapse:collapse;width:100%;font-size:14px;font-variant-numeric:tabular-nums}
th,td{text-align:left;padding:4px 10px 4px 0;border-bottom:1px solid #e5e7eb;vertical-align:top}
td.n,th.n{text-align:right}
.note{background:#fffbeb;border-left:4px solid #f59e0b;padding:8px 12px;border-radius:4px;margin:8px 0}
.tag{display:inline-block;padding:0 6px;border-radius:4px;font-size:12px;color:#fff}
.cols{display:grid;grid-template-columns:1fr 1fr;gap:20px}
code{font-size:13px}
footer{color:#6b7280;font-size:12px;margin-top:12px}
"""


def _kwh(joules: float) -> str:
    return f"{joules / JOULES_PER_KWH:,.3f}"


def _g(grams: float) -> str:
    return f"{grams / 1000:,.3f} kg" if abs(grams) >= 10_000 else f"{grams:,.2f} g"


def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f} %" if whole > 0 else "-"


def _source_colors(sources: Sequence[str]) -> dict[str, str]:
    out, extra = {}, iter(EXTRA_COLORS * (1 + len(sources) // len(EXTRA_COLORS)))
    for s in sources:
        out[s] = SOURCE_COLORS.get(s) or next(extra)
    return out


def _hour(text: str) -> datetime.datetime | None:
    """``YYYY-MM-DDTHH:00:00Z`` (intensity_by_hour) as a time; None when the record's interval_end was not one."""
    try:
        return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    except ValueError:
        return None


def _kind(method: str) -> str:
    if method in MEASURED_METHODS:
        return "measured"
    return "unknown (no method in the records)" if method == UNLABELLED else "estimate"


def _card(key: str, value: float | int, shown: str, what: str) -> str:
    return (f'<div class="card"><div class="v" data-name="{key}" data-total="{value!r}">{svg.text(shown)}</div>'
            f'<div class="k">{svg.text(what)}</div></div>')


def _figure(name: str, title: str, caption: str, chart: str) -> str:
    return (f'<figure data-chart="{name}"><h2>{svg.text(title)}</h2><figcaption>{caption}</figcaption>'
            f'{chart}</figure>')


def render(report: Report, *, since: str | None = None, until: str | None = None,
           selected_hosts: Sequence[str] = (), generated: datetime.datetime | None = None) -> str:
    """The page as text. ``generated`` (default now, UTC) is printed in the footer only."""
    fleet, o = report.fleet, report.overall
    days = sorted(report.by_day)
    total_j = sum(o.energy_j.values())
    total_g = sum(o.emissions_g.values())
    hosts = sorted(n for n in report.hosts if not selected_hosts or n in selected_hosts)
    first = since or (days[0] if days else "-")
    last = until or (days[-1] if days else "-")
    estimated_j = total_j - o.measured_j

    cards = "".join([
        _card("energy_j", total_j, f"{_kwh(total_j)} kWh", "energy, all components"),
        _card("emissions_g", total_g, _g(total_g), "CO\u2082eq operational (electricity)"),
        _card("embodied_g", o.embodied_g, _g(o.embodied_g) if o.embodied_g else "none configured",
              "CO\u2082eq embodied (hardware, apportioned)"),
        _card("records", o.records, f"{o.records:,}", "records counted"),
        _card("measured_energy_j", o.measured_j, _pct(o.measured_j, total_j), "of the energy measured by hardware"),
    ])

    # (a) daily energy by component
    parts = o.parts
    energy = svg.stacked_bars(days, [(c, PART_COLORS[c], [report.by_day[d].energy_j[c] / JOULES_PER_KWH for d in days])
                                     for c in parts],
                              unit="kWh", label="daily energy by component", width=CHART_W, height=CHART_H)
    remainder_note = (" <b>remainder</b> is what the platform meter measured beyond cpu + ram + gpu "
                      "(PSU losses, fans, disks, board)." if REMAINDER in parts else "")
    # (b) daily emissions, operational and embodied
    series = [("operational", OPERATIONAL, [sum(report.by_day[d].emissions_g.values()) for d in days])]
    if o.embodied_g:
        series.append(("embodied", EMBODIED, [report.by_day[d].embodied_g for d in days]))
        emb_note = ("Embodied carbon is the records' <code>embodied_g</code>: hardware manufacture apportioned to "
                    "the time measured; it is shown apart and never added into the operational figure.")
    else:
        emb_note = ("<b>No embodied carbon configured</b>: the records carry no <code>embodied_g</code>, so only "
                    "operational emissions are shown.")
    emissions = svg.stacked_bars(days, series, unit="g CO\u2082eq", label="daily emissions",
                                 width=CHART_W, height=CHART_H)
    # (c) intensity over time, per hour and source
    rows = fleet.intensity_by_hour()
    sources = sorted({r["intensity_source"] for r in rows})
    colors = _source_colors(sources)
    timed = [(t, r) for r in rows if (t := _hour(r["hour"])) is not None]  # an interval_end that is no time: not drawn
    if timed:
        t0 = min(t for t, _ in timed)
        hours = [((t - t0).total_seconds() / 3600, r) for t, r in timed]
        day_marks = sorted({h - (h + t0.hour) % 24 for h, _ in hours})
        step = max(1, len(day_marks) // 12)
        x_labels = [(x, (t0 + datetime.timedelta(hours=x)).strftime("%m-%d")) for x in day_marks[::step]]
        intensity = svg.step_chart([(h, r["g_per_kwh"], r["intensity_source"]) for h, r in hours], colors,
                                   x_labels=x_labels, unit="g CO\u2082eq/kWh", label="carbon intensity",
                                   width=CHART_W, height=CHART_H)
    else:
        intensity = svg.empty("carbon intensity: no records carry carbon_intensity_g_per_kwh", width=CHART_W)
    # (d) top units
    top = fleet.top_units()
    units_chart = svg.hbars(
        [(u["unit"], u["energy_j"] / JOULES_PER_KWH,
          OTHER_COLOR if u["unit"] == OTHER else UNATTRIBUTED_COLOR if u["unit"] == UNATTRIBUTED else UNIT_COLOR)
         for u in top], unit="kWh", label="energy by systemd unit", width=CHART_W,
        value_text=[f"{100 * u['share']:.1f} %  ({u['energy_j'] / JOULES_PER_KWH:,.3f} kWh)" for u in top]) if top else \
        svg.empty("no per-unit data in these records (attribution off or unavailable)", width=CHART_W)
    # (e) measured vs estimated, per day
    measured = svg.stacked_bars(days, [
        ("measured (hardware counter or meter)", MEASURED, [report.by_day[d].measured_j / JOULES_PER_KWH for d in days]),
        ("estimated (model)", ESTIMATED,
         [(sum(report.by_day[d].energy_j.values()) - report.by_day[d].measured_j) / JOULES_PER_KWH for d in days]),
    ], unit="kWh", label="measured and estimated energy", width=CHART_W, height=CHART_H)

    # methods and assumptions
    methods = fleet.energy_by_method()
    method_rows = "".join(
        f"<tr><td>{svg.text(part)}</td><td><code>{svg.text(m)}</code></td>"
        f"<td>{_kind(m)}</td>"
        f'<td class="n">{_kwh(j)}</td><td class="n">{_pct(j, total_j)}</td></tr>'
        for part, by in methods.items() for m, j in sorted(by.items(), key=lambda kv: -kv[1]))
    src_stats: dict[str, list[float]] = {}
    for r in rows:
        acc = src_stats.setdefault(r["intensity_source"], [0, 0.0])
        acc[0] += r["records"]
        acc[1] += r["energy_j"]
    source_rows = "".join(
        f'<tr><td><span class="tag" style="background:{colors[s]}">&#160;</span> <code>{svg.text(s)}</code></td>'
        f'<td class="n">{int(n):,}</td><td class="n">{_pct(j, total_j)}</td></tr>' for s, (n, j) in src_stats.items())
    assumptions = "".join(f"<li>{svg.text(t)} <span class='k'>({n:,} records)</span></li>"
                          for t, n in fleet.assumptions.items())
    estimate_note = (f'<p class="note">{_pct(estimated_j, total_j)} of the energy ({_kwh(estimated_j)} kWh) is '
                     "<b>estimated</b> from models (CPU load &#215; TDP, RAM per DIMM, sampled GPU power), not read "
                     "from hardware counters; figures built on it are estimates too.</p>") if estimated_j > 0 else \
        '<p>All energy figures come from hardware counters or meters.</p>'
    host_rows = "".join(
        f'<tr><td>{svg.text(n)}</td><td class="n">{h.overall.records:,}</td>'
        f'<td class="n">{_kwh(sum(h.overall.energy_j.values()))}</td>'
        f'<td class="n">{_g(sum(h.overall.emissions_g.values()))}</td>'
        f'<td class="n">{_g(h.overall.embodied_g) if h.overall.embodied_g else "-"}</td>'
        f'<td>{svg.text(h.first or "-")}</td><td>{svg.text(h.last or "-")}</td></tr>'
        for n in hosts for h in [report.hosts[n]])
    embodied_line = ("Embodied emissions come from the embodied carbon configured on each host." if o.embodied_g
                     else "No embodied carbon is configured: manufacture is not counted.")
    stamp = (generated or datetime.datetime.now(datetime.UTC)).strftime("%Y-%m-%d %H:%M UTC")
    problems = report.invalid_count + len(report.unreadable_files) + len(report.unreadable_dirs)

    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Carbon report {svg.text(first)} to {svg.text(last)}</title>
<style>{STYLE}</style></head>
<body><main>
<h1>Carbon report</h1>
<p class="sub">{svg.text(first)} to {svg.text(last)} (UTC days) &#183; {len(hosts)} host{'s' if len(hosts) != 1 else ''}:
{svg.text(', '.join(hosts[:20]) + (f' and {len(hosts) - 20} more' if len(hosts) > 20 else '') or 'none')}
&#183; {report.files:,} files{f' &#183; {problems} problem(s) skipped, see the command output' if problems else ''}</p>
<div class="cards">{cards}</div>
{_figure("energy", "Energy per day, by component", "kWh per UTC day, stacked." + remainder_note, energy)}
{_figure("emissions", "Emissions per day", "g CO&#8322;eq per UTC day. " + emb_note, emissions)}
{_figure("intensity", "Carbon intensity over time",
         "g CO&#8322;eq per kWh applied to the records, per UTC hour (energy-weighted mean), "
         "coloured by the source that gave it.",
         intensity)}
{_figure("units", "Energy by systemd unit",
         f"Share of the energy, top {len([u for u in top if u['unit'] not in (OTHER, UNATTRIBUTED)])} units; "
         "<b>other</b> = the remaining units, <b>unattributed</b> = idle, kernel, RAM and GPU energy "
         "no unit's CPU time explains.",
         units_chart)}
{_figure("measured", "Measured and estimated energy",
         f"kWh per UTC day: {_pct(o.measured_j, total_j)} measured, {_pct(estimated_j, total_j)} estimated overall.",
         measured)}
<section data-section="methods"><h2>Methods and assumptions</h2>
{estimate_note}
<div class="cols"><div><table><tr><th>part</th><th>energy_method</th><th>kind</th><th class="n">kWh</th><th class="n">share</th></tr>
{method_rows or '<tr><td colspan="5">no records</td></tr>'}</table></div>
<div><table><tr><th>intensity source</th><th class="n">records</th><th class="n">energy share</th></tr>
{source_rows or '<tr><td colspan="3">none</td></tr>'}</table>
{f'<p><b>Energy assumptions</b> stated by the records:</p><ul>{assumptions}</ul>' if assumptions else ''}</div></div>
<p>Operational emissions = energy &#215; the carbon intensity of the interval. {embodied_line}</p>
</section>
<section data-section="hosts"><h2>Hosts</h2>
<table><tr><th>host</th><th class="n">records</th><th class="n">kWh</th><th class="n">operational</th><th class="n">embodied</th><th>first record</th><th>last record</th></tr>
{host_rows or '<tr><td colspan="7">no hosts</td></tr>'}</table></section>
<footer>tta-carbon report, generated {stamp}. The same figures: <code>tta-carbon report --json</code>.</footer>
</main></body></html>
"""


def write_html(path: Path, report: Report, *, since: str | None = None, until: str | None = None,
               selected_hosts: Sequence[str] = ()) -> None:
    """Render and write atomically (a temp file in the same directory, then rename): a reader or a
    web server never sees half a page. Raises OSError (the caller prints it in one line)."""
    page = render(report, since=since, until=until, selected_hosts=selected_hosts).encode("utf-8")
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(page)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600: the page is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
