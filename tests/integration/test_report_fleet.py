"""`tta-carbon report` over a fleet, through the installed `tta-carbon` command (a real process).

A central tree as rsync leaves it (one directory per host), an extra copy of one host's
records given with --dir, a host directory that cannot be read (permissions, really: as root
the process runs without CAP_DAC_OVERRIDE) and a directory that does not exist.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.ops_helpers import REPO, TTA_CARBON, clean_env


def rec(run_id: str, seq: int, host: str | None, cpu_j: float) -> str:
    end = f"2026-11-30T{seq // 240:02d}:{seq // 4 % 60:02d}:{seq % 4 * 15:02d}.000Z"
    r = {"interval_end": end, "timestamp": end, "duration_s": 15.0, "seq": seq, "run_id": run_id,
         "energy_j": {"cpu": cpu_j, "ram": 10.0, "gpu": 0.0}, "emissions_g": {"cpu": cpu_j / 10, "ram": 1.0, "gpu": 0.0},
         "units": {"unattributed": {"energy_j": cpu_j + 10.0, "emissions_g": cpu_j / 10 + 1.0, "cpu_s": 0.0}}}
    if host:
        r["host"] = host
    return json.dumps(r) + "\n"


def report(*args: str, drop_dac: bool = False) -> subprocess.CompletedProcess[str]:
    cmd = [TTA_CARBON, "report", *args]
    if drop_dac and os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: chmod 000 has no effect")
        drop = "-dac_override,-dac_read_search"
        cmd = [setpriv, f"--bounding-set={drop}", f"--inh-caps={drop}", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, env=clean_env(), cwd=REPO, timeout=60)


def test_fleet_report_through_the_command(tmp_path: Path) -> None:
    root = tmp_path / "srv" / "tta-carbon"
    for host, n in (("web-1", 40), ("web-2", 30)):
        (root / host).mkdir(parents=True)
        (root / host / "emissions_2026-11-30.json").write_text("".join(rec(f"r-{host}", s, host, 100.0)
                                                                        for s in range(1, n + 1)))
    (root / "db-1").mkdir()  # record_hostname: false there, rotated and compressed
    db = "".join(rec("r-db", s, None, 50.0) for s in range(1, 21))
    (root / "db-1" / "emissions_2026-11-30.json.1.gz").write_bytes(gzip.compress(db.encode()))
    (root / "db-1" / "emissions_2026-11-30.json").write_text("{not json\n")
    copy = tmp_path / "web-1-live"  # the live directory next to the (older) rsync copy: overlapping records
    copy.mkdir()
    (copy / "emissions_2026-11-30.json").write_text("".join(rec("r-web-1", s, "web-1", 100.0) for s in range(31, 51)))

    text = report("--fleet", str(root), "--dir", str(copy))
    assert text.returncode == 0, text.stderr
    rows = {ln.split()[0]: ln.split() for ln in text.stdout.splitlines() if ln.strip()}
    assert rows["web-1"][1:3] == ["record", "50"] and rows["web-1"][-1] == "10"  # 40 + 20 - 10 copies
    assert rows["web-2"][1:3] == ["record", "30"]
    assert rows["db-1"][1:3] == ["dir", "20"]
    assert rows["fleet"][3] == "100"
    assert text.stdout.splitlines()[-1].split()[:3] == ["total", "100", "records,"]
    assert text.stderr == "tta-carbon: warning: skipped 1 invalid line(s): " \
                          f"{root / 'db-1' / 'emissions_2026-11-30.json'} line 1\n"

    js = report("--fleet", str(root), "--dir", str(copy), "--json")
    doc = json.loads(js.stdout)
    assert js.returncode == 0 and doc["duplicates_skipped"] == 10 and doc["invalid_lines"] == 1
    assert doc["overall"]["energy_j"]["cpu"] == 80 * 100.0 + 20 * 50.0
    assert {h: (v["records"], v["measured_s"], v["host_from"]) for h, v in doc["hosts"].items()} == \
        {"db-1": (20, 300.0, "dir"), "web-1": (50, 750.0, "record"), "web-2": (30, 450.0, "record")}
    assert doc["hosts"]["web-1"]["first_record"] == "2026-11-30T00:00:15.000Z"
    assert doc["hosts"]["web-1"]["last_record"] == "2026-11-30T00:12:30.000Z"

    one = report("--fleet", str(root), "--host", "db-1", "--by", "unit")
    assert one.returncode == 0, one.stderr
    unit_row = next(ln.split() for ln in one.stdout.splitlines() if ln.startswith("unattributed"))
    assert unit_row[1:3] == [f"{20 * 60.0 / 3.6e6:.6f}", "100.0%"]
    assert one.stdout.splitlines()[-1].split()[1] == "20"

    # A host directory nobody may read, and a --dir that does not exist: one line each, the rest reported, exit 1.
    locked = root / "web-3"
    locked.mkdir()
    (locked / "emissions_2026-11-30.json").write_text(rec("r-web-3", 1, "web-3", 1.0))
    locked.chmod(0)
    try:
        bad = report("--fleet", str(root), "--dir", str(tmp_path / "gone"), drop_dac=True)
    finally:
        locked.chmod(0o755)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    err = bad.stderr.splitlines()
    assert f"tta-carbon: error: directory {tmp_path / 'gone'} does not exist or is not a directory (skipped)" in err
    assert f"tta-carbon: error: cannot read directory {locked}: Permission denied (skipped)" in err
    assert len(err) == 3 and "Traceback" not in bad.stderr, bad.stderr  # the third: db-1's invalid line
    assert bad.stdout.splitlines()[-1].split()[:2] == ["total", "90"]  # web-1's 40, web-2's 30, db-1's 20
