"""Faults the real daemon must survive: it keeps running, /healthz and /metrics show the fault, it recovers alone."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.reliability.conftest import health, metrics, read_lines, wait_until
from tests.support.daemon import PrefixedDaemon


def _valid_lines(paths) -> list[dict]:
    return [json.loads(x) for x in read_lines(paths)]


def _contiguous(records) -> None:
    seqs = sorted(r["seq"] for r in records)
    assert seqs == list(range(1, len(seqs) + 1)), seqs


def test_output_dir_deleted_while_running(daemon_factory, figures):
    """Output directory deleted while running: the next record recreates it; nothing lost, no error left."""
    d = daemon_factory().start()
    d.wait_for_records(2)
    shutil.rmtree(d.output_dir)
    wait_until(lambda: d.output_dir.exists() and d.records(), what="records in the recreated dir")
    assert d.proc.poll() is None
    status, h = health(d)
    assert status == 200 and h["write_errors"] == 0
    assert d.stop() == 0
    recs = d.records()
    assert recs[0]["seq"] >= 3 and [r["seq"] for r in recs] == list(range(recs[0]["seq"], recs[-1]["seq"] + 1))
    figures.update(records_after=len(recs), write_errors=0)


def test_permissions_revoked_then_restored(daemon_factory, figures):
    """Output file and dir made immutable (chattr +i; root ignores modes): fault in /healthz and metrics, records buffered, all written after chattr -i."""
    d = daemon_factory().start()
    d.wait_for_records(1)
    files = [*d.output_dir.glob("emissions_*.json")]
    targets = [str(d.output_dir), *map(str, files)]
    subprocess.run(["chattr", "+i", *targets], check=True)
    try:
        m = wait_until(lambda: (x := metrics(d))["tta_carbon_records_pending"] >= 2 and x, what="pending records")
        status, h = health(d)
        assert status == 503 and h["write_errors"] >= 1 and "Operation not permitted" in h["last_write_error"]
        assert m["tta_carbon_write_errors_total"] >= 1 and m["tta_carbon_records_dropped_total"] == 0
        pending = int(m["tta_carbon_records_pending"])
    finally:
        subprocess.run(["chattr", "-i", *targets], check=True)
    m = wait_until(lambda: (x := metrics(d))["tta_carbon_records_pending"] == 0 and x, what="buffer drained")
    assert d.proc.poll() is None and m["tta_carbon_records_dropped_total"] == 0
    assert d.stop() == 0
    recs = d.records()
    _contiguous(recs)
    figures.update(pending_peak=pending, dropped=0, records=len(recs), seq_gaps=0)


def test_disk_full_tmpfs_buffers_then_writes(tmp_path, figures):
    """Disk full (1 MiB tmpfs in a private mount namespace, filled): records buffered in memory, written in order once space returns; none dropped."""
    out = tmp_path / "d" / "out"
    out.mkdir(parents=True)
    d = PrefixedDaemon(workdir=tmp_path / "d", prefix=[
        "unshare", "--mount", "--propagation", "private", "--",
        "sh", "-c", f'mount -t tmpfs -o size=1m tmpfs "{out}" && exec "$@"', "sh"])
    try:
        d.start()
        ns_out = Path(f"/proc/{d.proc.pid}/root{out}")  # the daemon's view of its tmpfs
        wait_until(lambda: list(ns_out.glob("emissions_*.json")), what="first record on the tmpfs")
        assert not list(out.glob("emissions_*")), "tmpfs leaked into the host mount namespace"
        filler = ns_out / "filler"
        with open(filler, "wb", buffering=0) as fh:
            try:
                while True:
                    fh.write(b"\0" * 4096)
            except OSError as exc:
                assert exc.errno == 28
        m = wait_until(lambda: (x := metrics(d))["tta_carbon_records_pending"] >= 3 and x, what="pending >= 3")
        status, h = health(d)
        err = h["last_write_error"]
        assert status == 503 and ("No space left" in err or "disk full" in err), err
        _valid_lines(sorted(ns_out.glob("emissions_*.json")))  # a refused (short) write left no half line
        assert m["tta_carbon_records_dropped_total"] == 0
        pending = int(m["tta_carbon_records_pending"])
        filler.unlink()
        wait_until(lambda: metrics(d)["tta_carbon_records_pending"] == 0, what="buffer drained")
        assert health(d)[0] == 200
        recs = _valid_lines(sorted(ns_out.glob("emissions_*.json")))
        _contiguous(recs)
        assert metrics(d)["tta_carbon_records_dropped_total"] == 0
    finally:
        d.stop()
    figures.update(tmpfs="1 MiB", pending_peak=pending, dropped=0, records=len(recs), bound="57,600 records")


def test_log_file_unwritable(daemon_factory, figures):
    """Log file made unwritable (chattr +i) then restored + SIGHUP: measuring never stops; logging resumes."""
    d = daemon_factory().start()
    d.wait_for_records(1)
    subprocess.run(["chattr", "+i", str(d.log_file)], check=True)
    try:
        n = len(d.records())
        d.send(signal.SIGHUP)  # logrotate-style reopen of an unwritable file
        d.wait_for_records(n + 2)
        assert d.proc.poll() is None
        frozen = d.log_file.stat().st_size
    finally:
        subprocess.run(["chattr", "-i", str(d.log_file)], check=True)
    d.send(signal.SIGHUP)
    wait_until(lambda: d.log_file.stat().st_size > frozen, what="log file growing again")
    assert d.stop() == 0
    _contiguous(d.records())
    figures.update(records=len(d.records()), stopped_measuring=False)


SHIM = textwrap.dedent('''
    # Test shim: psutil.cpu_percent, called by codecarbon's 1 Hz monitor thread, raises every Nth call.
    import os, psutil, threading
    _orig, _n, _lock, _count = psutil.cpu_percent, int(os.environ["TTA_FAULT_EVERY"]), threading.Lock(), [0]
    def cpu_percent(*a, **k):
        with _lock:
            _count[0] += 1
            c = _count[0]
        if c % _n == 0:
            with open(os.environ["TTA_FAULT_LOG"], "a") as f:
                f.write(threading.current_thread().name + "\\n")
            raise OSError(5, "injected fault in psutil.cpu_percent")
        return _orig(*a, **k)
    psutil.cpu_percent = cpu_percent
''')


def test_codecarbon_scheduler_thread_raises(daemon_factory, tmp_path, figures):
    """codecarbon's monitor thread hits an exception inside psutil (every 2nd cpu_percent call, shimmed at the library boundary): daemon keeps measuring."""
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(SHIM)
    faults = tmp_path / "faults.log"
    # energy_source=codecarbon: since 1a6e617 `auto` no longer runs codecarbon's tracker (or its monitor thread).
    d = daemon_factory(settings={"energy_source": "codecarbon"},
                       env={"PYTHONPATH": str(shim), "TTA_FAULT_EVERY": "2", "TTA_FAULT_LOG": str(faults)}).start()
    d.wait_for_records(4)
    assert faults.exists(), "the shim never fired: codecarbon did not call psutil.cpu_percent"
    threads = set(faults.read_text().split())
    assert "MainThread" not in threads or len(threads) > 1
    assert d.proc.poll() is None
    status, h = health(d)
    assert h["tracker_available"] is True
    assert d.stop() == 0
    recs = d.records()
    _contiguous(recs)
    assert all(r["energy_j"]["cpu"] >= 0 for r in recs)
    figures.update(injected_faults=len(faults.read_text().split()), fault_threads=sorted(threads),
                   records=len(recs), measurement_errors=h["measurement_errors"])


