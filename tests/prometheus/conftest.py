"""Fixtures for the Prometheus / Grafana / Alertmanager tests.

The tests use the real Debian binaries (`prometheus`, `promtool`, `amtool`;
packages `prometheus` and `prometheus-alertmanager`). Where a binary is
missing the tests that need it are skipped, unless TTA_REQUIRE_PROMETHEUS=1
(set it in CI) turns the skip into a failure.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from carbond import CarbonDaemon, daemon_command  # noqa: E402
from promserver import PromServer  # noqa: E402


def _need(binary: str, package: str) -> None:
    if shutil.which(binary):
        return
    msg = f"`{binary}` not installed (apt-get install -y --no-install-recommends {package})"
    if os.environ.get("TTA_REQUIRE_PROMETHEUS") == "1":
        pytest.fail(msg + " and TTA_REQUIRE_PROMETHEUS=1")
    pytest.skip(msg)


@pytest.fixture
def promtool():
    _need("promtool", "prometheus")
    return shutil.which("promtool")


@pytest.fixture
def amtool():
    _need("amtool", "prometheus-alertmanager")
    return shutil.which("amtool")


@pytest.fixture
def prom_factory(tmp_path):
    """prom_factory(config=dict) -> started PromServer; all stopped at teardown."""
    _need("prometheus", "prometheus")
    servers: list[PromServer] = []

    def make(**kw) -> PromServer:
        server = PromServer(tmp_path / f"prom{len(servers)}", **kw)
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def daemon_factory(tmp_path):
    """daemon_factory(name, port, **kw) -> started CarbonDaemon; all stopped at teardown."""
    if daemon_command() is None:
        pytest.skip("the tta-carbon daemon (src/service/cli.py) is not in this tree yet; merge main")
    daemons: list[CarbonDaemon] = []

    def make(name: str, port: int, **kw) -> CarbonDaemon:
        d = CarbonDaemon(tmp_path / name, port, name=name, **kw)
        daemons.append(d)
        return d.start()

    yield make
    for d in daemons:
        if d.proc is not None:
            d.kill()


class Results:
    """Collects lines for the lead to quote: printed (pytest -s) and written
    to <tmp>/results.txt (path printed too). TTA_PROM_RESULTS=<file> also
    appends them to that file."""

    def __init__(self, path: Path, title: str) -> None:
        self.path = path
        self.title = title
        self.lines: list[str] = []

    def add(self, line: str) -> None:
        self.lines.append(line)
        print(line)

    def flush(self) -> None:
        text = f"## {self.title}\n" + "\n".join(self.lines) + "\n"
        self.path.write_text(text)
        print(f"[results written to {self.path}]")
        extra = os.environ.get("TTA_PROM_RESULTS")
        if extra:
            with open(extra, "a") as fh:
                fh.write(text + "\n")


@pytest.fixture
def results(tmp_path, request):
    r = Results(tmp_path / "results.txt", request.node.nodeid)
    yield r
    r.flush()
