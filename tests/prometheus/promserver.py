"""A real Prometheus server for tests (no mocks).

    with PromServer(tmp_path, scrape_configs=[...], rule_files=[...]) as prom:
        prom.wait_for(lambda: prom.query('up'), timeout=15)
        prom.query('sum(tta_carbon_emissions_grams_total)')

- starts the Debian `prometheus` binary on 127.0.0.1:<free port> with a
  config written under the test's tmp dir (scrape/evaluation interval 1 s by
  default) and --storage.tsdb.path in tmp;
- waits for /-/ready (and fails with the server's log if it exits early);
- talks to the HTTP API with urllib only (query, query_range, alerts, rules,
  targets, series);
- always terminates the process (context manager / stop(), SIGTERM then
  SIGKILL of its whole process group), so no server outlives the test.

Note: /-/ready answers at once, but the first scraped sample becomes visible
to /api/v1/query only after ~5-6 s. Use wait_for().
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable

import yaml

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
AMTOOL = shutil.which("amtool") or "/usr/bin/amtool"


class PromError(RuntimeError):
    pass


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(fn: Callable[[], Any], timeout: float, interval: float = 0.25, what: str = "") -> Any:
    """Call fn until it returns something truthy; return that. Raise TimeoutError."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            result = fn()
            if result:
                return result
        except (PromError, OSError, urllib.error.URLError, ValueError, KeyError) as exc:
            last_exc = exc
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what or fn}" + (f" (last error: {last_exc!r})" if last_exc else ""))
        time.sleep(interval)


def stop_process_group(proc: subprocess.Popen | None) -> None:
    """SIGTERM a server started in its own process group; SIGKILL it if it is not gone in 10 s."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


class ManagedProcess:
    """A server binary on 127.0.0.1:<free port>, its output in <workdir>/<name>.log, its process
    group stopped at exit. Subclasses name it and give argv() and the readiness path."""

    name = "server"
    ready_path = "/health"

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.workdir / f"{self.name}.log"
        self.proc: subprocess.Popen | None = None
        self._log = None

    def argv(self) -> list[str]:
        raise NotImplementedError

    def start(self, ready_timeout: float = 20.0):
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            self.argv(), stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, cwd=self.workdir,
        )
        try:
            wait_for(self._ready, ready_timeout, 0.1, f"{self.name} {self.ready_path}")
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
        try:
            with urllib.request.urlopen(self.url + self.ready_path, timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        stop_process_group(proc)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-8000:]
        except OSError:
            return ""

    def get_json(self, path: str, params: dict | None = None) -> Any:
        url = self.url + path
        if params:
            url += "?" + urllib.parse.urlencode(params, doseq=True)
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return json.load(r)
        except urllib.error.HTTPError as exc:
            body = exc.read().decode(errors="replace")
            raise PromError(f"{self.name} {path} {params}: HTTP {exc.code}: {body[:2000]}") from exc

    def wait_for(self, fn: Callable[[], Any], timeout: float = 20, interval: float = 0.25, what: str = "") -> Any:
        def guarded():
            if not self.running():
                raise RuntimeError(f"{self.name} is not running:\n{self.log()}")
            return fn()
        return wait_for(guarded, timeout, interval, what)


class PromQueryApi:
    """Prometheus's querying API (/api/v1/...), which VictoriaMetrics serves too."""

    url: str

    def api(self, path: str, params: dict | None = None) -> Any:
        """GET /api/v1/<path>; return `data`; raise PromError on status=error."""
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                body = json.load(r)
        except urllib.error.HTTPError as exc:  # 400/422 carry a JSON error body
            try:
                body = json.load(exc)
            except ValueError:
                raise PromError(f"{path}: HTTP {exc.code}") from exc
        if body.get("status") != "success":
            raise PromError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        if body.get("warnings"):
            self.last_warnings = body["warnings"]
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        """Instant query; returns the result list (vector) or [scalar] wrapped."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self.api("query", params)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def query_value(self, expr: str, at: float | None = None) -> float:
        """Instant query that must return exactly one sample; its float value."""
        res = self.query(expr, at)
        if len(res) != 1:
            raise PromError(f"{expr!r}: expected 1 sample, got {len(res)}: {res}")
        return float(res[0]["value"][1])

    def series(self, match: str, start: float | None = None, end: float | None = None) -> list[dict]:
        params: dict = {"match[]": match}
        if start is not None:
            params["start"] = f"{start:.3f}"
        if end is not None:
            params["end"] = f"{end:.3f}"
        return self.api("series", params)


class PromServer(ManagedProcess, PromQueryApi):
    name = "prometheus"
    ready_path = "/-/ready"

    def __init__(
        self,
        workdir: Path,
        scrape_configs: list[dict] | None = None,
        rule_files: list[Path | str] | None = None,
        *,
        config: dict | None = None,
        scrape_interval: str = "1s",
        evaluation_interval: str = "1s",
        port: int | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        """Either pass scrape_configs/rule_files (a global block with the
        given intervals is added) or a complete `config` dict."""
        super().__init__(workdir, port)
        if config is None:
            config = {
                "global": {"scrape_interval": scrape_interval, "evaluation_interval": evaluation_interval},
                "scrape_configs": scrape_configs or [],
            }
            if rule_files:
                config["rule_files"] = [str(p) for p in rule_files]
        self.config = config
        self.config_path = self.workdir / "prometheus.yml"
        self.data_dir = self.workdir / "data"
        self.extra_args = extra_args or []

    def start(self, ready_timeout: float = 20.0) -> "PromServer":
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        return super().start(ready_timeout)

    def argv(self) -> list[str]:
        return [
            PROMETHEUS,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.data_dir}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--storage.tsdb.retention.time=1h",
            "--log.level=info",
            *self.extra_args,
        ]

    def query_range(self, expr: str, start: float, end: float, step: float | str = 1) -> list[dict]:
        data = self.api("query_range", {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": str(step)})
        return data["result"]

    def alerts(self) -> list[dict]:
        """Active (pending + firing) alerts: /api/v1/alerts."""
        return self.api("alerts")["alerts"]

    def firing(self, alertname: str) -> list[dict]:
        return [a for a in self.alerts() if a["labels"].get("alertname") == alertname and a["state"] == "firing"]

    def rules(self, type_: str | None = None) -> list[dict]:
        """All rules of all groups, flattened (each has health, lastError, query...)."""
        data = self.api("rules", {"type": type_} if type_ else None)
        return [rule for group in data["groups"] for rule in group["rules"]]

    def targets(self, state: str = "active") -> list[dict]:
        return self.api("targets", {"state": state})[f"{state}Targets"]
