"""`tta-carbon prune`: retention that only ever touches old emissions_* files."""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import tarfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from tests.integration.ops_helpers import REPO, TTA_CARBON, OpsDaemon, clean_env
from src.service.prune import make_plan, parse_age

DAY = timedelta(days=1)


def prune(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TTA_CARBON, "prune", *args], capture_output=True, text=True, env=clean_env(),
                          cwd=REPO, timeout=30)


def record(day: date, seq: int) -> bytes:
    """A record shaped like the daemon's, enough for `tta-carbon report`."""
    rec = {"run_id": "r1", "seq": seq, "interval_end": f"{day}T12:00:00.000Z",
           "energy_j": {"cpu": 1.0, "ram": 2.0, "gpu": 0.0}, "emissions_g": {"cpu": 0.1, "ram": 0.2, "gpu": 0.0}}
    return json.dumps(rec).encode() + b"\n"


def old_mtime(path: Path, days: int) -> None:
    t = (datetime.now(UTC) - timedelta(days=days)).timestamp()
    os.utime(path, (t, t), follow_symlinks=False)


@pytest.fixture
def outdir(tmp_path: Path) -> dict[str, Path]:
    """An output dir with every kind of neighbour prune must tell apart."""
    today = datetime.now(UTC).date()
    out = tmp_path / "codecarbon"
    out.mkdir()
    f: dict[str, Path] = {}

    def put(key: str, name: str, data: bytes, mtime_days: int | None = None) -> None:
        f[key] = out / name
        f[key].write_bytes(data)
        if mtime_days is not None:
            old_mtime(f[key], mtime_days)

    d40, d31, d30 = today - 40 * DAY, today - 31 * DAY, today - 30 * DAY
    put("old", f"emissions_{d40}.json", record(d40, 1))
    put("boundary_old", f"emissions_{d31}.json", record(d31, 2))  # last record ended >= 30 days ago
    put("boundary_new", f"emissions_{d30}.json", record(d30, 3))  # may hold records from < 30 days ago
    put("today", f"emissions_{today}.json", record(today, 4))
    put("rot_old", f"emissions_{d40}.json.1", record(d40, 5), mtime_days=39)
    put("gz_old", f"emissions_{d40}.json.2.gz", gzip.compress(record(d40, 6)), mtime_days=39)
    put("dateext_old", f"emissions_{d31}.json-{d31:%Y%m%d}", record(d31, 7), mtime_days=31)
    put("rot_recent", f"emissions_{d40}.json.3", record(d40, 8))  # old name, written just now: kept
    put("other", "notes.txt", b"operator notes\n")
    put("csv", f"emissions_{d40}.csv", b"codecarbon's own csv\n")
    put("target", "../precious.json", b"not ours\n")
    f["link"] = out / f"emissions_{today - 50 * DAY}.json"
    f["link"].symlink_to(f["target"])
    f["subdir"] = out / f"emissions_{today - 60 * DAY}.json.4"
    f["subdir"].mkdir()
    (f["subdir"] / "inside.json").write_bytes(b"{}\n")
    return f


PRUNED = ["old", "boundary_old", "rot_old", "gz_old", "dateext_old"]


def names(f: dict[str, Path], keys: list[str]) -> list[str]:
    return [f[k].name for k in keys]


