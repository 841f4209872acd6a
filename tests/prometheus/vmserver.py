"""Real VictoriaMetrics and vmalert for tests (no mocks).

    with VMServer(tmp_path / "vm") as vm, VMAlert(tmp_path / "vmalert", vm, rules=[...]) as vmalert:
        vm.query('sum(tta_carbon_emissions_grams_total)')

Both binaries come from Debian's `victoria-metrics` package (1.79; it also ships
vmalert, vmagent, vmauth, vmctl, vmbackup, vmrestore). Like promserver.PromServer:
127.0.0.1:<free port>, data under the test's tmp dir, HTTP with urllib only, and the
whole process group terminated at exit (SIGTERM, then SIGKILL).

VictoriaMetrics quirks these tests rely on (1.79):
- A sample becomes visible to queries only `-search.latencyOffset` (default 30 s) after
  its timestamp, and ingested rows are buffered in memory for about a second before they
  are searchable: VMServer starts with `-search.latencyOffset=1s` and
  `-search.disableCache`, and `force_flush()` (GET /internal/force_flush) makes what was
  received searchable at once.
- Prometheus's staleness markers (NaN samples) arrive through remote write when a target
  goes away; `samples()` leaves them out.
- `increase()`/`rate()` are MetricsQL's: no extrapolation to the window edges (they use
  the sample before the window), so increase() over a window differs from Prometheus's
  by the extrapolated part. Counters compared bit for bit must be compared as samples.
- `/api/v1/query` accepts a range selector (`x[10m]`) and returns the raw samples, as
  Prometheus does; `/api/v1/export` returns them as JSON lines.
- Neither binary prints a version with `-version` on the Debian build (empty build
  version); `dpkg-query -W victoria-metrics` tells it.
"""
from __future__ import annotations

import math
import shutil
import subprocess
import urllib.request
from pathlib import Path

from tests.prometheus.promserver import ManagedProcess, PromQueryApi

VICTORIA_METRICS = shutil.which("victoria-metrics") or "/usr/bin/victoria-metrics"
VMALERT = shutil.which("vmalert") or "/usr/bin/vmalert"
PACKAGE = "victoria-metrics"  # Debian package with both binaries


def _get(url: str, timeout: float = 10) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


class VMServer(ManagedProcess, PromQueryApi):
    """victoria-metrics single node: Prometheus remote_write at /api/v1/write,
    Prometheus querying API at /api/v1/query."""

    name = "victoria-metrics"

    def __init__(self, workdir: Path, port: int | None = None, extra_args: list[str] | None = None) -> None:
        super().__init__(workdir, port)
        self.data_dir = self.workdir / "data"
        self.extra_args = extra_args or []

    @property
    def write_url(self) -> str:
        return f"{self.url}/api/v1/write"

    def argv(self) -> list[str]:
        return [
            VICTORIA_METRICS,
            f"-storageDataPath={self.data_dir}",
            f"-httpListenAddr=127.0.0.1:{self.port}",
            "-retentionPeriod=1d",
            "-search.latencyOffset=1s",
            "-search.disableCache",
            "-loggerLevel=INFO",
            *self.extra_args,
        ]

    def force_flush(self) -> None:
        """Make every received sample searchable now."""
        _get(self.url + "/internal/force_flush")

    def samples(self, selector: str, window: str = "1h", at: float | None = None) -> dict[tuple, dict[float, float]]:
        """Raw samples of every series matching `selector`: {(sorted label items): {ts: value}}."""
        out = {}
        for s in self.query(f"{selector}[{window}]", at):
            key = tuple(sorted((k, v) for k, v in s["metric"].items()))
            # NaN: a staleness marker (Prometheus writes one when a target goes away)
            out[key] = {float(ts): float(v) for ts, v in s["values"] if not math.isnan(float(v))}
        return out


class VMAlert(ManagedProcess):
    """vmalert evaluating Prometheus rule files against `datasource` and writing
    recording-rule results (and alert state) back through remote write."""

    name = "vmalert"

    def __init__(self, workdir: Path, datasource: VMServer, rules: list[Path | str], *,
                 remote_write: str | None = None, notifier: str | None = None,
                 extra_args: list[str] | None = None, port: int | None = None) -> None:
        super().__init__(workdir, port)
        self.datasource = datasource
        self.rules = [str(r) for r in rules]
        self.remote_write = remote_write if remote_write is not None else datasource.url
        self.notifier = notifier
        self.extra_args = extra_args or []

    def argv(self) -> list[str]:
        args = [
            VMALERT,
            *[f"-rule={r}" for r in self.rules],
            f"-datasource.url={self.datasource.url}",
            f"-httpListenAddr=127.0.0.1:{self.port}",
            "-loggerLevel=INFO",
        ]
        if self.remote_write:
            args += [f"-remoteWrite.url={self.remote_write}", f"-remoteRead.url={self.datasource.url}"]
        if self.notifier:
            args.append(f"-notifier.url={self.notifier}")
        return [*args, *self.extra_args]

    def groups(self) -> list[dict]:
        """/api/v1/rules: every group with its rules (type, lastError, lastSamples ...)."""
        return self.get_json("/api/v1/rules")["data"]["groups"]

    @staticmethod
    def dry_run(rules: list[Path | str]) -> subprocess.CompletedProcess:
        """`vmalert -dryRun`: parse and validate rule files (MetricsQL, templates) only."""
        return subprocess.run([VMALERT, "-dryRun", *[f"-rule={r}" for r in rules]],
                              capture_output=True, text=True, timeout=60)


class Alertmanager(ManagedProcess):
    """Debian's prometheus-alertmanager with a one-receiver config: vmalert refuses to start
    rule files with alerting rules unless it has a notifier."""

    name = "alertmanager"
    ready_path = "/-/ready"
    BINARY = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"

    def argv(self) -> list[str]:
        config = self.workdir / "alertmanager.yml"
        config.write_text("route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n")
        return [self.BINARY, f"--config.file={config}", f"--storage.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address="]

    def alerts(self) -> list[dict]:
        return self.get_json("/api/v2/alerts")