def test_unit_cgroup_named_with_bytes_that_are_not_utf8(daemon_factory, tmp_path, figures):
    """A unit cgroup whose directory name is not UTF-8 uses CPU: the daemon keeps measuring (it crashed in the exposition before, and again in stop()); the name reads `\\xNN` in records, /metrics and `report --by unit`."""
    import os
    import threading
    import time

    from tests.support.daemon import REPO, TTA_CARBON, clean_env

    root, proc = tmp_path / "cgroup", tmp_path / "proc"
    (root / "system.slice").mkdir(parents=True)
    proc.mkdir()
    (root / "cgroup.controllers").write_text("cpu\n")
    bad = Path(os.fsdecode(os.fsencode(str(root / "system.slice")) + b"/bad\xff.service"))
    bad.mkdir()
    stop = threading.Event()

    def burn() -> None:  # the unit uses 0.2 s of CPU in every 0.25 s of host time (2 CPUs at 100 Hz)
        n = 0
        while not stop.is_set():
            n += 1
            (bad / "cpu.stat").write_text(f"usage_usec {n * 200_000}\n")
            ticks = n * 50
            (proc / "stat").write_text(f"cpu  {ticks // 2} 0 0 {ticks - ticks // 2} 0 0 0 0 0 0\n")
            time.sleep(0.25)

    burner = threading.Thread(target=burn, daemon=True)
    burner.start()
    try:
        d = daemon_factory(settings={"energy_source": "cpu_load_tdp", "cgroup_root": str(root),
                                     "proc_root": str(proc)}).start()
        rec = d.wait_for_record(lambda r: "bad\\xff.service" in (r.get("units") or {}), "the unit's record")
        # The record is on disk (and fsynced with the ledger) before /metrics is republished: wait for the page.
        label = wait_until(lambda: [k for k in metrics(d) if "bad" in k], what="the unit's series on /metrics")
        assert d.proc.poll() is None
        assert d.stop() == 0, d.stderr()
    finally:
        stop.set()
        burner.join(5)
    assert label and all("unit=bad\\xff.service" in k for k in label), label  # the parsed (unescaped) value
    report = subprocess.run([*TTA_CARBON, "report", "--by", "unit", "--dir", str(d.output_dir)], cwd=REPO,
                            env=clean_env(), capture_output=True, text=True, timeout=60)
    assert report.returncode == 0 and "bad\\xff.service" in report.stdout, report.stdout + report.stderr
    figures.update(unit="bad\\xff.service", records=len(d.records()), metrics_series=len(label),
                   stop_exit=0, report_exit=0, cpu_s=rec["units"]["bad\\xff.service"].get("cpu_s"))


