import os
import signal
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


def _processes_under(path: str) -> list[tuple[int, str]]:
    """Processes (other than this one) whose command line names a file under ``path``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # exited, or not ours to read
        cmd = " ".join(a.decode(errors="replace") for a in argv if a)
        if path in cmd:
            found.append((int(proc.name), cmd))
    return found


@pytest.fixture(scope="session", autouse=True)
def no_process_outlives_the_suite(tmp_path_factory):
    """A daemon left running by a test keeps writing into pytest's tmp dirs and holds ports: kill it and fail."""
    base = str(tmp_path_factory.getbasetemp())
    yield
    leaked = _processes_under(base)
    for pid, _ in leaked:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not leaked, "processes outlived their tests (killed now): " + "; ".join(
        f"{pid}: {cmd[:160]}" for pid, cmd in leaked)
