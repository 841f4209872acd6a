import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.daemon import DaemonProc  # noqa: E402


@pytest.fixture
def daemon_factory(tmp_path):
    """Start real daemons in tmp dirs; every one is stopped at teardown."""
    started: list[DaemonProc] = []

    def make(name: str = "d", **kwargs) -> DaemonProc:
        d = DaemonProc(workdir=tmp_path / name, **kwargs)
        started.append(d)
        return d

    yield make
    for d in started:
        d.stop(timeout=10)