def test_day_file_truncated_in_place_gets_no_record_glued_onto_the_cut_line(daemon_factory, figures):
    """The day's file cut short in place while running (`truncate -s -7`, mid-line): the next record used to be
    appended to the cut line, making one unparseable line of two; now the cut line is dropped and every line
    after it is a whole record, seq continuing."""
    import os

    d = daemon_factory(interval=1.0, settings={"energy_source": "cpu_load_tdp", "gpu": "off"}).start()
    d.wait_for_records(3)
    (day,) = sorted(d.output_dir.glob("emissions_*.json"))
    cut_at = day.stat().st_size - 7
    os.truncate(day, cut_at)
    wait_until(lambda: day.stat().st_size > cut_at + 100, what="a record after the cut")
    n_after = len(d.records())
    d.wait_for_records(n_after + 2)
    assert d.stop() == 0
    lines = read_lines([day])
    parsed = [json.loads(line) for line in lines]  # raises on a glued line
    seqs = [r["seq"] for r in parsed]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    missing = sorted(set(range(1, seqs[-1] + 1)) - set(seqs))
    assert len(missing) <= 1, missing  # only the record the truncation destroyed
    figures.update(cut_bytes=7, lines=len(lines), unparseable=0, records_lost_to_the_cut=len(missing))


@pytest.mark.parametrize("swap", ["fifo", "symlink-devnull", "symlink-other-file"])
def test_day_file_swapped_by_someone_with_write_access(daemon_factory, tmp_path, swap, figures):
    """The day's file replaced while running by a FIFO (blocked the daemon in write(2) for good, SIGTERM too), a symlink to /dev/null (records lost, health 200) or to another file (its last line cut): refused, health says so, records kept and written once the file is back."""
    import os
    import time

    d = daemon_factory().start()
    first = d.wait_for_records(2)
    path = d.output_dir / f"emissions_{first[-1]['interval_end'][:10]}.json"
    saved = tmp_path / "saved.json"
    os.rename(path, saved)
    other = tmp_path / "other.txt"
    other.write_bytes(b"line one\nno newline at the end")
    if swap == "fifo":
        os.mkfifo(path)
    else:
        os.symlink("/dev/null" if swap == "symlink-devnull" else other, path)
    status, h = wait_until(lambda: (lambda s, h: (s, h) if h["last_write_error"] else None)(*health(d)),
                           what="a write error for the swapped file")
    assert status == 503 and "not a regular file" in h["last_write_error"], h
    assert h["records_pending"] >= 1
    pending = h["records_pending"]
    os.unlink(path)  # the operator removes what was put there
    wait_until(lambda: health(d)[1]["records_pending"] == 0 and not health(d)[1]["last_write_error"],
               what="the queued records written")
    t0 = time.monotonic()
    assert d.stop() == 0
    stop_s = time.monotonic() - t0
    assert other.read_bytes() == b"line one\nno newline at the end"
    records = _valid_lines([saved, path])
    _contiguous(records)
    figures.update(swap=swap, health_status=status, error=h["last_write_error"][:70], pending_peak=pending,
                   records=len(records), seq_gaps=0, other_file_untouched=True, stop_s=round(stop_s, 2))


