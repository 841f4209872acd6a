"""Faults the real daemon must survive: it keeps running, /healthz and /metrics show the fault, it recovers alone."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import textwrap
from pathlib import Path

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