def test_dry_run_lists_and_deletes_nothing(outdir: dict[str, Path]) -> None:
    out = outdir["old"].parent
    before = {p: p.read_bytes() for p in out.iterdir() if p.is_file()}
    proc = prune("--older-than", "30d", "--dir", str(out))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[:2] == sorted([f"skipped {outdir['link'].name}: symbolic link, never followed",
                                f"skipped {outdir['subdir'].name}: not a regular file"])
    expected = sorted(PRUNED, key=lambda k: (outdir[k].name[10:20], outdir[k].name))
    assert lines[2:-1] == [f"would delete {outdir[k].name} ({outdir[k].stat().st_size} bytes)" for k in expected]
    assert lines[-1].startswith(f"dry run: 5 file(s), {sum(outdir[k].stat().st_size for k in PRUNED)} bytes, "
                                "older than 30d (records before ")
    assert lines[-1].endswith(f") in {out}; run again with --apply to delete them")
    assert {p: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_apply_deletes_only_old_emissions_files(outdir: dict[str, Path]) -> None:
    out = outdir["old"].parent
    proc = prune("--older-than", "30d", "--dir", str(out), "--apply")
    assert proc.returncode == 0, proc.stderr
    assert sorted(line.removeprefix("deleted ") for line in proc.stdout.splitlines()
                  if line.startswith("deleted ")) == sorted(names(outdir, PRUNED))
    for k, p in outdir.items():
        assert p.exists() or p.is_symlink() if k not in PRUNED else not p.exists(), k
    assert outdir["target"].read_bytes() == b"not ours\n" and outdir["link"].is_symlink()
    assert (outdir["subdir"] / "inside.json").exists()
    again = prune("--older-than", "30d", "--dir", str(out), "--apply")
    assert again.returncode == 0
    assert again.stdout.splitlines()[-1] == f"nothing older than 30d in {out}"


def test_archive_then_delete_and_report_still_reads_it(outdir: dict[str, Path], tmp_path: Path) -> None:
    out = outdir["old"].parent
    contents = {outdir[k].name: outdir[k].read_bytes() for k in PRUNED}
    archive = tmp_path / "backup" / "carbon-old.tar.gz"
    # The archive's directory does not exist: nothing may be deleted.
    failed = prune("--older-than", "30d", "--dir", str(out), "--apply", "--archive", str(archive))
    assert failed.returncode == 1
    assert f"cannot archive to {archive}: No such file or directory; nothing deleted" in failed.stderr
    assert all(outdir[k].exists() for k in PRUNED)

    archive.parent.mkdir()
    proc = prune("--older-than", "30d", "--dir", str(out), "--apply", "--archive", str(archive))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[2] == f"archived 5 file(s) to {archive}"
    with tarfile.open(archive) as tar:
        assert {m.name: tar.extractfile(m).read() for m in tar.getmembers()} == contents
    assert not any(outdir[k].exists() for k in PRUNED)
    assert [p.name for p in archive.parent.iterdir()] == [archive.name]  # no partial file left

    # Restored, the archive is readable by `tta-carbon report` again (.gz members included).
    restore = tmp_path / "restore"
    restore.mkdir()
    with tarfile.open(archive) as tar:
        tar.extractall(restore, filter="data")
    rep = subprocess.run([TTA_CARBON, "report", "--json", "--dir", str(restore)], capture_output=True, text=True,
                         env=clean_env(), timeout=30)
    assert json.loads(rep.stdout)["overall"]["records"] == 5

    # An existing archive is never overwritten.
    outdir_again = out / f"emissions_{datetime.now(UTC).date() - 45 * DAY}.json"
    outdir_again.write_bytes(b"{}\n")
    clash = prune("--older-than", "30d", "--dir", str(out), "--apply", "--archive", str(archive))
    assert clash.returncode == 1
    assert f"--archive {archive} already exists; not overwriting it" in clash.stderr
    assert outdir_again.exists()


def test_uses_the_configured_output_dir(tmp_path: Path) -> None:
    s = OpsDaemon(tmp_path)
    s.output_dir.mkdir()
    old = s.output_dir / f"emissions_{datetime.now(UTC).date() - 100 * DAY}.json"
    old.write_bytes(b"{}\n")
    proc = subprocess.run([TTA_CARBON, "prune", *s.cli_args(), "--older-than", "12w", "--apply"],
                          capture_output=True, text=True, env=clean_env(), cwd=REPO, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert f"deleted {old.name}" in proc.stdout.splitlines()
    assert proc.stdout.splitlines()[-1].startswith("pruned 1 file(s), 3 bytes, older than 84d")
    bad = subprocess.run([TTA_CARBON, "prune", *s.cli_args(measurement_interval="0"), "--older-than", "30d"],
                         capture_output=True, text=True, env=clean_env(), cwd=REPO, timeout=30)
    assert bad.returncode == 78 and "config error: invalid measurement_interval" in bad.stderr


@pytest.mark.parametrize("age", ["30", "0d", "1h", "-3d", "d", "0w"])
def test_rejects_ages_that_are_not_whole_days_or_weeks(age: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_age(age)


def test_bad_age_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "emissions_2000-01-01.json").write_bytes(b"{}\n")
    proc = prune("--older-than", "0d", "--dir", str(tmp_path), "--apply")
    assert proc.returncode == 2
    assert "argument --older-than: '0d': must be at least 1d" in proc.stderr
    assert (tmp_path / "emissions_2000-01-01.json").exists()


def test_age_boundary_is_the_end_of_the_day_in_the_name(tmp_path: Path) -> None:
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    for d in ("2026-10-28", "2026-10-29"):
        (tmp_path / f"emissions_{d}.json").write_bytes(b"{}\n")
    plan = make_plan(tmp_path, timedelta(days=30), now)
    assert plan.cutoff == datetime(2026, 10, 29, 12, 0, tzinfo=UTC)
    # 2026-10-28's records all ended by 2026-10-29T00:00 <= cutoff; 2026-10-29's may end after it.
    assert [c.name for c in plan.delete] == ["emissions_2026-10-28.json"]
