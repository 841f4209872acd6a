"""Benchmark tta-carbon against `codecarbon monitor` (and, for /metrics, prometheus exporters).

    uv run python benchmarks/run.py [--quick | --smoke] [--compile]

One invocation measures both of our modes against the same peer in the same run:

- default: ``energy_source: auto`` (codecarbon's OfflineEmissionsTracker inside our daemon,
  built on a background thread after READY=1; our CPU-load estimate counts until it takes over);
- lean: ``energy_source: cpu_load_tdp`` (our CPU-load estimate from /proc/stat, no codecarbon);
- peer: ``codecarbon monitor``.

It measures start-up, steady CPU, memory, scrape cost and cadence, prints a Markdown table
(metric | default | lean | peer | default/peer | lean/peer | target | met?) and writes it to
benchmarks/results/latest.md (the table and notes of docs/performance.md come from there).
Every process it starts is stopped in a finally block. Method notes are printed under the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from src.components.carbon.sources.codecarbon_tracker import DEFAULT_RECYCLE_S  # noqa: E402  (no codecarbon import)

PY = sys.executable
CODECARBON = str(Path(PY).parent / "codecarbon")
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
INTERVALS_PER_DAY_15S = 86400 // 15
STOCK_EXPORTER = REPO / "benchmarks" / "stock_exporter.py"
ACCELERATED_SOAK = REPO / "benchmarks" / "accelerated_soak.py"
TRACKER_RECYCLE = REPO / "benchmarks" / "tracker_recycle.py"
RECYCLES_PER_HOUR = 3600.0 / DEFAULT_RECYCLE_S
NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"
TRACKER_TIMEOUT_S = 120.0  # default mode: READY -> first record measured by codecarbon's tracker
LATE_MS = 100.0  # 10% of a 1 s interval: "late" under load, and off the grid for the first record

# Our two modes: the --set energy_source= each runs with (None: the default, auto).
OUR_MODES: dict[str, str | None] = {"default": None, "lean": "cpu_load_tdp"}


@dataclass(frozen=True)
class Mode:
    name: str
    repeats: int
    startup_interval: int  # seconds; both tools, so "first measurement" is comparable
    warmup_s: float  # after start-up, before the steady window
    soak_s: float  # steady CPU / RSS growth / cadence window
    subwindows: int  # steady CPU: median over this many consecutive sub-windows
    wrk_s: int
    idle_before_load_s: float
    soak_intervals: int  # accelerated soak (benchmarks/accelerated_soak.py), per side


MODES = {
    "full": Mode("full", 3, 1, 20.0, 300.0, 3, 10, 4.0, 30 * INTERVALS_PER_DAY_15S),
    "quick": Mode("quick", 1, 1, 8.0, 30.0, 1, 5, 3.0, 20_000),
    "smoke": Mode("smoke", 1, 1, 2.0, 4.0, 1, 1, 1.5, 300),
}

# --------------------------------------------------------------------------- process helpers

_CHILDREN: list[subprocess.Popen] = []


def spawn(argv: list[str], **kw: Any) -> subprocess.Popen:
    proc = subprocess.Popen(argv, start_new_session=True, **kw)
    _CHILDREN.append(proc)
    return proc


def stop_proc(proc: subprocess.Popen | None, timeout: float = 15.0) -> None:
    if proc is None:
        return
    try:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
    finally:
        if proc in _CHILDREN:
            _CHILDREN.remove(proc)


def stop_all() -> None:
    for proc in list(_CHILDREN):
        try:
            stop_proc(proc, timeout=10)
        except Exception:  # keep stopping the others
            try:
                proc.kill()
            except OSError:
                pass


def cpu_s(pid: int) -> float:
    """utime+stime of the whole process (all threads) plus waited-for children, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(x) for x in rest[11:15])
    return (utime + stime + cutime + cstime) / CLK_TCK


class CpuMeter:
    """CPU time of whole processes in ns, from a cgroup each, where this machine lets us make one.

    ``/proc/<pid>/stat`` counts clock ticks (10 ms): over a 100 s sub-window at ~1 ms of CPU a
    second that is ~10 ticks, a 10 % step. A cgroup's CPU counter is in ns and, like the stat
    file, keeps the time of threads that have exited (codecarbon starts one every second).
    cgroup v1 ``cpuacct`` or a v2 hierarchy with ``cpu.stat``; otherwise the stat file's ticks.
    """

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.groups: dict[int, Path] = {}
        self.kind = "ticks"
        v1, v2 = Path("/sys/fs/cgroup/cpuacct"), Path("/sys/fs/cgroup")
        if (v1 / "cpuacct.usage").exists() and os.access(v1, os.W_OK):
            self._root, self._file, self._scale, self.kind = v1, "cpuacct.usage", 1e-9, "cgroup v1 cpuacct, ns"
        elif (v2 / "cgroup.controllers").exists() and os.access(v2, os.W_OK):
            self._root, self._file, self._scale, self.kind = v2, "cpu.stat", 1e-6, "cgroup v2 cpu.stat, us"

    def attach(self, name: str, pid: int) -> None:
        """Move ``pid`` (all its threads; what it starts later follows) into a cgroup of its own."""
        if self.kind == "ticks":
            return
        group = self._root / f"tta-bench-{os.getpid()}-{self.tag}-{name}"
        try:
            group.mkdir(exist_ok=True)
            (group / "cgroup.procs").write_text(str(pid))
        except OSError:
            return  # this one falls back to ticks
        self.groups[pid] = group

    def seconds(self, pid: int) -> float:
        group = self.groups.get(pid)
        if group is None:
            return cpu_s(pid)
        text = (group / self._file).read_text()
        if self._file == "cpu.stat":
            text = text.split("usage_usec", 1)[1].split()[0]
        return int(text) * self._scale

    def close(self) -> None:
        for group in self.groups.values():
            try:
                for pid in (group / "cgroup.procs").read_text().split():  # stragglers back to the root
                    (self._root / "cgroup.procs").write_text(pid)
                group.rmdir()
            except OSError:
                pass
        self.groups.clear()


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port} after {timeout}s")


