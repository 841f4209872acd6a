"""Fixtures for the Prometheus / Grafana / Alertmanager tests.

The tests use the real Debian binaries (`prometheus`, `promtool`, `amtool`;
packages `prometheus` and `prometheus-alertmanager`). Where a binary is
missing the tests that need it are skipped, unless TTA_REQUIRE_PROMETHEUS=1
(set it in CI) turns the skip into a failure.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.prometheus.promlib import need
from tests.prometheus.promserver import PromServer


@pytest.fixture
def promtool():
    need("promtool", "prometheus")
    return shutil.which("promtool")


@pytest.fixture
def amtool():
    need("amtool", "prometheus-alertmanager")
    return shutil.which("amtool")


@pytest.fixture
def prom_factory(tmp_path):
    """prom_factory(config=dict) -> started PromServer; all stopped at teardown."""
    need("prometheus", "prometheus")
    servers: list[PromServer] = []

    def make(**kw) -> PromServer:
        server = PromServer(tmp_path / f"prom{len(servers)}", **kw)
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.stop()


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
