"""report_svg's geometry (parsed with xml.etree), report_html's page, and the report's new
breakdowns (embodied, measured/estimated, intensity per hour, top units, --from/--to)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from src.service import report_svg as svg
from src.service.exit_codes import EX_CANTCREAT
from src.service.report import build_report, run_report
from src.service.report_html import CSP, render, write_html

REPO = Path(__file__).resolve().parents[2]
NS = {"s": "http://www.w3.org/2000/svg"}
HOSTILE = "x<script>alert('u')</script>\"&\x1b[31m\x00.service"


def rec(seq: int, end: str, *, host: str = "h1", cpu: float = 100.0, ram: float = 20.0, remainder: float = 0.0,
        ci: float = 200.0, source: str = "electricitymaps", methods: dict | None = None,
        embodied: float | None = None, units: dict | None = None, run: str = "r") -> str:
    e = {"cpu": cpu, "ram": ram, "gpu": 0.0}
    if remainder:
        e["remainder"] = remainder
    r: dict[str, Any] = {"interval_end": end, "duration_s": 15.0, "seq": seq, "run_id": f"{run}-{host}", "host": host,
                         "energy_j": {**e, "total": sum(e.values())},
                         "emissions_g": {k: v / 3.6e6 * ci for k, v in e.items()},
                         "carbon_intensity_g_per_kwh": ci, "intensity_source": source,
                         "energy_method": methods if methods is not None else {"cpu": "rapl", "ram": "constant"}}
    if embodied is not None:
        r["embodied_g"] = embodied
    if units is not None:
        r["units"] = units
    return json.dumps(r) + "\n"


def write(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(lines))
    return path


# ---- report_svg -------------------------------------------------------------------------------------------


def parse(text: str) -> ET.Element:
    return ET.fromstring(text)


def test_nice_ticks_cover_the_top() -> None:
    assert svg.nice_ticks(7.6) == [0, 2, 4, 6, 8]
    assert svg.nice_ticks(1700)[-1] == 2000
    assert svg.nice_ticks(0.0) == [0.0, 1.0]
    for top in (0.003, 1.0, 9.99, 123.4, 5e7):
        ticks = svg.nice_ticks(top)
        assert ticks[-1] >= top and ticks[-2] < top and len(ticks) <= 11


def test_stacked_bars_heights_are_proportional_and_stacks_sum() -> None:
    days = ["2026-11-28", "2026-11-29", "2026-11-30"]
    series = [("cpu", "#00f", [3.0, 1.0, 0.0]), ("ram", "#f0f", [1.0, 1.0, 2.0]), ("remainder", "#999", [0.0, 0.0, 4.0])]
    root = parse(svg.stacked_bars(days, series, unit="kWh", label="energy"))
    plot_h = int(root.get("height")) - svg.TOP - svg.BOTTOM
    top = svg.nice_ticks(6.0)[-1]
    bars = root.findall("s:g[@class='bar']", NS)
    assert [b.get("data-category") for b in bars] == days
    for bar, expected in zip(bars, (4.0, 2.0, 6.0)):
        rects = bar.findall("s:rect", NS)
        assert float(bar.get("data-sum")) == expected
        assert sum(float(r.get("data-value")) for r in rects) == pytest.approx(expected)
        for r in rects:
            assert float(r.get("height")) == pytest.approx(float(r.get("data-value")) / top * plot_h)
        # stacked: each rect starts where the one below ends, the first on the axis
        ys = sorted(((float(r.get("y")), float(r.get("height"))) for r in rects), reverse=True)
        assert ys[0][0] + ys[0][1] == pytest.approx(int(root.get("height")) - svg.BOTTOM)
        for (y_lo, _), (y_hi, h_hi) in zip(ys, ys[1:]):
            assert y_hi + h_hi == pytest.approx(y_lo)
    assert [r.get("data-series") for r in bars[2].findall("s:rect", NS)] == ["ram", "remainder"]  # zero parts not drawn
    labels = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "kWh" in labels and "6" in labels and "2026-11-29" in labels
    assert {"cpu", "ram", "remainder"} <= set(labels)  # the legend


def test_stacked_bars_without_data_say_so() -> None:
    root = parse(svg.stacked_bars(["d"], [("cpu", "#000", [0.0])], unit="kWh", label="energy"))
    assert root.find("s:text[@class='empty']", NS).text == "energy: no data"
    assert not root.findall(".//s:rect", NS)


def test_step_chart_points_and_gaps() -> None:
    pts = [(0.0, 100.0, "a"), (1.0, 200.0, "a"), (2.0, 300.0, "b"), (3.0, 50.0, "a")]
    root = parse(svg.step_chart(pts, {"a": "#0f0", "b": "#f00"}, x_labels=[(0.0, "11-28"), (9.0, "never")],
                                unit="g/kWh", label="intensity"))
    circles = root.findall("s:circle", NS)
    assert len(circles) == 4
    h = int(root.get("height"))
    top = svg.nice_ticks(300.0)[-1]
    for c in circles:
        v = float(c.get("data-value"))
        assert float(c.get("cy")) == pytest.approx(h - svg.BOTTOM - v / top * (h - svg.TOP - svg.BOTTOM))
    xs = sorted(float(c.get("cx")) for c in circles)
    assert xs[1] - xs[0] == pytest.approx(xs[3] - xs[2])  # x proportional to time
    path_a = root.find("s:path[@data-series='a']", NS).get("d")
    assert path_a.count("M") == 2  # a steps 0 -> 1, then breaks: absent at 2
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "11-28" in texts and "never" not in texts and "g/kWh" in texts


def test_hbars_lengths_and_hostile_names() -> None:
    root = parse(svg.hbars([(HOSTILE, 4.0, "#00f"), ("b.service", 1.0, "#00f")], unit="kWh", label="units"))
    rects = root.findall(".//s:rect", NS)
    assert float(rects[0].get("width")) == pytest.approx(4 * float(rects[1].get("width")))
    name = root.find(".//s:text[@class='y-label']", NS).text
    assert "<script>" in name and "\\x1b" in name and "\x1b" not in name and "\x00" not in name  # text, escaped


# ---- the report's breakdowns ------------------------------------------------------------------------------


@pytest.fixture
def two_hosts(tmp_path: Path) -> Path:
    root = tmp_path / "fleet"
    u = {"web.service": {"energy_j": 80.0, "emissions_g": 0.004, "cpu_s": 3.0, "embodied_g": 0.4},
         "unattributed": {"energy_j": 40.0, "emissions_g": 0.002, "cpu_s": 0.0, "embodied_g": 0.1}}
    write(root / "h1" / "emissions_2026-11-29.json",
          [rec(1, "2026-11-29T10:00:00.000Z", embodied=0.5, units=u),
           rec(2, "2026-11-29T10:30:00.000Z", embodied=0.5, units=u, ci=400.0, cpu=300.0)])
    write(root / "h1" / "emissions_2026-11-30.json",
          [rec(3, "2026-11-30T00:00:00.000Z", remainder=30.0, methods={"cpu": "rapl", "ram": "rapl", "platform": "redfish"})])
    write(root / "h2" / "emissions_2026-11-30.json",
          [rec(1, "2026-11-30T00:10:00.000Z", host="h2", source="country_mix", ci=300.0,
               methods={"cpu": "cpu_load_tdp", "ram": "constant"})])
    return root


def test_embodied_measured_and_intensity(two_hosts: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_report(None, as_json=True, fleets=[two_hosts]) == 0
    doc = json.loads(capsys.readouterr().out)
    o = doc["overall"]
    assert o["embodied_g"] == 1.0 and doc["by_day"]["2026-11-29"]["embodied_g"] == 1.0
    assert doc["by_day"]["2026-11-30"]["embodied_g"] == 0.0
    assert doc["hosts"]["h1"]["overall"]["embodied_g"] == 1.0 and doc["hosts"]["h2"]["overall"]["embodied_g"] == 0.0
    assert doc["by_unit"]["web.service"]["embodied_g"] == pytest.approx(0.8)
    # operational emissions are the parts' sum only: embodied is never added into them
    assert o["emissions_g"]["total"] == pytest.approx(sum(v for k, v in o["emissions_g"].items() if k != "total"))
    # measured: h1's cpu (rapl) each record, its ram (rapl) and remainder (redfish) on day 2; constant/cpu_load_tdp not
    assert o["measured_energy_j"] == 100.0 + 300.0 + (100.0 + 20.0 + 30.0)
    assert o["estimated_energy_j"] == o["energy_j"]["total"] - o["measured_energy_j"]
    assert doc["energy_by_method"]["remainder"] == {"redfish": 30.0}
    assert doc["energy_by_method"]["ram"] == {"constant": 60.0, "rapl": 20.0}
    hours = {(r["hour"], r["intensity_source"]): r for r in doc["intensity_by_hour"]}
    h10 = hours[("2026-11-29T10:00:00Z", "electricitymaps")]
    assert h10["records"] == 2 and h10["g_per_kwh"] == pytest.approx((200 * 120 + 400 * 320) / 440)  # energy-weighted
    assert hours[("2026-11-30T00:00:00Z", "country_mix")]["g_per_kwh"] == 300.0
    assert doc["top_units"][-1]["unit"] == "unattributed"
    assert doc["top_units"][0] == {"unit": "web.service", "energy_j": 160.0, "share": pytest.approx(160 / 240),
                                   "emissions_g": 0.008, "embodied_g": 0.8}


def test_top_units_keep_ten_and_fold_the_rest(tmp_path: Path) -> None:
    units = {f"u{i:02d}.service": {"energy_j": float(i + 1), "emissions_g": 0.0, "cpu_s": 1.0} for i in range(13)}
    units["other"] = {"energy_j": 5.0, "emissions_g": 0.0, "cpu_s": 1.0}
    write(tmp_path / "emissions_2026-11-30.json", [rec(1, "2026-11-30T01:00:00.000Z", units=units)])
    top = build_report(tmp_path).fleet.top_units()
    assert [u["unit"] for u in top][:3] == ["u12.service", "u11.service", "u10.service"]
    assert len(top) == 11 and top[-1]["unit"] == "other" and top[-1]["energy_j"] == 1 + 2 + 3 + 5.0
    assert sum(u["share"] for u in top) == pytest.approx(1.0)


def test_from_to_limit_every_output(two_hosts: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_report(None, as_json=True, fleets=[two_hosts], since="2026-11-30", until="2026-11-30") == 0
    doc = json.loads(capsys.readouterr().out)
    assert list(doc["by_day"]) == ["2026-11-30"] and doc["overall"]["records"] == 2
    assert doc["period"] == {"from": "2026-11-30", "to": "2026-11-30"} and doc["duplicates_skipped"] == 0
    assert run_report(None, as_json=False, fleets=[two_hosts], until="2026-11-29") == 0
    out = capsys.readouterr().out
    assert "2026-11-29" in out and "2026-11-30 " not in out
    assert re.search(r"^embodied\s+1\.000 gCO2eq", out, re.M)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "src.service.cli", "report", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=60)


def test_cli_rejects_bad_dates_in_one_line(two_hosts: Path) -> None:
    for bad in ("2026-02-30", "30.11.2026", "2026-11-3"):
        r = cli("--fleet", str(two_hosts), "--from", bad)
        assert r.returncode == 2 and f"'{bad}' is not a date (YYYY-MM-DD)" in r.stderr and "Traceback" not in r.stderr
    r = cli("--fleet", str(two_hosts), "--from", "2026-11-30", "--to", "2026-11-29")
    assert r.returncode == 1 and r.stderr.strip().count("\n") == 0 and "is after --to" in r.stderr


def test_cli_html_unwritable_path_is_one_line(two_hosts: Path, tmp_path: Path) -> None:
    for target in (tmp_path / "no" / "such" / "r.html", tmp_path):  # a missing directory; a directory
        r = cli("--fleet", str(two_hosts), "--html", str(target))
        assert r.returncode == EX_CANTCREAT, r.stderr
        assert r.stderr.startswith("tta-carbon: error: cannot write ") and r.stderr.count("\n") == 1
        assert "Traceback" not in r.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["fleet"]  # no temp file left behind


# ---- the page ---------------------------------------------------------------------------------------------


class Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_page_is_self_contained_escaped_and_carries_the_totals(tmp_path: Path) -> None:
    host = "web-<b>\"1\"</b>&\x07"
    units = {HOSTILE: {"energy_j": 100.0, "emissions_g": 0.005, "cpu_s": 1.0},
             "unattributed": {"energy_j": 20.0, "emissions_g": 0.001, "cpu_s": 0.0}}
    write(tmp_path / "d" / "emissions_2026-11-30.json",
          [rec(1, "2026-11-30T01:00:00.000Z", host=host, units=units, source="<img src=x>")])
    report = build_report(tmp_path / "d")
    page = render(report)
    p = Collect()
    p.feed(page)
    tags = [t for t, _ in p.tags]
    assert "script" not in tags and "img" not in tags and "link" not in tags and "style" in tags
    assert not any(k in ("src", "href") or (k.startswith("on")) for _, a in p.tags for k in a)
    assert ("meta", {"http-equiv": "Content-Security-Policy", "content": CSP}) in p.tags
    text = "".join(p.text)
    assert HOSTILE.replace("\x1b", "\\x1b").replace("\x00", "\\x00") in text
    assert "web-<b>\"1\"</b>&\\x07" in text and "<img src=x>" in text
    assert not re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f]", page)
    charts = [a["data-chart"] for t, a in p.tags if t == "figure"]
    assert charts == ["energy", "emissions", "intensity", "units", "measured"]
    totals = {a["data-name"]: a["data-total"] for _, a in p.tags if "data-total" in a}
    assert len(totals) == 5
    assert float(totals["energy_j"]) == 120.0 and totals["records"] == "1" and float(totals["embodied_g"]) == 0.0
    assert float(totals["emissions_g"]) == report.overall.emissions_g["cpu"] + report.overall.emissions_g["ram"]
    assert "no embodied carbon configured" in text.lower()
    assert "estimated" in text  # ram's `constant` is a model: said plainly
    for figure in re.findall(r"<svg.*?</svg>", page, re.S):  # every chart is valid XML
        ET.fromstring(figure)


def test_write_html_is_atomic_and_readable(tmp_path: Path) -> None:
    write(tmp_path / "d" / "emissions_2026-11-30.json", [rec(1, "2026-11-30T01:00:00.000Z")])
    target = tmp_path / "out.html"
    target.write_text("old")
    write_html(target, build_report(tmp_path / "d"))
    assert target.read_text().startswith("<!DOCTYPE html>")
    assert oct(os.stat(target).st_mode & 0o777) == "0o644"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "out.html"]


def test_empty_report_renders(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    page = render(build_report(tmp_path / "d"))
    assert page.count("no data") >= 3 and "no per-unit data" in page


def test_odd_interval_ends_render_without_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A record whose interval_end is no time still counts (as the tables always did) and the page renders."""
    write(tmp_path / "d" / "emissions_2026-11-30.json",
          [rec(1, "<svg onload=x>", units={}), rec(2, "2026-11-30T05:00:00.000Z"), rec(3, "2026-11-30T07:00:00.000Z")])
    target = tmp_path / "r.html"
    assert run_report(tmp_path / "d", as_json=False, html=target) == 0
    page = target.read_text()
    assert "&lt;svg onload=x&gt;" in page and "<svg onload" not in page
    root = ET.fromstring(re.search(r'<figure data-chart="intensity">.*?(<svg.*?</svg>)', page, re.S).group(1))
    assert len(root.findall("s:circle", NS)) == 2  # the two real hours
    assert "wrote" in capsys.readouterr().err
