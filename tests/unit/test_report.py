"""`tta-carbon report` over several hosts: real files in temp dirs, read through the real code."""

from __future__ import annotations

import gzip
import json
import random
import re
import tracemalloc
from pathlib import Path

import pytest

from src.service.report import Source, build_report, run_report

REPO = Path(__file__).resolve().parents[2]


def rec(run_id: str, seq: int, end: str, *, host: str | None = None, cpu_j: float = 100.0, duration_s: float = 15.0,
        units: dict | None = None, g_per_j: float = 0.01) -> str:
    """A record shaped like the daemon's (docs/records.md), the fields report reads."""
    r: dict = {"timestamp": end, "interval_end": end, "duration_s": duration_s, "seq": seq, "run_id": run_id,
               "energy_j": {"cpu": cpu_j, "ram": 25.0, "gpu": 0.0},
               "emissions_g": {"cpu": cpu_j * g_per_j, "ram": 25.0 * g_per_j, "gpu": 0.0}}
    if host is not None:
        r["host"] = host
    if units is not None:
        r["units"] = units
    return json.dumps(r, separators=(",", ":")) + "\n"


def minute(day: str, i: int) -> str:
    return f"{day}T{i // 60:02d}:{i % 60:02d}:00.000Z"


def write(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(lines).encode()
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    """web-1 (host field; a rotated .gz and a live file), web-2 (host field), db-1 (no host field:
    record_hostname false), web-1-copy (an rsync copy of part of web-1: the same records)."""
    root = tmp_path / "fleet"
    w1 = [rec("run-w1", s, minute("2026-11-29", s), host="web-1") for s in range(1, 11)]
    w1b = [rec("run-w1", s, minute("2026-11-30", s), host="web-1") for s in range(11, 21)]
    write(root / "web-1" / "emissions_2026-11-29.json.1.gz", w1)
    write(root / "web-1" / "emissions_2026-11-30.json", w1b)
    write(root / "web-2" / "emissions_2026-11-30.json",
          [rec("run-w2", s, minute("2026-11-30", s), host="web-2", cpu_j=200.0) for s in range(1, 6)])
    write(root / "db-1" / "emissions_2026-11-30.json",
          [rec("run-db", s, minute("2026-11-30", s), duration_s=10.0) for s in range(1, 4)])
    write(root / "web-1-copy" / "emissions_2026-11-30.json", w1b[:7])
    return root


def test_fleet_tree_per_host_totals_and_fleet_total(fleet: Path) -> None:
    from src.service.report import fleet_sources

    sources, notes = fleet_sources(fleet)
    assert [s.name for s in sources] == ["db-1", "web-1", "web-1-copy", "web-2"] and notes == []
    rep = build_report(sources)
    assert sorted(rep.hosts) == ["db-1", "web-1", "web-2"]  # the copy adds no host: its records are web-1's
    w1, w2, db = rep.hosts["web-1"], rep.hosts["web-2"], rep.hosts["db-1"]
    assert (w1.overall.records, w1.duplicates, w1.host_from) == (20, 7, "record")
    assert (w1.first, w1.last) == ("2026-11-29T00:01:00.000Z", "2026-11-30T00:20:00.000Z")
    assert w1.measured_s == 20 * 15.0
    assert w1.overall.energy_j["cpu"] == 2000.0 and w1.overall.emissions_g["cpu"] == 20.0
    assert (w2.overall.records, w2.overall.energy_j["cpu"], w2.host_from) == (5, 1000.0, "record")
    assert (db.overall.records, db.measured_s, db.host_from) == (3, 30.0, "dir")
    assert rep.overall.records == 28 and rep.duplicates == 7
    assert rep.overall.energy_j["cpu"] == 2000.0 + 1000.0 + 300.0
    assert rep.overall.energy_j["ram"] == 28 * 25.0
    assert {d: t.records for d, t in rep.by_day.items()} == {"2026-11-29": 10, "2026-11-30": 18}
    assert rep.hosts["web-1"].by_day["2026-11-30"].records == 10


def test_fleet_json_and_text_say_where_each_host_came_from(fleet: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_report(None, as_json=True, fleets=[fleet]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["hosts"]["db-1"]["host_from"] == "dir" and doc["hosts"]["web-2"]["host_from"] == "record"
    assert doc["hosts"]["web-1"]["directories"] == [str(fleet / "web-1"), str(fleet / "web-1-copy")]
    assert doc["hosts"]["web-1"]["measured_s"] == 300.0 and doc["hosts"]["web-1"]["duplicates_skipped"] == 7
    assert doc["overall"]["records"] == 28 and doc["duplicates_skipped"] == 7 and doc["files"] == 5
    assert sum(h["overall"]["emissions_g"]["total"] for h in doc["hosts"].values()) == \
        doc["overall"]["emissions_g"]["total"]
    assert run_report(None, as_json=False, fleets=[fleet]) == 0
    out = capsys.readouterr().out
    rows = {ln.split()[0]: ln.split() for ln in out.splitlines() if ln.strip()}
    assert rows["db-1"][1:3] == ["dir", "3"] and rows["web-1"][1:3] == ["record", "20"]
    assert rows["web-1"][-1] == "7"  # duplicates skipped
    assert rows["fleet"][1:4] == ["(3", "hosts)", "28"]
    assert "host from: record = the records' host field, dir = the directory's name" in out
    assert out.splitlines()[-1].startswith("total") and " 28 records" in out.splitlines()[-1]


def test_same_records_in_two_dirs_count_once(tmp_path: Path) -> None:
    """An rsync copy plus the live dir, each with records the other lacks: the union, once."""
    from src.service.report import Source

    live = [rec("run-a", s, minute("2026-11-30", s), host="web-1") for s in range(1, 101)]
    write(tmp_path / "live" / "emissions_2026-11-30.json", live[40:])
    write(tmp_path / "rsync" / "emissions_2026-11-30.json", live[:60])
    rep = build_report([Source(tmp_path / "live", "live"), Source(tmp_path / "rsync", "rsync")])
    assert list(rep.hosts) == ["web-1"]
    assert (rep.overall.records, rep.duplicates, rep.overall.energy_j["cpu"]) == (100, 20, 100 * 100.0)


def test_records_without_host_take_the_directory_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """record_hostname turned off half way: the name comes from the field, then the directory."""
    lines = [rec("r", 1, minute("2026-11-30", 1), host="web-7"), rec("r", 2, minute("2026-11-30", 2))]
    write(tmp_path / "web-7" / "emissions_2026-11-30.json", lines)
    write(tmp_path / "other" / "emissions_2026-11-30.json", [rec("q", 1, minute("2026-11-30", 1))])
    assert run_report(None, as_json=True, dirs=[tmp_path / "web-7", tmp_path / "other"]) == 0
    hosts = json.loads(capsys.readouterr().out)["hosts"]
    assert {n: (h["host_from"], h["records"]) for n, h in hosts.items()} == \
        {"web-7": ("record+dir", 2), "other": ("dir", 1)}


def test_same_directory_name_for_two_hosts_is_warned(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path / "a" / "codecarbon" / "emissions_2026-11-30.json", [rec("r1", 1, minute("2026-11-30", 1))])
    write(tmp_path / "b" / "codecarbon" / "emissions_2026-11-30.json", [rec("r2", 1, minute("2026-11-30", 1))])
    assert run_report(None, as_json=False, dirs=[tmp_path / "a" / "codecarbon", tmp_path / "b" / "codecarbon"]) == 0
    err = capsys.readouterr().err
    assert "host 'codecarbon' is the name of 2 directories" in err and len(err.splitlines()) == 1


def test_by_unit_and_component_per_host_and_for_the_fleet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def units(web: float) -> dict:
        return {"web.service": {"energy_j": web, "emissions_g": web / 100, "cpu_s": 1.0},
                "unattributed": {"energy_j": 125.0 - web, "emissions_g": (125.0 - web) / 100, "cpu_s": 0.0}}

    write(tmp_path / "h1" / "emissions_2026-11-30.json", [rec("r1", 1, minute("2026-11-30", 1), host="h1",
                                                              units=units(100.0))])
    write(tmp_path / "h2" / "emissions_2026-11-30.json", [rec("r2", 1, minute("2026-11-30", 1), host="h2",
                                                              units=units(25.0))])
    dirs = [tmp_path / "h1", tmp_path / "h2"]

    def unit_rows(**kw) -> dict[str, list[str]]:
        assert run_report(None, as_json=False, by="unit", dirs=dirs, **kw) == 0
        out = capsys.readouterr().out
        table = out[out.index("\nunit "):].splitlines()[2:-1]
        return {ln.split()[0]: ln.split() for ln in table}

    assert unit_rows()["web.service"][2] == "50.0%"  # 125 J of 250 J
    assert unit_rows(hosts=["h1"])["web.service"][2] == "80.0%"  # 100 J of 125 J
    assert unit_rows(hosts=["h2"])["web.service"][2] == "20.0%"
    assert run_report(None, as_json=False, by="component", dirs=dirs, hosts=["h2"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^cpu\s+0\.000028\s+1\.000$", out, re.M), out
    assert out.splitlines()[-1].split()[1] == "1"  # one record: h2's
    assert run_report(None, as_json=True, dirs=dirs) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["hosts"]["h1"]["by_unit"]["web.service"]["energy_j"] == 100.0
    assert doc["by_unit"]["web.service"]["energy_j"] == 125.0


def test_bad_input_in_a_fleet_is_skipped_and_counted(fleet: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Garbage lines, a damaged .gz, a dir that does not exist: one line each, the rest reported."""
    write(fleet / "web-2" / "emissions_2026-11-29.json", ["garbage\n", '{"seq": 1}\n'] * 600)
    (fleet / "web-2" / "emissions_2026-11-28.json.1.gz").write_bytes(b"not gzip at all\n")
    # web-2's records misfiled under db-1, in a .gz cut in half: the host field wins; lines before the cut count
    whole = gzip.compress("".join(rec("run-w2", s, minute("2026-11-28", s), host="web-2")
                                  for s in range(100, 500)).encode())
    (fleet / "db-1" / "emissions_2026-11-28.json.2.gz").write_bytes(whole[: len(whole) // 2])
    with gzip.open(fleet / "db-1" / "emissions_2026-11-28.json.2.gz", "rt") as fh:
        readable = []
        with pytest.raises(EOFError):
            readable.extend(ln for ln in fh if ln.endswith("\n"))
    assert 0 < len(readable) < 400
    missing = tmp_path / "no-such-dir"
    assert run_report(None, as_json=True, fleets=[fleet], dirs=[missing]) == 1  # a named dir was missing
    cap = capsys.readouterr()
    doc = json.loads(cap.out)
    assert doc["invalid_lines"] == 1200 and len(doc["unreadable_files"]) == 2
    assert any("not a gzipped file" in u.lower() for u in doc["unreadable_files"])
    assert doc["hosts"]["web-2"]["records"] == 5 + len(readable)
    assert doc["hosts"]["web-2"]["directories"] == [str(fleet / "db-1"), str(fleet / "web-2")]
    assert doc["hosts"]["db-1"]["records"] == 3 and doc["overall"]["records"] == 28 + len(readable)
    err = cap.err.splitlines()
    assert f"tta-carbon: error: directory {missing} does not exist or is not a directory (skipped)" in err
    invalid = [ln for ln in err if "invalid line" in ln]
    assert len(invalid) == 1 and invalid[0].startswith("tta-carbon: warning: skipped 1200 invalid line(s): ")
    assert invalid[0].endswith(" ...") and invalid[0].count(" line ") == 5
    assert not any("Traceback" in ln for ln in err)


def test_invalid_lines_are_counted_not_kept(tmp_path: Path) -> None:
    write(tmp_path / "emissions_2026-11-30.json", ["not json\n"] * 5000)
    rep = build_report(tmp_path)
    assert rep.invalid_count == 5000 and len(rep.invalid_lines) == 5


def test_seen_records_agrees_with_a_set_in_any_order() -> None:
    from src.service.report import SeenRecords

    rng = random.Random(16)
    keys = [(f"run-{r}", s) for r in range(5) for s in rng.sample(range(1, 400), 250)]
    keys += rng.choices(keys, k=600)  # duplicates, anywhere
    rng.shuffle(keys)
    seen, reference = SeenRecords(), set()
    for k in keys:
        assert (seen.add(k, "h") is None) == (k not in reference), k
        reference.add(k)
    ordered = SeenRecords()
    for s in range(1, 10_001):
        assert ordered.add(("r", s), "h") is None
    assert ordered.add(("r", 5000), "h") == "h" and ordered.ranges() == 1


def test_memory_does_not_grow_with_the_records(tmp_path: Path) -> None:
    """60,000 records of one host: what report keeps is per host/day/run, not per record
    (a set of every (run_id, seq) peaked at ~8 MB here; 1,000 hosts x 30 days is 2,900x more)."""
    day = "2026-11-30"
    line = rec("run-1", 0, minute(day, 1), host="web-1")
    with gzip.open(tmp_path / f"emissions_{day}.json.1.gz", "wt") as fh:
        for s in range(1, 60_001):
            fh.write(line.replace('"seq":0', f'"seq":{s}'))
    tracemalloc.start()
    try:
        rep = build_report(tmp_path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rep.overall.records == 60_000
    assert peak < 2_000_000, peak


def test_fleet_root_mistakes_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--dir on a fleet root suggests --fleet; --fleet on a host dir says it reads subdirectories."""
    write(tmp_path / "root" / "web-1" / "emissions_2026-11-30.json", [rec("r", 1, minute("2026-11-30", 1))])
    assert run_report(tmp_path / "root", as_json=False) == 0
    err = capsys.readouterr().err
    assert "holds no emissions_* files but 1 of its subdirectories do: for one host per subdirectory use --fleet" in err
    assert run_report(None, as_json=False, fleets=[tmp_path / "root" / "web-1"]) == 0
    err = capsys.readouterr().err
    assert "itself holds 1 emissions_* file(s): --fleet reads only its subdirectories" in err


def test_docs_example_output_is_what_report_prints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """docs/operations.md's fleet example, rebuilt from the records it describes."""
    doc = (REPO / "docs" / "operations.md").read_text()
    example = re.search(r"<!-- fleet-report-example -->\n\n((?:    .*\n|\n)+)", doc)
    assert example, "fleet example not found in docs/operations.md"
    lines = [ln[4:] for ln in example.group(1).rstrip("\n").splitlines()]
    assert lines[0] == "$ tta-carbon report --fleet /srv/tta-carbon"
    root = tmp_path / "srv" / "tta-carbon"

    def at(seq: int) -> str:  # a record every 15 s from 00:00:00
        t = (seq - 1) * 15
        return f"2026-11-30T{t // 3600:02d}:{t // 60 % 60:02d}:{t % 60:02d}.000Z"

    g_per_j = 400 / 3.6e6  # 400 gCO2eq/kWh
    for host, cpu_j in (("web-1", 1800.0), ("web-2", 900.0)):
        write(root / host / "emissions_2026-11-30.json",
              [rec(f"run-{host}", s, at(s), host=host, cpu_j=cpu_j, g_per_j=g_per_j) for s in range(1, 5761)])
    db = [rec("run-db", s, at(s), cpu_j=450.0, g_per_j=g_per_j) for s in range(1, 2881)]  # record_hostname: false; half a day
    write(root / "db-1" / "emissions_2026-11-30.json.1.gz", db)
    write(root / "db-1-rsync" / "emissions_2026-11-30.json", db[:1440])  # an older copy of the same records
    assert run_report(None, as_json=False, fleets=[root]) == 0
    got = capsys.readouterr().out.replace(str(root), "/srv/tta-carbon").rstrip("\n").splitlines()
    assert got == lines[1:]


def test_embodied_and_measured_sum_per_host_and_fleet_and_stay_apart(tmp_path: Path) -> None:
    """embodied_g (issue 18) adds up like the rest, per host and for the fleet, and never enters emissions_g."""
    def with_embodied(line: str, grams: float | None, method: str) -> str:
        r = json.loads(line)
        r["energy_method"] = {"cpu": method, "ram": "constant"}
        if grams is not None:
            r["embodied_g"] = grams
        return json.dumps(r) + "\n"

    write(tmp_path / "a" / "emissions_2026-11-30.json",
          [with_embodied(rec("ra", s, minute("2026-11-30", s), host="a"), 0.25, "rapl") for s in range(1, 5)])
    write(tmp_path / "b" / "emissions_2026-11-30.json",
          [with_embodied(rec("rb", s, minute("2026-11-30", s), host="b"), None, "cpu_load_tdp") for s in range(1, 3)])
    rep = build_report([Source(tmp_path / n, n) for n in ("a", "b")])
    assert rep.hosts["a"].overall.embodied_g == 1.0 and rep.hosts["b"].overall.embodied_g == 0.0
    assert rep.overall.embodied_g == 1.0 and rep.by_day["2026-11-30"].embodied_g == 1.0
    assert rep.overall.measured_j == 4 * 100.0  # a's cpu only: rapl; constant and cpu_load_tdp are estimates
    assert sum(rep.overall.emissions_g.values()) == pytest.approx(6 * 125.0 * 0.01)  # embodied not in it