def http_get(port: int, path: str = "/metrics") -> bytes:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return r.read()


# --------------------------------------------------------------------------- our daemon


def uses_tracker(record: dict[str, Any]) -> bool:
    """Measured by codecarbon's tracker: an energy_method of codecarbon's (cpu ``codecarbon_cpu_load`` here)."""
    return any(str(m).startswith("codecarbon_") for m in (record.get("energy_method") or {}).values())


class Ours:
    """tta-carbon run as systemd would start it: NOTIFY_SOCKET, READY=1, records in a temp dir.

    ``energy_source`` None runs the default (``auto``); otherwise it is passed as ``--set energy_source=``.
    """

    def __init__(self, workdir: Path, interval: int, port: int = 0, energy_source: str | None = None) -> None:
        self.workdir = workdir
        self.interval = interval
        self.port = port or free_port()
        self.energy_source_setting = energy_source
        self.notes: list[tuple[float, str]] = []
        self.proc: subprocess.Popen | None = None
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    @property
    def out(self) -> Path:
        return self.workdir / "out"

    def start(self) -> float:
        """Start; return the monotonic exec time."""
        w = self.workdir
        w.mkdir(parents=True, exist_ok=True)
        (w / "config.yaml").touch()
        (w / "environment").touch()
        sock_path = w / "notify.sock"
        sock_path.unlink(missing_ok=True)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(sock_path))
        self._sock.settimeout(0.2)
        self._thread = threading.Thread(target=self._recv, daemon=True)
        self._thread.start()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CARBON_", "TTA_", "NOTIFY_SOCKET", "WATCHDOG"))}
        env.update(NOTIFY_SOCKET=str(sock_path), PYTHONUNBUFFERED="1")
        argv = [PY, "-m", "src.service.cli", "run", "--config", str(w / "config.yaml"), "--env-file", str(w / "environment")]
        for key, value in {
            "measurement_interval": str(self.interval), "metrics_port": str(self.port),
            "output_dir": str(self.out), "state_dir": str(w / "state"), "log_file": str(w / "carbon.log"),
            "country_iso_code": "FRA",
        }.items():
            argv += ["--set", f"{key}={value}"]
        if self.energy_source_setting is not None:
            argv += ["--set", f"energy_source={self.energy_source_setting}"]
        self._stderr = open(w / "stderr.log", "wb")
        t0 = time.monotonic()
        self.proc = spawn(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=self._stderr)
        return t0

    def _recv(self) -> None:
        sock = self._sock
        while sock is not None and sock.fileno() != -1:
            try:
                data = sock.recv(65536)
            except (TimeoutError, BlockingIOError):
                continue
            except OSError:
                return
            self.notes.append((time.monotonic(), data.decode(errors="replace")))

    def wait_note(self, needle: str, timeout: float = 30.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, msg in list(self.notes):
                if needle in msg:
                    return t
            self._check_alive()
            time.sleep(0.002)
        raise RuntimeError(f"ours: no {needle!r} within {timeout}s; stderr: {self.stderr()[-2000:]}")

    def wait_first_record(self, timeout: float = 60.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(p.stat().st_size > 0 for p in self.out.glob("emissions_*.json")):
                return time.monotonic()
            self._check_alive()
            time.sleep(0.002)
        raise RuntimeError(f"ours: no record within {timeout}s; stderr: {self.stderr()[-2000:]}")

    def wait_record(self, pred: Any, timeout: float, poll: float = 0.02) -> tuple[float, dict[str, Any]]:
        """The first (non-final) record for which ``pred`` holds, and when it was seen."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for rec in self.records():
                if pred(rec):
                    return time.monotonic(), rec
            self._check_alive()
            time.sleep(poll)
        raise RuntimeError(f"ours: no matching record within {timeout}s; last records: {self.records()[-2:]}; "
                           f"stderr: {self.stderr()[-2000:]}")

    def tracker_expected(self) -> bool:
        """The default hands over to codecarbon's tracker here (not on a machine where RAPL+NVML cover all)."""
        return self.energy_source_setting is None and "codecarbon" in self.energy_source()

    def wait_tracker(self, timeout: float = TRACKER_TIMEOUT_S) -> float | None:
        """Default mode: when the first record measured by codecarbon's tracker was seen (None: none expected)."""
        if not self.tracker_expected():
            return None
        return self.wait_record(uses_tracker, timeout, poll=0.05)[0]

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"ours exited {self.proc.returncode}: {self.stderr()[-2000:]}")

    def records(self) -> list[dict[str, Any]]:
        recs = []
        for path in sorted(self.out.glob("emissions_*.json")):
            for line in path.read_text().splitlines():
                if line.strip():
                    try:
                        recs.append(json.loads(line))
                    except ValueError:  # a line still being written
                        break
        return [r for r in recs if not r.get("final")]

    def stderr(self) -> str:
        try:
            return (self.workdir / "stderr.log").read_text(errors="replace")
        except OSError:
            return ""

    def energy_source(self) -> str:
        for line in self.stderr().splitlines():
            if '"started"' in line:
                try:
                    return json.loads(line).get("energy_source", "?")
                except ValueError:
                    pass
        return "?"

    def stop(self) -> None:
        try:
            stop_proc(self.proc)
        finally:
            if self._sock is not None:
                self._sock.close()
                self._sock = None
            if getattr(self, "_stderr", None):
                self._stderr.close()


# --------------------------------------------------------------------------- codecarbon monitor

CC_MEASURE_LINE = re.compile(r"kWh of electricity and .* used since the beginning")


class CodecarbonMonitor:
    """`codecarbon monitor --offline --no-api`; with log level info each measurement logs lines we timestamp."""

    def __init__(self, workdir: Path, measure_secs: int, log_level: str = "error") -> None:
        self.workdir = workdir
        self.measure_secs = measure_secs
        self.log_level = log_level
        self.lines: list[tuple[float, str]] = []
        self.proc: subprocess.Popen | None = None

    def start(self) -> float:
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = [CODECARBON, "monitor", "--offline", "--no-api", "--country-iso-code", "FRA",
                "--measure-power-secs", str(self.measure_secs), "--log-level", self.log_level]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        t0 = time.monotonic()
        self.proc = spawn(argv, cwd=self.workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        threading.Thread(target=self._read, daemon=True).start()
        return t0

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for raw in self.proc.stderr:
            self.lines.append((time.monotonic(), raw.decode(errors="replace").rstrip()))

    def wait_measurements(self, n: int, timeout: float = 60.0) -> list[float]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hits = [t for t, line in list(self.lines) if CC_MEASURE_LINE.search(line)]
            if len(hits) >= n:
                return hits[:n]
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"codecarbon exited {self.proc.returncode}: {self.lines[-10:]}")
            time.sleep(0.002)
        raise RuntimeError(f"codecarbon: fewer than {n} measurement lines in {timeout}s: {self.lines[-10:]}")

    def stop(self) -> None:
        stop_proc(self.proc)


# --------------------------------------------------------------------------- measurements


def med(values: list[float]) -> float:
    vals = [v for v in values if v == v]
    return statistics.median(vals) if vals else float("nan")


def startup_ours(workdir: Path, interval: int, energy_source: str | None) -> tuple[dict[str, float], str]:
    """One start of our daemon: READY, first record (and where it fell), CPU and RSS then.

    Default mode also waits for the first record measured by codecarbon's tracker, and
    reads CPU and RSS at that point (the tracker's construction is done by then).
    """
    d = Ours(workdir, interval, energy_source=energy_source)
    try:
        t0 = d.start()
        out = {"ready": d.wait_note("READY=1") - t0}
        out["first"] = d.wait_first_record() - t0
        out["cpu"], out["rss"] = cpu_s(d.proc.pid), rss_mb(d.proc.pid)
        first = d.wait_record(lambda r: True, timeout=5.0)[1]
        # interval_end - (interval_start + interval), on the daemon's monotonic clock:
        # interval_start is the component's start, the origin of the measurement grid.
        out["grid_ms"] = (float(first["duration_s"]) - interval) * 1000
        t_tracker = d.wait_tracker()
        if t_tracker is not None:
            out["tracker"] = t_tracker - t0
            out["cpu_tracker"], out["rss_tracker"] = cpu_s(d.proc.pid), rss_mb(d.proc.pid)
        return out, d.energy_source()
    finally:
        d.stop()


def startup_peer(workdir: Path, interval: int) -> dict[str, float]:
    c = CodecarbonMonitor(workdir, interval, log_level="info")
    try:
        t0 = c.start()
        first_line, second = c.wait_measurements(2)
        cpu, rss = cpu_s(c.proc.pid), rss_mb(c.proc.pid)
        return {"ready": first_line - t0, "first": second - t0, "cpu": cpu, "rss": rss,
                "grid_ms": (second - first_line - interval) * 1000}
    finally:
        c.stop()


def measure_startup(mode: Mode, tmp: Path) -> dict[str, Any]:
    """Each repeat starts default, lean and peer one after the other (never two at once)."""
    raw: dict[str, dict[str, list[float]]] = {name: {} for name in (*OUR_MODES, "peer")}
    source = {name: "?" for name in OUR_MODES}
    for r in range(mode.repeats):
        results: dict[str, dict[str, float]] = {}
        for name, setting in OUR_MODES.items():
            results[name], source[name] = startup_ours(tmp / f"startup-{name}-{r}", mode.startup_interval, setting)
        results["peer"] = startup_peer(tmp / f"startup-cc-{r}", mode.startup_interval)
        for name, res in results.items():
            for k, v in res.items():
                raw[name].setdefault(k, []).append(v)
    summary = {name: {k: med(v) for k, v in vals.items()} for name, vals in raw.items()}
    return {**summary, "raw": raw, "energy_source": source, "interval": mode.startup_interval}


def linreg_slope(xs: list[float], ys: list[float]) -> float:
    if len(xs) < 2:
        return float("nan")
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else float("nan")


def lateness_ms(recs: list[dict[str, Any]], interval: float) -> tuple[list[int], list[float]]:
    """Lateness of each measurement vs the ideal grid, on the daemon's monotonic clock.

    t_k = cumulative duration_s (monotonic, taken when the measurement starts); grid index
    k = round((t_k - t_0) / interval); lateness = (t_k - k*interval) minus its minimum, i.e.
    the least-late interval is taken as on time (so lateness is a lower bound of absolute lateness).
    """
    t, cum = [], 0.0
    for r in recs:
        cum += float(r["duration_s"])
        t.append(cum)
    if not t:
        return [], []
    ks = [round((x - t[0]) / interval) for x in t]
    offs = [x - k * interval for x, k in zip(t, ks)]
    base = min(offs)
    return ks, [(o - base) * 1000 for o in offs]


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    idx = min(len(s) - 1, max(0, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[idx]


ACCELERATED_SIDES = {"default": "default", "lean": "lean", "peer": "codecarbon"}  # ours -> accelerated_soak.py side


def measure_accelerated_growth(mode: Mode) -> dict[str, dict[str, float]]:
    """RSS growth per 30 days of 15 s intervals, from each side's per-interval path run back to back.

    Default, lean and codecarbon's flush each in their own process, all three at once.
    """
    procs: dict[str, subprocess.Popen] = {}
    out = {}
    try:
        for name, side in ACCELERATED_SIDES.items():
            procs[name] = spawn([PY, str(ACCELERATED_SOAK), side, "--intervals", str(mode.soak_intervals)],
                                stdout=subprocess.PIPE, text=True)
        for name, proc in procs.items():
            stdout, _ = proc.communicate(timeout=1800)
            if proc.returncode != 0:
                raise RuntimeError(f"accelerated soak ({ACCELERATED_SIDES[name]}) exited {proc.returncode}")
            res = json.loads(stdout.strip().splitlines()[-1])
            res["per_30d_mb"] = res["growth_kib"] / 1024 * (30 * INTERVALS_PER_DAY_15S) / res["measured_intervals"]
            out[name] = res
    finally:
        for proc in procs.values():
            stop_proc(proc)
    return out


def measure_recycle(mode: Mode) -> dict[str, Any]:
    """CPU of the default's hourly tracker recycle (benchmarks/tracker_recycle.py): the soak window never sees one."""
    n = 1 if mode.name == "smoke" else 3
    out = subprocess.run([PY, str(TRACKER_RECYCLE), str(n)], cwd=REPO, capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"tracker_recycle.py failed ({out.returncode}): {out.stderr.strip()[-300:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure_soak(mode: Mode, tmp: Path) -> dict[str, Any]:
    """Steady CPU/RSS at 15 s, RSS growth at 1 s, cadence at 1 s: default, lean and peer at both, all at once.

    The window starts mode.warmup_s after READY, and not before both default-mode daemons have
    written a record measured by codecarbon's tracker (it is built in the background after READY,
    and its construction is start-up, not steady state).
    """
    procs: dict[str, Ours | CodecarbonMonitor] = {}
    for interval in (15, 1):
        for name, setting in OUR_MODES.items():
            procs[f"{name}{interval}"] = Ours(tmp / f"soak-{name}{interval}", interval, energy_source=setting)
        procs[f"peer{interval}"] = CodecarbonMonitor(tmp / f"soak-cc{interval}", interval)
    ours = {n: p for n, p in procs.items() if isinstance(p, Ours)}
    meter = CpuMeter("soak")
    try:
        for name, p in procs.items():
            p.start()
            meter.attach(name, p.proc.pid)
        t_ready = max(p.wait_note("READY=1") for p in ours.values())
        # default1 first: it hands over within seconds (when its wait ends is when it did, to 50 ms);
        # default15 shows it in its first record, one 15 s interval after start.
        tracker_seen = {n: ours[n].wait_tracker() for n in ("default1", "default15")}
        time.sleep(max(0.0, t_ready + mode.warmup_s - time.monotonic()))
        for name, p in procs.items():
            if p.proc.poll() is not None:
                raise RuntimeError(f"{name} exited early ({p.proc.returncode})")
        pids = {name: p.proc.pid for name, p in procs.items()}
        t_start = time.monotonic()
        cpu_marks = [{n: meter.seconds(pid) for n, pid in pids.items()}]
        mark_times = [t_start]
        rss = {n: [] for n in pids}
        sub = mode.soak_s / mode.subwindows
        next_mark = t_start + sub
        recs_before = {n: len(ours[f"{n}1"].records()) for n in OUR_MODES}
        while True:
            now = time.monotonic()
            for n, pid in pids.items():
                rss[n].append((now - t_start, rss_mb(pid)))
            if now >= next_mark:
                cpu_marks.append({n: meter.seconds(pid) for n, pid in pids.items()})
                mark_times.append(now)
                if len(cpu_marks) > mode.subwindows:
                    break
                next_mark = t_start + sub * len(cpu_marks)
            time.sleep(min(1.0, max(0.01, next_mark - time.monotonic())))
        elapsed = mark_times[-1] - t_start
        recs_1s = {n: ours[f"{n}1"].records() for n in OUR_MODES}
        energy_source = {n: ours[f"{n}15"].energy_source() for n in OUR_MODES}
    finally:
        for p in procs.values():
            p.stop()
        meter.close()

    def per_hour(n: str) -> tuple[float, list[float]]:
        rates = [(cpu_marks[i + 1][n] - cpu_marks[i][n]) / (mark_times[i + 1] - mark_times[i]) * 3600
                 for i in range(len(cpu_marks) - 1)]
        return med(rates), rates

    def growth(n: str) -> dict[str, float]:
        xs = [x for x, _ in rss[n]]
        ys = [y for _, y in rss[n]]
        slope = linreg_slope(xs, ys)  # MB per second == MB per interval at 1 s
        return {"slope_mb_per_s": slope, "per_30d_time": slope * 86400 * 30, "first": ys[0], "last": ys[-1]}

    def cadence(n: str) -> dict[str, float]:
        recs, before = recs_1s[n], recs_before[n]
        ks, late = lateness_ms(recs, 1.0)
        late_window, ks_window = late[before:], ks[before:]
        drift_slope = linreg_slope([float(k) for k in ks_window], late_window)  # ms per interval
        return {
            "n": len(recs[before:]),
            "p99": pct(late_window, 99), "max": max(late_window) if late_window else float("nan"),
            "p50": pct(late_window, 50),
            "drift_ms": drift_slope * (ks_window[-1] - ks_window[0]) if len(ks_window) > 1 else float("nan"),
            "skipped": (ks_window[-1] - ks_window[0] + 1 - len(ks_window)) if ks_window else 0,
        }

    sides = (*OUR_MODES, "peer")
    return {
        "elapsed": elapsed,
        "cpu": {n: per_hour(f"{n}15") for n in sides},
        "rss": {n: rss[f"{n}15"][-1][1] for n in sides},
        "growth": {n: growth(f"{n}1") for n in sides},
        "cadence": {n: cadence(n) for n in OUR_MODES},
        "tracker_after_ready_s": {n: (t - t_ready if t is not None else None) for n, t in tracker_seen.items()},
        "window_after_ready_s": t_start - t_ready,
        "energy_source": energy_source,
        "cpu_clock": meter.kind,
    }


_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def parse_wrk(text: str) -> dict[str, float]:
    def dur(s: str) -> float:
        m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", s)
        return float(m.group(1)) * _UNIT[m.group(2)] if m else float("nan")

    out = {"rps": float("nan"), "p50": float("nan"), "p99": float("nan"), "requests": 0.0, "errors": 0.0}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if m:
        out["rps"] = float(m.group(1))
    m = re.search(r"(\d+) requests in", text)
    if m:
        out["requests"] = float(m.group(1))
    for p, key in (("50", "p50"), ("99", "p99")):
        m = re.search(rf"^\s+{p}%\s+(\S+)", text, re.M)
        if m:
            out[key] = dur(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errs = float(m.group(1)) if m else 0.0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        errs += sum(float(x) for x in m.groups())
    out["errors"] = errs
    return out


def run_wrk(port: int, seconds: int, pid: int) -> dict[str, float]:
    c0 = cpu_s(pid)
    w0 = time.time()
    res = subprocess.run(["wrk", "-t2", "-c16", f"-d{seconds}s", "--latency", f"http://127.0.0.1:{port}/metrics"],
                         capture_output=True, text=True, timeout=seconds + 60)
    w1 = time.time()
    c1 = cpu_s(pid)
    out = parse_wrk(res.stdout)
    out["cpu_ms_per_req"] = (c1 - c0) * 1000 / out["requests"] if out["requests"] else float("nan")
    out["wall"] = (w0, w1)
    return out


def parse_rfc3339(s: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def measure_scrape(mode: Mode, tmp: Path) -> dict[str, Any]:
    """/metrics under wrk: ours in the default mode vs a stock prometheus-client server and node-exporter."""
    ours = Ours(tmp / "scrape-ours", 1)
    stock_port, node_port = free_port(), free_port()
    stock = node = None
    results: dict[str, list[dict[str, float]]] = {"ours": [], "stock": [], "node": []}
    sizes = {}
    try:
        ours.start()
        stock = spawn([PY, str(STOCK_EXPORTER), str(stock_port)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        node = spawn([NODE_EXPORTER, f"--web.listen-address=127.0.0.1:{node_port}"],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ours.wait_note("READY=1")
        assert stock.stdout is not None
        stock.stdout.readline()
        wait_port(node_port)
        ours.wait_first_record()
        ours.wait_tracker()  # default mode: load the daemon as it runs once codecarbon's tracker measures
        sizes = {"ours": len(http_get(ours.port)), "stock": len(http_get(stock_port)), "node": len(http_get(node_port))}
        time.sleep(mode.idle_before_load_s)
        targets = {"ours": (ours.port, ours.proc.pid), "stock": (stock_port, stock.pid), "node": (node_port, node.pid)}
        for _ in range(mode.repeats):
            for name, (port, pid) in targets.items():
                results[name].append(run_wrk(port, mode.wrk_s, pid))
                time.sleep(1.0)
        time.sleep(mode.idle_before_load_s)
        recs = ours.records()
    finally:
        ours.stop()
        stop_proc(stock)
        stop_proc(node)
    # Late intervals during load: measurements whose wall-clock end falls inside a wrk run against ours.
    ks, late = lateness_ms(recs, 1.0)
    ends = [parse_rfc3339(r["interval_end"]) for r in recs]
    late_count, under_load, worst = 0, 0, 0.0
    skipped = 0
    for res in results["ours"]:
        w0, w1 = res["wall"]
        idx = [i for i, e in enumerate(ends) if w0 <= e <= w1 + 0.5]
        under_load += len(idx)
        late_count += sum(1 for i in idx if late[i] > 100.0)
        worst = max([worst] + [late[i] for i in idx])
        if idx:
            skipped += ks[idx[-1]] - ks[idx[0]] + 1 - len(idx)
    summary = {
        name: {k: med([r[k] for r in rs]) for k in ("rps", "p50", "p99", "cpu_ms_per_req", "errors")}
        for name, rs in results.items()
    }
    return {"summary": summary, "sizes": sizes, "late": late_count, "under_load": under_load,
            "worst_late_ms": worst, "skipped": skipped}


# --------------------------------------------------------------------------- report


def fmt(v: float, digits: int = 3) -> str:
    if v != v:
        return "n/a"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}g}"


def machine() -> dict[str, str]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return {"nproc": str(os.cpu_count()), "cpu": model, "ram": mem, "kernel": platform.release(),
            "python": platform.python_version()}


def bytecode_state() -> str:
    import codecarbon

    cc_dir = Path(codecarbon.__file__).parent / "__pycache__"
    src_dir = REPO / "src" / "service" / "__pycache__"
    tag = sys.implementation.cache_tag
    cc = any(cc_dir.glob(f"*.{tag}.pyc")) if cc_dir.is_dir() else False
    src = any(src_dir.glob(f"*.{tag}.pyc")) if src_dir.is_dir() else False
    dwb = os.environ.get("PYTHONDONTWRITEBYTECODE", "")
    return (f"site-packages compiled: {'yes' if cc else 'no'}; src/ compiled: {'yes' if src else 'no'}; "
            f"PYTHONDONTWRITEBYTECODE={dwb or '(unset)'}")


def compile_bytecode() -> None:
    import compileall
    import sysconfig

    site = sysconfig.get_paths()["purelib"]
    print(f"compiling bytecode: {site} and {REPO / 'src'} ...", flush=True)
    compileall.compile_dir(site, quiet=1, workers=0)
    compileall.compile_dir(str(REPO / "src"), quiet=1, workers=0)


COLUMNS = ["metric", "default", "lean", "peer", "default/peer", "lean/peer", "target", "met?"]
# Targets (the ratio ones compare with the peer measured in the same run).
DEFAULT_RATIO = 1.0  # default: steady CPU and RSS at most the peer's (it runs the peer's tracker)
LEAN_CPU_RATIO = 0.5  # lean: steady CPU
LEAN_RSS_RATIO = 0.5  # lean: steady RSS (issue 12: <= 0.5x of the peer)
LEAN_STARTUP_CPU_RATIO = 1 / 3  # lean: CPU from exec to the first interval
READY_S = 1.0  # both: exec -> READY=1
GROWTH_MB = 5.0  # both: RSS growth per 30 simulated days


def _ratio(v: float | None, peer: float | None) -> str:
    if v is None or peer is None:
        return "—"
    return f"{v / peer:.2f}x" if peer != 0 and peer == peer and v == v else "n/a"


def _met(**met: bool | None) -> str:
    shown = [f"{name} {'yes' if ok else '**no**'}" for name, ok in met.items() if ok is not None]
    return "; ".join(shown) if shown else "—"


def row(metric: str, d: float | None, l: float | None, p: float | None, target: str = "info",
        digits: int = 3, ratios: bool = True, **met: bool | None) -> list[str]:
    """One table row: default, lean, peer (None: not measured); ``met`` is default=/lean= (None: no target).

    ``ratios`` False for signed offsets, where a ratio to the peer means nothing.
    """
    cell = lambda v: "—" if v is None else fmt(v, digits)  # noqa: E731
    rd, rl = (_ratio(d, p), _ratio(l, p)) if ratios else ("—", "—")
    return [metric, cell(d), cell(l), cell(p), rd, rl, target, _met(**met)]


def build_table(st: dict[str, Any], so: dict[str, Any], sc: dict[str, Any],
                ag: dict[str, dict[str, float]]) -> list[list[str]]:
    d, l, c = st["default"], st["lean"], st["peer"]
    cad_d, cad_l = so["cadence"]["default"], so["cadence"]["lean"]
    s_o, s_s, s_n = sc["summary"]["ours"], sc["summary"]["stock"], sc["summary"]["node"]
    g = so["growth"]
    cpu = {n: v[0] for n, v in so["cpu"].items()}
    cpu_hourly = cpu["default"] + so["recycle"]["recycle_cpu_s"] * RECYCLES_PER_HOUR
    rss = so["rss"]
    acc = {n: ag[n]["per_30d_mb"] for n in ("default", "lean", "peer")}
    iv = st.get("interval", 1)
    return [
        row("start-up: exec -> READY=1 (s) [peer: exec -> first measurement log line]",
            d["ready"], l["ready"], c["ready"], f"both <= {READY_S:g} s",
            default=d["ready"] <= READY_S, lean=l["ready"] <= READY_S),
        row(f"start-up: exec -> first completed {iv} s interval (s) [peer: 2nd measurement line]",
            d["first"], l["first"], c["first"]),
        row(f"start-up: first record's interval_end - (start + {iv} s) (ms) [peer: 2nd - 1st line - {iv} s]",
            d["grid_ms"], l["grid_ms"], c["grid_ms"], f"default |off| < {LATE_MS:g} ms", ratios=False,
            default=abs(d["grid_ms"]) < LATE_MS),
        row("start-up: exec -> first record measured by codecarbon's tracker (s) [default only]",
            d.get("tracker", float("nan")), None, None),
        row("start-up CPU, exec -> first interval (CPU-s)", d["cpu"], l["cpu"], c["cpu"],
            f"lean <= {LEAN_STARTUP_CPU_RATIO:.2f}x peer", lean=l["cpu"] <= c["cpu"] * LEAN_STARTUP_CPU_RATIO),
        row("RSS after start-up (MB) [ours: at the first record]", d["rss"], l["rss"], c["rss"]),
        row("steady CPU at 15 s interval (CPU-s/hour)", cpu["default"], cpu["lean"], cpu["peer"],
            f"default <= {DEFAULT_RATIO:g}x peer; lean <= {LEAN_CPU_RATIO:g}x peer",
            default=cpu["default"] <= DEFAULT_RATIO * cpu["peer"] if cpu["peer"] > 0 else None,
            lean=cpu["lean"] <= LEAN_CPU_RATIO * cpu["peer"] if cpu["peer"] > 0 else None),
        row("steady CPU with the hourly tracker recycle (CPU-s/hour) [default: + one recycle an hour]",
            cpu_hourly, cpu["lean"], cpu["peer"], f"default <= {DEFAULT_RATIO:g}x peer",
            default=cpu_hourly <= DEFAULT_RATIO * cpu["peer"] if cpu["peer"] > 0 else None),
        row("steady RSS at 15 s interval (MB)", rss["default"], rss["lean"], rss["peer"],
            f"default <= {DEFAULT_RATIO:g}x peer; lean <= {LEAN_RSS_RATIO:g}x peer",
            default=rss["default"] <= DEFAULT_RATIO * rss["peer"], lean=rss["lean"] <= LEAN_RSS_RATIO * rss["peer"]),
        row(f"RSS growth per 30 simulated days (MB; accelerated, {ag['default']['intervals']:,} intervals back to back)",
            acc["default"], acc["lean"], acc["peer"], f"both < {GROWTH_MB:g} MB",
            default=acc["default"] < GROWTH_MB, lean=acc["lean"] < GROWTH_MB),
        row("RSS slope over the wall-clock window, x 30 days (MB; noisy, see notes)",
            g["default"]["per_30d_time"], g["lean"]["per_30d_time"], g["peer"]["per_30d_time"]),
        row("/metrics req/s (wrk -t2 -c16) [peer: stock prometheus-client]", s_o["rps"], None, s_s["rps"],
            "default >= 5x peer", default=s_o["rps"] >= 5 * s_s["rps"]),
        row("/metrics p50 latency (ms) [peer: stock]", s_o["p50"], None, s_s["p50"]),
        row("/metrics p99 latency (ms) [peer: stock]", s_o["p99"], None, s_s["p99"], "default < 5 ms",
            default=s_o["p99"] < 5.0),
        row("/metrics CPU-ms per request [peer: stock]", s_o["cpu_ms_per_req"], None, s_s["cpu_ms_per_req"]),
        row("/metrics req/s [peer: node-exporter]", s_o["rps"], None, s_n["rps"]),
        row("/metrics p99 latency (ms) [peer: node-exporter]", s_o["p99"], None, s_n["p99"]),
        row("/metrics CPU-ms per request [peer: node-exporter]", s_o["cpu_ms_per_req"], None, s_n["cpu_ms_per_req"]),
        row(f"late intervals during load (> {LATE_MS:g} ms, of {sc['under_load']})", float(sc["late"]), None, None,
            "0", default=sc["late"] == 0 and sc["skipped"] == 0),
        row("worst lateness during load (ms)", sc["worst_late_ms"], None, None),
        row(f"cadence p99 lateness, 1 s interval, {cad_d['n']} intervals (ms)", cad_d["p99"], cad_l["p99"], None,
            "both < 5 ms", default=cad_d["p99"] < 5.0, lean=cad_l["p99"] < 5.0),
        row("cadence max lateness (ms)", cad_d["max"], cad_l["max"], None),
        row("cadence drift over the window (ms)", cad_d["drift_ms"], cad_l["drift_ms"], None,
            "both |drift| < 1 ms, none skipped",
            default=abs(cad_d["drift_ms"]) < 1.0 and cad_d["skipped"] == 0,
            lean=abs(cad_l["drift_ms"]) < 1.0 and cad_l["skipped"] == 0),
    ]


def render(table: list[list[str]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in table]  # |x| stays one cell
    return "\n".join(lines)


def notes(mode: Mode, st: dict[str, Any], so: dict[str, Any], sc: dict[str, Any], ag: dict[str, dict[str, float]],
          bc: str, wall: float) -> str:
    m = machine()
    g = so["growth"]
    sub = {n: [round(x, 2) for x in v[1]] for n, v in so["cpu"].items()}
    src = {n: so["energy_source"].get(n) or st["energy_source"].get(n, "?") for n in OUR_MODES}
    d = st["default"]
    tr = so["tracker_after_ready_s"]

    def mb(side: str, key: str) -> str:
        return f"{ag[side][key] / 1024:.1f}"

    return "\n".join([
        f"- mode: {mode.name}; repeats (start-up, scrape): {mode.repeats}; total wall {wall:.0f} s",
        f"- machine: {m['nproc']} x {m['cpu']}, {m['ram']} RAM, kernel {m['kernel']}, Python {m['python']}",
        f"- bytecode: {bc}",
        "- default: our daemon as installed, `energy_source: auto`. Here it runs codecarbon's OfflineEmissionsTracker "
        "(built on a background thread after READY=1; our CPU-load estimate counts until it takes over, and its "
        f"energy so far is carried into the tracker's first interval). Its source here: {src['default']}",
        "- lean: our daemon with `energy_source: cpu_load_tdp`: the CPU-load x TDP estimate sampled every second from "
        f"/proc/stat, codecarbon not imported. Its source here: {src['lean']}",
        "- peer: `codecarbon monitor --offline --no-api --country-iso-code FRA --measure-power-secs N` "
        "(start-up runs with --log-level info so its measurement lines can be timestamped; soak runs use the default "
        "--log-level error).",
        f"- start-up: default, lean and peer one after the other, each at a {mode.startup_interval} s interval, so "
        "'first completed interval' is comparable (ours: first NDJSON record; codecarbon: the 2nd 'kWh of "
        "electricity ... used since the beginning' line, the 1st being logged by tracker start). CPU = "
        "utime+stime(+cutime+cstime) from /proc/<pid>/stat, all threads, read right after that first interval; "
        "RSS = VmRSS then. The default's first interval still overlaps the tracker's construction, so its CPU and "
        "RSS there are partial: at its first record measured by codecarbon's tracker "
        f"({d.get('tracker', float('nan')):.2f} s after exec) it had used {d.get('cpu_tracker', float('nan')):.2f} "
        f"CPU-s and held {d.get('rss_tracker', float('nan')):.1f} MB. Grid: interval_end - (interval_start + "
        "interval) of the first record, i.e. its duration_s - interval on the daemon's monotonic clock "
        "(interval_start is the component's start, the grid's origin); off the grid = "
        f"{LATE_MS:g} ms or more, as 'late' under load. Peer: 2nd line - 1st line - interval, on our clock.",
        f"- soak: default@15 s, lean@15 s, codecarbon@15 s, default@1 s, lean@1 s, codecarbon@1 s run concurrently; "
        f"the window starts {mode.warmup_s:g} s after READY and not before both default daemons wrote a record "
        "measured by codecarbon's tracker (seen "
        + ", ".join(f"{n}: {v:.1f} s" for n, v in tr.items() if v is not None)
        + f" after READY; window began {so['window_after_ready_s']:.1f} s after READY), then a "
        f"{so['elapsed']:.0f} s window. Steady CPU = median of {mode.subwindows} consecutive sub-window rates "
        f"(default {sub['default']}, lean {sub['lean']}, peer {sub['peer']} CPU-s/h), CPU read from "
        + (f"{so['cpu_clock']} (a cgroup per process, created by the benchmark)" if so["cpu_clock"] != "ticks" else
           f"/proc/<pid>/stat ticks (no writable cgroup here: one tick in a sub-window is "
           f"{3600 / CLK_TCK / (so['elapsed'] / mode.subwindows):.2f} CPU-s/h, the resolution of these figures)")
        + ". Steady RSS = VmRSS at the window end.",
        "- hourly recycle: the default replaces codecarbon's tracker once an hour (its sample history only "
        "grows otherwise); benchmarks/tracker_recycle.py measures one recycle at "
        f"{so['recycle']['recycle_cpu_s'] * 1000:.1f} ms of CPU (median of {len(so['recycle']['recycles'])}; "
        f"a plain read: {so['recycle']['plain_read_cpu_s'] * 1000:.2f} ms), added once per hour in the "
        "'with the hourly tracker recycle' row. The peer never recycles: its history grows instead.",
        f"- RSS growth per 30 simulated days: benchmarks/accelerated_soak.py drives each side's per-interval path "
        f"{ag['default']['intervals']:,} times back to back in its own process, all three at once (default and lean: "
        "CarbonComponent.measure_once() with `auto` resp. `cpu_load_tdp`, NDJSON and state on /dev/shm; the default "
        "first waits for a record measured by codecarbon's tracker "
        f"({ag['default'].get('tracker_wait_s', 0.0):.1f} s, {ag['default'].get('pre_tracker_intervals', 0):.0f} "
        "intervals not counted), so its construction is not growth; peer: OfflineEmissionsTracker.flush()); "
        "growth = VmRSS at the end minus VmRSS after a warm-up of min(2000, N/10) intervals, scaled to "
        f"{30 * INTERVALS_PER_DAY_15S:,} intervals (default {mb('default', 'rss_after_warmup_kib')} -> "
        f"{mb('default', 'rss_end_kib')} MB, lean {mb('lean', 'rss_after_warmup_kib')} -> {mb('lean', 'rss_end_kib')} "
        f"MB, codecarbon {mb('peer', 'rss_after_warmup_kib')} -> {mb('peer', 'rss_end_kib')} MB). Accelerated time "
        "does not exercise codecarbon's 1 Hz sampler, whose history grows with wall time; the wall-clock row "
        "covers that.",
        "- RSS slope over the wall-clock window: least-squares slope of VmRSS sampled every 1 s on the 1 s-interval "
        f"processes (default {g['default']['first']:.1f} -> {g['default']['last']:.1f} MB, lean "
        f"{g['lean']['first']:.1f} -> {g['lean']['last']:.1f} MB, peer {g['peer']['first']:.1f} -> "
        f"{g['peer']['last']:.1f} MB), x 86400 x 30. One page of movement in a 300 s window becomes tens of MB "
        "here, so it is shown for codecarbon's time-driven growth, not as a target.",
        f"- scrape (default mode, after codecarbon's tracker took over): wrk -t2 -c16 -d{mode.wrk_s}s --latency on "
        f"/metrics, median of {mode.repeats}; page sizes {sc['sizes']} bytes; CPU-ms/request = server process CPU "
        "delta / requests (wrk shares the 2 cores). "
        f"Error/non-2xx counts (median): ours {sc['summary']['ours']['errors']:.0f}, stock "
        f"{sc['summary']['stock']['errors']:.0f}, node {sc['summary']['node']['errors']:.0f}. "
        f"Ours runs at a 1 s interval during load; late = measurement start > {LATE_MS:g} ms (10%) behind the grid; "
        f"skipped grid slots under load: {sc['skipped']}.",
        "- lateness: t_k = cumulative NDJSON duration_s (the daemon's monotonic clock at measurement start); "
        "lateness = t_k - k x interval, minus the smallest such offset in the run (the least-late interval counts "
        "as on time, so values are a lower bound). Drift = least-squares slope of lateness vs k times the number of "
        f"intervals. Cadence p50 default {so['cadence']['default']['p50']:.2f} ms, lean "
        f"{so['cadence']['lean']['p50']:.2f} ms; skipped slots default {so['cadence']['default']['skipped']}, lean "
        f"{so['cadence']['lean']['skipped']}.",
    ])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="short windows, 1 repeat (about 2 minutes)")
    g.add_argument("--smoke", action="store_true", help="tiny windows, for the test suite; numbers are meaningless")
    ap.add_argument("--compile", action="store_true", help="compileall site-packages and src/ first")
    ap.add_argument("--output", type=Path, default=None,
                    help="default benchmarks/results/latest.md (smoke: benchmarks/results/smoke.md)")
    args = ap.parse_args(argv)
    mode = MODES["smoke" if args.smoke else "quick" if args.quick else "full"]
    if args.output is None:
        args.output = REPO / "benchmarks" / "results" / ("smoke.md" if args.smoke else "latest.md")
    if args.compile:
        compile_bytecode()
    bc = bytecode_state()
    t_begin = time.monotonic()

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        with tempfile.TemporaryDirectory(prefix="tta-bench-") as td:
            tmp = Path(td)
            print(f"[bench] mode={mode.name}; {bc}", flush=True)
            print("[bench] start-up ...", flush=True)
            st = measure_startup(mode, tmp)
            print(f"[bench] soak ({mode.soak_s:g} s window) ...", flush=True)
            so = measure_soak(mode, tmp)
            print("[bench] scrape ...", flush=True)
            sc = measure_scrape(mode, tmp)
            print(f"[bench] accelerated soak ({mode.soak_intervals:,} intervals each: default, lean, codecarbon) ...",
                  flush=True)
            ag = measure_accelerated_growth(mode)
            print("[bench] tracker recycle ...", flush=True)
            so["recycle"] = measure_recycle(mode)
    finally:
        stop_all()
    table = render(build_table(st, so, sc, ag))
    text = (f"# tta-carbon benchmark ({mode.name})\n\n{table}\n\n"
            f"{notes(mode, st, so, sc, ag, bc, time.monotonic() - t_begin)}\n")
    print()
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    results = {"startup": st, "soak": so, "scrape": sc, "accelerated": ag}
    args.output.with_suffix(".json").write_text(json.dumps(results, default=str, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