def test_second_daemon_on_the_same_directories_is_refused(daemon_factory, figures):
    """Two daemons on one state directory (both ran: the same seq twice, energy doubled in `report`): the second exits 69 with one line naming the first's pid; the first goes on; a kill -9'd holder leaves no stale lock."""
    import os

    first = daemon_factory("first").start()
    first.wait_for_records(1)
    same_dirs = {"output_dir": str(first.output_dir), "state_dir": str(first.state_dir)}
    second = daemon_factory("second", settings=same_dirs)
    second.start(wait_ready=False)
    assert second.proc.wait(20) == 69
    lines = [ln for ln in second.stderr().splitlines() if ln.startswith("tta-carbon:")]
    assert len(lines) == 1 and f"pid {first.proc.pid}" in lines[0], second.stderr()
    line = lines[0]
    before = len(first.records())
    wait_until(lambda: len(first.records()) > before, what="the first daemon still measuring")
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(10)
    run_id = first.records()[0]["run_id"]
    third = daemon_factory("third", settings=same_dirs).start()
    first.wait_for_record(lambda r: r["run_id"] not in (run_id,), "a record of the restarted daemon")  # same dirs
    assert third.stop() == 0
    _contiguous(first.records())
    figures.update(second_exit=69, message=line.split(": ", 1)[-1][:90], after_kill9="started", seq_gaps=0)


@pytest.mark.parametrize("setting", ["intensity_profile_file", "metrics_web_config", "log_file"])
@pytest.mark.parametrize("what", ["fifo", "/dev/zero"])
def test_fifo_or_dev_zero_at_a_configured_path_is_one_line_exit_78(tmp_path, setting, what, figures):
    """A FIFO or /dev/zero at a path the daemon reads (hung at start, or MemoryError): exit 78 with one line naming the setting, nothing created."""
    import os
    import time

    from tests.support.daemon import REPO, TTA_CARBON, clean_env

    path = tmp_path / "fifo"
    if what == "fifo":
        os.mkfifo(path)
    else:
        path = Path(what)
    t0 = time.monotonic()
    proc = subprocess.run([*TTA_CARBON, "run", "--config", "/dev/null", "--env-file", "/dev/null",
                           "--set", f"{setting}={path}", "--set", f"output_dir={tmp_path / 'out'}",
                           "--set", f"state_dir={tmp_path / 'state'}"],
                          cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=60)
    took = time.monotonic() - t0
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 78, proc.stderr
    assert len(lines) == 1 and setting in lines[0], proc.stderr
    assert not (tmp_path / "out").exists()
    figures.update(setting=setting, path=what, exit=78, seconds=round(took, 2), message=lines[0][-70:])


def test_fifo_in_place_of_the_state_file_is_set_aside(daemon_factory, figures):
    """The state file replaced by a FIFO (reading it hung the start): set aside as damaged, totals rebuilt from the records, one error line."""
    import os

    d = daemon_factory().start()
    before = d.wait_for_records(2)
    assert d.stop() == 0
    state = d.state_dir / "carbon_state.json"
    state.unlink()
    os.mkfifo(state)
    again = daemon_factory()  # the same work dir: the same output and state directories
    again.start(timeout=20)
    again.wait_for_records(len(d.records()) + 1)
    assert again.stop() == 0
    _contiguous(again.records())
    kept = [p for p in d.state_dir.iterdir() if p.name.startswith("carbon_state.json.corrupt-")]
    assert len(kept) == 1 and kept[0].is_fifo()
    damaged = [ln for ln in again.stderr().splitlines() if "state_file_damaged" in ln]
    assert len(damaged) == 1 and "named pipe" in damaged[0], again.stderr()
    figures.update(kept=kept[0].name[:30], records=len(again.records()), seq_gaps=0, first_run=len(before))


def test_environment_file_in_systemds_syntax_gives_systemds_values(daemon_factory, figures):
    """An environment file in systemd's EnvironmentFile= syntax (a `;` comment, a backslash-continued value, a double-quoted value over two lines): the daemon runs with the values systemd gives (before: exit 78 "expected KEY=value" on the `;` line; without it, `carbon\\` and a quote kept in the value). tests/system/test_env_file_systemd.py checks 19 such files against a real systemd 252."""
    d = daemon_factory()
    d.workdir.mkdir(parents=True)
    (d.workdir / "environment").write_text(
        "; staging host\n"
        "CARBON_PROJECT_NAME=carbon\\\n-staging\n"
        'TTA_ENV="stag\\\ning"\n')
    d.start()
    record = d.wait_for_records(1)[0]
    assert d.stop() == 0
    assert (record["project"], record["env"]) == ("carbon-staging", "staging"), record
    figures.update(project=record["project"], env=record["env"], exit=0)
