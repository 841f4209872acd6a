"""Fixtures for the system tests: a real systemd as PID 1 in private namespaces."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from nsystemd import NSystemd, missing_prerequisites
from staged import StagedService

REPO = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Everything under tests/system boots a manager: mark it so `-m "not system"` skips it.
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.system)


@pytest.fixture(scope="session")
def nsystemd_available() -> None:
    """Skip (never fail) on machines that cannot boot a namespaced systemd."""
    why = missing_prerequisites()
    if why:
        pytest.skip(f"namespaced systemd unavailable: {why}")


@pytest.fixture
def nsystemd(nsystemd_available: None, tmp_path: Path) -> Iterator[Callable[..., NSystemd]]:
    """Factory: ``nsystemd(units={...})`` boots a manager; all are torn down after the test."""
    started: list[NSystemd] = []

    def make(units: Mapping[str, str] | None = None, **kwargs: object) -> NSystemd:
        work = tmp_path / f"ns{len(started)}"
        work.mkdir()
        # share=tmp_path: files the test writes beside the manager's dir are visible inside.
        sd = NSystemd(work, units, share=[tmp_path], **kwargs)  # type: ignore[arg-type]
        started.append(sd)
        sd.start()
        return sd

    try:
        yield make
    finally:
        for sd in started:
            sd.stop()


@pytest.fixture(scope="module")
def staged(nsystemd_available: None, tmp_path_factory: pytest.TempPathFactory,
           request: pytest.FixtureRequest) -> Iterator[StagedService]:
    """The project installed by its real installer under a real manager: one per test module."""
    s = StagedService(tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1]), REPO)
    try:
        s.start_manager()
        yield s
    finally:
        s.sd.stop()


@pytest.fixture
def svc(staged: StagedService) -> StagedService:
    """The staged service stopped, not failed, with its shipped configuration: each test starts here."""
    staged.reset()
    return staged
