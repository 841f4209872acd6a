#!/usr/bin/env python3
"""Run the fault suite and render docs/reliability.md from its results.

    uv run python scripts/reliability_report.py            # run the CI variant, write docs/reliability.md
    TTA_FULL_SOAK=1 uv run python scripts/reliability_report.py   # the long variants (minutes)
    uv run python scripts/reliability_report.py --results DIR     # re-render from an earlier run, no tests

Outcomes and durations come from pytest's junit XML; the figures each test measured come
from the JSON files the ``figures`` fixture writes (tests/reliability/conftest.py).
Reused cases from other suites (port in use, SIGHUP storm, bad-config corpus) are run too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "reliability.md"

# Cases that live in other suites: reused, not duplicated.
REUSED = {
    "tests/integration/test_daemon.py::test_port_in_use_exits_69_with_one_line":
        "Metrics port already in use at start: one clear error line, exit 69 (EX_UNAVAILABLE)",
    "tests/integration/test_reload.py::test_sighup_storm_keeps_cadence_and_loses_nothing":
        "SIGHUP storm (300 signals): keeps running, cadence kept, seq contiguous, final record",
    "tests/integration/test_reload.py::test_reload_applies_live_settings_and_rejects_bad_config":
        "SIGHUP with a broken config: reload rejected, measuring continues on the old config",
    "tests/prometheus/test_tls_auth.py::test_curl_over_tls_with_and_without_credentials":
        "TLS + basic auth: curl --cacert with right / wrong / no credentials (200 / 401 / 401), plain HTTP refused",
    "tests/prometheus/test_tls_auth.py::test_prometheus_scrapes_over_tls_with_basic_auth":
        "TLS + basic auth: a real Prometheus 2.42 scrapes over TLS with basic auth (up == 1)",
    "tests/prometheus/test_tls_auth.py::test_bad_web_config_is_one_line_exit_78":
        "Bad web config (plain-text password): one line, exit 78, secret not echoed, nothing created",
}
BAD_CONFIGS = REPO / "tests" / "data" / "bad_configs"
# Parametrised corpora rendered as one row each (area -> what the row proves).
CORPUS_AREAS = {
    "bad_config_corpus": "Every case in tests/data/bad_configs (YAML, environment file, env vars, paths, "
                         "permissions) through the real CLI: exit 78, exactly one stderr line naming the key, "
                         "value and source, nothing created.",
}


def run_suite(results: Path) -> None:
    results.mkdir(parents=True, exist_ok=True)
    targets = ["tests/reliability", *REUSED]
    if BAD_CONFIGS.is_dir():
        targets += [str(p.relative_to(REPO)) for p in (REPO / "tests").rglob("test_*bad_config*.py")]
    env = dict(os.environ, TTA_RELIABILITY_OUT=str(results / "figures"))
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={results / 'junit.xml'}",
           *targets]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=REPO, env=env, check=False)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_fmt(v)}" for k, v in value.items())
    return str(value)


def render(results: Path) -> str:
    tree = ET.parse(results / "junit.xml")
    figures = {}
    for f in sorted((results / "figures").glob("*.json")) if (results / "figures").is_dir() else []:
        data = json.loads(f.read_text())
        figures[data["nodeid"]] = data
    rows, counts, total_s = [], {"pass": 0, "FAIL": 0, "skip": 0}, 0.0
    full = any(d.get("full") for d in figures.values())
    groups: dict[str, list[tuple[str, str, float]]] = {}
    for case in tree.iter("testcase"):
        path = case.get("classname", "").replace(".", "/")
        nodeid = f"{path.rsplit('/', 1)[0]}/{path.rsplit('/', 1)[1]}.py::{case.get('name')}" if "/" in path else case.get("name")
        if case.find("failure") is not None or case.find("error") is not None:
            outcome = "FAIL"
        elif case.find("skipped") is not None:
            outcome = "skip"
        else:
            outcome = "pass"
        counts[outcome] += 1
        secs = float(case.get("time", 0))
        total_s += secs
        area = nodeid.split("::")[0].rsplit("/", 1)[-1].removeprefix("test_").removesuffix(".py")
        if area in CORPUS_AREAS:
            # Dozens of one-line rows say less than one row with the count and the failures by name.
            groups.setdefault(area, []).append((nodeid, outcome, secs))
            continue
        fig = figures.get(nodeid, {})
        what = fig.get("doc") or REUSED.get(nodeid.split("[")[0]) or case.get("name")
        if outcome == "skip":
            msg = case.find("skipped").get("message", "")
            figs = f"skipped: {msg}"
        else:
            figs = "; ".join(f"{k}: {_fmt(v)}" for k, v in fig.get("figures", {}).items())
        rows.append(f"| {area} | `{nodeid.split('::')[-1]}` | {what.replace('|', '/')} | {outcome} | {secs:.1f} | "
                    f"{figs.replace('|', '/')} |")
    for area, cases in groups.items():
        failed = [n.split("[", 1)[-1].rstrip("]") for n, o, _ in cases if o == "FAIL"]
        params = [c for c in cases if "[" in c[0]]
        outcome = "FAIL" if failed else "pass"
        figs = f"cases: {len(params)}; passed: {sum(o == 'pass' for _, o, _ in params)}"
        if failed:
            figs += "; failed: " + ", ".join(failed)
        shown = (params or cases)[0][0].split("::")[-1].split("[")[0]
        rows.append(f"| {area} | `{shown}` | {CORPUS_AREAS[area]} | {outcome} | "
                    f"{sum(s for _, _, s in cases):.1f} | {figs} |")
    head = [
        "# Reliability: fault suite results",
        "",
        "Generated by `scripts/reliability_report.py` from pytest's junit XML and the figures each test",
        "records; do not edit by hand. Regenerate with `uv run python scripts/reliability_report.py`",
        "(CI variant) or `TTA_FULL_SOAK=1 uv run python scripts/reliability_report.py` (long variants).",
        "",
        f"Variant: **{'full' if full else 'CI'}**; machine: {platform.platform()}, {os.cpu_count()} CPUs; "
        f"{counts['pass']} passed, {counts['FAIL']} failed, {counts['skip']} skipped; {total_s:.0f} s of test time.",
        "",
        "| area | test | case | result | s | figures |",
        "|---|---|---|---|---|---|",
    ]
    notes = (REPO / "docs" / "reliability-notes.md")
    tail = ["", notes.read_text().rstrip()] if notes.exists() else []
    return "\n".join(head + rows + tail) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", type=Path, help="render from this results dir (junit.xml + figures/) without running")
    ap.add_argument("--out", type=Path, default=DOC)
    ap.add_argument("--work", type=Path, default=REPO / ".reliability-results")
    args = ap.parse_args()
    results = args.results
    if results is None:
        results = args.work
        if (results / "figures").is_dir():
            for f in (results / "figures").glob("*.json"):
                f.unlink()
        run_suite(results)
    args.out.write_text(render(results))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
