"""RaplSource against a fake powercap tree.

Deterministic tests drive the counters with FakeRapl.advance()/add_energy_uj(); there the
reader must be exact to the microjoule (the 0.5 % energy / 1 % power budget is checked
too, as the daemon-level requirement). Live-mode tests run the fake in real time.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from src.components.carbon.record import IntervalEnergy, SourceUnavailable
from src.components.carbon.sources import rapl as rapl_module
from src.components.carbon.sources.rapl import (
    ASSUMED_PEAK_WATTS,
    RaplReadError,
    RaplSource,
    rapl_readable,
)
from tests.fixtures.fake_rapl import DEFAULT_MAX_ENERGY_RANGE_UJ, FakeRapl, powercap_namespace_argv

REPO = Path(__file__).resolve().parents[2]


def keys(devices) -> tuple[str, ...]:
    return tuple(d.key for d in devices)


def uj(joules: float) -> int:
    return round(joules * 1_000_000)


def cpu_uj(energy: IntervalEnergy) -> int:
    return uj(energy.components["cpu"].joules)


def ram_uj(energy: IntervalEnergy) -> int:
    return uj(energy.components["ram"].joules)


def assert_close(measured: float, true: float, rel: float) -> None:
    assert abs(measured - true) <= rel * abs(true), f"{measured} vs {true} (allowed {rel:.1%})"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "powercap"


@pytest.fixture
def opened(root: Path) -> Iterator[tuple[FakeRapl, RaplSource]]:
    fake = FakeRapl(root, packages=1)
    source = RaplSource(root)
    source.open()
    yield fake, source
    source.close()


# -- constant and step power ---------------------------------------------------------


def test_constant_power_is_exact_every_interval(opened: tuple[FakeRapl, RaplSource]) -> None:
    fake, source = opened
    for _ in range(10):
        fake.advance(15.0, {"package-0": 42.0, "package-0/core": 30.0})
        energy = source.read_interval()
        assert energy.components["cpu"].method == "rapl"
        assert cpu_uj(energy) == 630_000_000  # 42 W * 15 s
        assert energy.devices == {"package-0": 630.0}
        assert_close(energy.components["cpu"].joules / 15.0, 42.0, 0.01)
    assert "ram" not in source.read_interval().components  # no dram zone: not claimed as 0 J


def test_step_profile_within_and_across_intervals(opened: tuple[FakeRapl, RaplSource]) -> None:
    fake, source = opened
    # (seconds, watts) segments; reads happen after each group.
    intervals = [
        [(15.0, 10.0)],
        [(7.5, 10.0), (7.5, 80.0)],  # step in the middle of an interval
        [(15.0, 80.0)],
        [(0.25, 80.0), (14.75, 3.5)],  # step right after a read
        [(15.0, 0.0)],  # idle counter: zero, not negative or wrapped
    ]
    total = 0
    for segments in intervals:
        for seconds, watts in segments:
            fake.advance(seconds, {"package-0": watts})
        expected = uj(sum(s * w for s, w in segments))
        energy = source.read_interval()
        assert cpu_uj(energy) == expected
        seconds = sum(s for s, _ in segments)
        if expected:
            assert_close(energy.components["cpu"].joules / seconds, expected / 1e6 / seconds, 0.01)
        total += expected
    assert total == fake.energy_uj("package-0")


# -- wraparound ---------------------------------------------------------------------


def test_counters_wrap_many_times_over_an_interval_sequence(root: Path) -> None:
    max_range = 999_999  # period 1 J: wraps every ~1.4 intervals below
    fake = FakeRapl(root, packages=2, dram=True, max_energy_range_uj=max_range)
    fake.set_counter("package-1", max_range - 5)
    source = RaplSource(root)
    source.open()
    keys = ("package-0", "package-1", "package-0/dram", "package-1/dram")
    wraps = dict.fromkeys(keys, 0)
    for i in range(40):
        before = {k: (fake.counter_uj(k), fake.energy_uj(k)) for k in keys}
        watts = {"package-0": 0.7, "package-1": 0.93 if i % 2 else 0.35, "package-0/dram": 0.2, "package-1/dram": 0.45}
        fake.advance(1.0, watts)
        wraps = {k: n + (fake.counter_uj(k) < before[k][0]) for k, n in wraps.items()}
        truth = {k: fake.energy_uj(k) - before[k][1] for k in keys}
        energy = source.read_interval()
        assert {k: uj(j) for k, j in energy.devices.items()} == truth  # exact to the µJ
        assert cpu_uj(energy) == truth["package-0"] + truth["package-1"]
        assert ram_uj(energy) == truth["package-0/dram"] + truth["package-1/dram"]
        # The counter shows whole µJ, so W*s (0.7 is not exact in binary) is met within 1 µJ per zone.
        assert abs(energy.components["cpu"].joules - (0.7 + watts["package-1"])) <= 2e-6
    assert min(wraps.values()) >= 5  # the test really crossed the wrap point many times


def test_wrap_exactly_at_the_boundaries(root: Path) -> None:
    max_range = 1_000
    fake = FakeRapl(root, max_energy_range_uj=max_range)
    fake.set_counter("package-0", max_range)  # open() sees the largest reading
    source = RaplSource(root)
    source.open()
    steps = [
        (1, 0),  # max -> 0: one µJ, not -max
        (max_range, max_range),  # 0 -> max without wrapping
        (1, 0),  # max -> 0 again
        (max_range - 1, max_range - 1),
        (2, 0),  # max-1 -> 0 via max
        (max_range, max_range),  # largest representable step (period - 1)
    ]
    for add, counter_after in steps:
        fake.add_energy_uj({"package-0": add})
        assert fake.counter_uj("package-0") == counter_after
        assert cpu_uj(source.read_interval()) == add


def test_a_full_period_between_reads_is_invisible_unless_sampled(root: Path) -> None:
    # Documents the limit of any wrapping counter, and that sample() is the remedy.
    fake = FakeRapl(root, max_energy_range_uj=999)
    source = RaplSource(root)
    source.open()
    fake.add_energy_uj({"package-0": 1_000})  # exactly one period
    assert cpu_uj(source.read_interval()) == 0
    for _ in range(5):  # 5 periods in one interval, sampled twice per period
        for _ in range(2):
            fake.add_energy_uj({"package-0": 500})
            source.sample()
    assert cpu_uj(source.read_interval()) == 5_000


def test_max_sample_interval_uses_the_smallest_range(root: Path) -> None:
    FakeRapl(root, dram=True, dram_max_energy_range_uj=65_712_999_613)
    source = RaplSource(root)
    source.open()
    assert source.max_sample_interval_s == pytest.approx(65_712.999614 / ASSUMED_PEAK_WATTS)
    assert DEFAULT_MAX_ENERGY_RANGE_UJ / 1e6 / ASSUMED_PEAK_WATTS > source.max_sample_interval_s


# -- which zones count ----------------------------------------------------------------


def test_several_packages_and_dram_are_summed_per_component(root: Path) -> None:
    fake = FakeRapl(root, packages=2, dram=True, uncore=True)
    source = RaplSource(root)
    source.open()
    assert keys(source.devices) == ("package-0", "package-0/dram", "package-1", "package-1/dram")
    fake.advance(
        15.0,
        {
            "package-0": 55.0,
            "package-0/core": 40.0,
            "package-0/uncore": 6.0,
            "package-0/dram": 7.0,
            "package-1": 33.0,
            "package-1/core": 20.0,
            "package-1/dram": 4.5,
        },
    )
    energy = source.read_interval()
    assert cpu_uj(energy) == uj((55.0 + 33.0) * 15)
    assert ram_uj(energy) == uj((7.0 + 4.5) * 15)
    assert energy.devices == {
        "package-0": 825.0,
        "package-0/dram": 105.0,
        "package-1": 495.0,
        "package-1/dram": 67.5,
    }
    # Devices are exactly the counted zones, so they add up to the components.
    assert uj(sum(energy.devices.values())) == cpu_uj(energy) + ram_uj(energy)


def test_core_uncore_and_psys_are_not_double_counted(root: Path) -> None:
    fake = FakeRapl(root, uncore=True, psys=True)
    source = RaplSource(root)
    source.open()
    fake.advance(10.0, {"package-0": 40.0, "package-0/core": 25.0, "package-0/uncore": 5.0, "psys": 100.0})
    energy = source.read_interval()
    assert cpu_uj(energy) == 400_000_000
    assert set(energy.components) == {"cpu"}
    assert set(energy.devices) == {"package-0"}


def test_top_level_dram_zone_counts_as_ram(root: Path) -> None:
    fake = FakeRapl(root)
    fake.add_zone("dram")  # intel-rapl:1 named dram
    source = RaplSource(root)
    source.open()
    fake.advance(2.0, {"package-0": 10.0, "dram": 3.0})
    energy = source.read_interval()
    assert (cpu_uj(energy), ram_uj(energy)) == (20_000_000, 6_000_000)
    assert energy.devices == {"package-0": 20.0, "dram": 6.0}


def test_multi_die_packages_are_all_counted(root: Path) -> None:
    fake = FakeRapl(root, packages=0)
    fake.add_zone("package-0-die-0")
    fake.add_zone("package-0-die-1")
    source = RaplSource(root)
    source.open()
    fake.advance(1.0, {"package-0-die-0": 12.0, "package-0-die-1": 13.0})
    assert cpu_uj(source.read_interval()) == 25_000_000


def test_mmio_control_type_is_ignored(root: Path) -> None:
    # intel-rapl-mmio exposes package-0's counter a second time.
    fake = FakeRapl(root)
    mmio = root / "intel-rapl-mmio" / "intel-rapl-mmio:0"
    mmio.mkdir(parents=True)
    for name, value in (("name", "package-0"), ("energy_uj", "0"), ("max_energy_range_uj", "262143328850")):
        (mmio / name).write_text(value + "\n")
    source = RaplSource(root)
    source.open()
    fake.advance(1.0, {"package-0": 9.0})
    (mmio / "energy_uj").write_text("9000000\n")
    assert keys(source.devices) == ("package-0",)
    assert cpu_uj(source.read_interval()) == 9_000_000


def test_zones_are_ordered_numerically(root: Path) -> None:
    FakeRapl(root, packages=11)
    source = RaplSource(root)
    source.open()
    assert keys(source.devices) == tuple(f"package-{n}" for n in range(11))


# -- lifecycle ---------------------------------------------------------------------


def test_close_returns_the_tail_then_the_source_is_closed(opened: tuple[FakeRapl, RaplSource]) -> None:
    fake, source = opened
    fake.advance(15.0, {"package-0": 20.0})
    assert cpu_uj(source.read_interval()) == 300_000_000
    fake.advance(3.7, {"package-0": 20.0})  # stop arrives mid-interval
    tail = source.close()
    assert cpu_uj(tail) == 74_000_000
    assert tail.devices == {"package-0": 74.0}
    assert source.close() == IntervalEnergy(components={})  # idempotent
    with pytest.raises(RuntimeError, match="not open"):
        source.read_interval()


def test_close_includes_energy_folded_in_by_sample(opened: tuple[FakeRapl, RaplSource]) -> None:
    fake, source = opened
    fake.advance(1.0, {"package-0": 5.0})
    source.sample()
    fake.advance(1.0, {"package-0": 5.0})
    assert cpu_uj(source.close()) == 10_000_000


def test_read_before_open_is_an_error(root: Path) -> None:
    FakeRapl(root)
    with pytest.raises(RuntimeError, match="not open"):
        RaplSource(root).read_interval()


def test_reopen_starts_a_new_baseline(opened: tuple[FakeRapl, RaplSource]) -> None:
    fake, source = opened
    fake.advance(1.0, {"package-0": 5.0})
    source.open()
    fake.advance(1.0, {"package-0": 7.0})
    assert cpu_uj(source.read_interval()) == 7_000_000


def test_name_attribute() -> None:
    assert RaplSource.name == "rapl"
    assert RaplSource().root == Path("/sys/class/powercap")


# -- unavailable at open ---------------------------------------------------------------


def assert_one_line_unavailable(root: Path, *fragments: str) -> str:
    with pytest.raises(SourceUnavailable) as info:
        RaplSource(root).open()
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message
    assert rapl_readable(root) == (False, message)
    return message


def test_missing_powercap_tree(root: Path) -> None:
    assert_one_line_unavailable(root, str(root), "no RAPL")


def test_powercap_without_intel_rapl(root: Path) -> None:
    root.mkdir()
    assert_one_line_unavailable(root, str(root / "intel-rapl"))


def test_no_package_zone(root: Path) -> None:
    FakeRapl(root, packages=0, psys=True)
    assert_one_line_unavailable(root, "no package zone")


def test_open_fails_when_energy_uj_is_a_directory(root: Path) -> None:
    # Root reads anything, so an unreadable counter is simulated by a path open() rejects.
    fake = FakeRapl(root)
    energy = fake.path("package-0") / "energy_uj"
    energy.unlink()
    energy.mkdir()
    assert_one_line_unavailable(root, str(energy))


def test_open_fails_when_energy_uj_is_missing(root: Path) -> None:
    fake = FakeRapl(root)
    (fake.path("package-0") / "energy_uj").unlink()
    assert_one_line_unavailable(root, "energy_uj", "No such file")


def test_open_fails_when_a_dram_counter_is_unreadable(root: Path) -> None:
    # Measuring only part of the machine while claiming RAPL would under-report.
    fake = FakeRapl(root, dram=True)
    (fake.path("package-0/dram") / "energy_uj").unlink()
    assert_one_line_unavailable(root, "intel-rapl:0:2")


def test_open_fails_on_garbage_max_energy_range(root: Path) -> None:
    fake = FakeRapl(root)
    (fake.path("package-0") / "max_energy_range_uj").write_text("0\n")
    assert_one_line_unavailable(root, "max_energy_range_uj")


def test_permission_denied_message_simulated(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Simulated: open() raising EACCES for energy_uj, as Linux >= 5.10 does for non-root.
    fake = FakeRapl(root)
    real_open = open

    def deny(path: object, *args: object, **kwargs: object) -> object:
        if str(path).endswith("energy_uj"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(rapl_module, "open", deny, raising=False)
    assert_one_line_unavailable(root, str(fake.path("package-0") / "energy_uj"), "root-only since Linux 5.10", "docs/")


def _python_for(user: int, env: dict[str, str]) -> str | None:
    """An interpreter the unprivileged user can run and import this checkout with (the
    venv's interpreter lives under /root; a checkout may sit in a 0700 directory)."""
    for candidate in (sys.executable, shutil.which("python3"), "/usr/bin/python3"):
        if candidate is None:
            continue
        try:
            probe = subprocess.run(
                [candidate, "-c", "import src.components.carbon.sources.rapl"],
                user=user,
                group=user,
                extra_groups=[],
                env=env,
                cwd="/",
                capture_output=True,
                check=False,
            )
        except OSError:  # e.g. EACCES on exec: the venv's interpreter is under /root
            continue
        if probe.returncode == 0:
            return candidate
    return None


def test_permission_denied_real_unprivileged_reader(tmp_path: Path) -> None:
    """Real EACCES: energy_uj mode 0400 owned by root, read by another uid."""
    if os.geteuid() != 0:
        fake = FakeRapl(tmp_path / "powercap")
        os.chmod(fake.path("package-0") / "energy_uj", 0)
        assert_one_line_unavailable(tmp_path / "powercap", "permission denied", "root-only since Linux 5.10")
        return
    nobody = 65534
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}
    python = _python_for(nobody, env)
    if python is None:
        pytest.skip("uid 65534 cannot run Python on this checkout (interpreter or repository not readable)")
    base = Path(tempfile.mkdtemp(prefix="fake-rapl-"))  # pytest's tmp_path is 0700
    try:
        base.chmod(0o755)
        FakeRapl(base / "powercap", energy_mode=0o400)  # what Linux >= 5.10 does
        child = textwrap.dedent(
            f"""
            from pathlib import Path
            from src.components.carbon.sources.rapl import rapl_readable
            print(rapl_readable(Path({str(base / "powercap")!r}))[1])
            """
        )
        proc = subprocess.run(
            [python, "-c", child],
            user=nobody,
            group=nobody,
            extra_groups=[],
            env=env,
            capture_output=True,
            text=True,
            cwd="/",
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        message = proc.stdout.strip()
        assert "permission denied" in message and "root-only since Linux 5.10" in message
        assert "intel-rapl:0/energy_uj" in message
    finally:
        shutil.rmtree(base)


# -- failures while running ----------------------------------------------------------


def test_zone_vanishing_mid_run_raises_clearly_then_reopen_recovers(root: Path) -> None:
    fake = FakeRapl(root, packages=2, dram=True)
    source = RaplSource(root)
    source.open()
    fake.advance(15.0, {"package-0": 30.0, "package-1": 30.0})
    assert cpu_uj(source.read_interval()) == 900_000_000
    fake.remove_zone("package-1")  # hot-unplug takes its dram subzone too
    fake.advance(15.0, {"package-0": 30.0})
    for _ in range(2):  # keeps failing while the zone is gone, with the same clear message
        with pytest.raises(RaplReadError) as info:
            source.read_interval()
        message = str(info.value)
        assert "package-1" in message and "intel-rapl:1" in message and "open() again" in message
        assert "\n" not in message
    source.open()
    assert keys(source.devices) == ("package-0", "package-0/dram")
    fake.advance(15.0, {"package-0": 30.0})
    assert cpu_uj(source.read_interval()) == 450_000_000


def test_transient_read_failure_loses_no_energy(opened: tuple[FakeRapl, RaplSource]) -> None:
    fake, source = opened
    fake.advance(15.0, {"package-0": 10.0})
    energy_file = fake.path("package-0") / "energy_uj"
    good = energy_file.read_text()
    energy_file.write_text("garbage\n")  # e.g. a driver hiccup
    with pytest.raises(RaplReadError, match="not an integer"):
        source.read_interval()
    energy_file.write_text(good)
    fake.advance(15.0, {"package-0": 10.0})
    # Both intervals' energy arrives with the next good read.
    assert cpu_uj(source.read_interval()) == 300_000_000


def test_stalled_counter_blocks_the_read_in_open_until_released(opened: tuple[FakeRapl, RaplSource]) -> None:
    """FakeRapl.stall(), which the daemon-level stall tests rely on: the read hangs in
    open(), the counter keeps counting, release() hands the blocked read the current
    count and puts a regular file back; nothing is lost."""
    fake, source = opened
    fake.advance(15.0, {"package-0": 10.0})
    stall = fake.stall("package-0")
    energy_file = fake.path("package-0") / "energy_uj"
    assert stat.S_ISFIFO(energy_file.stat().st_mode)
    fake.advance(15.0, {"package-0": 10.0})  # counts on while stalled; the file stays a FIFO
    assert stat.S_ISFIFO(energy_file.stat().st_mode)
    got: list[IntervalEnergy] = []
    reader = threading.Thread(target=lambda: got.append(source.read_interval()), daemon=True)
    reader.start()
    # True only if the reader was blocked in open() on the FIFO when release() came.
    assert stall.release(wait_for_reader=10)
    reader.join(10)
    assert not reader.is_alive() and cpu_uj(got[0]) == 300_000_000
    assert stat.S_ISREG(energy_file.stat().st_mode)
    assert stall.release() is False  # released once; later calls do nothing
    fake.advance(15.0, {"package-0": 10.0})
    assert cpu_uj(source.read_interval()) == 150_000_000
    with fake.stall("package-0") as again:  # nobody waiting: release just restores the file
        assert again.release() is False
    assert stat.S_ISREG(energy_file.stat().st_mode)


def test_counter_above_declared_range_is_refused(opened: tuple[FakeRapl, RaplSource]) -> None:
    fake, source = opened
    energy_file = fake.path("package-0") / "energy_uj"
    good = energy_file.read_text()
    energy_file.write_text(f"{DEFAULT_MAX_ENERGY_RANGE_UJ + 1}\n")
    with pytest.raises(RaplReadError, match="outside"):
        source.read_interval()
    energy_file.write_text(good)


def test_close_marks_closed_even_if_the_tail_read_fails(root: Path) -> None:
    fake = FakeRapl(root)
    source = RaplSource(root)
    source.open()
    fake.remove_zone("package-0")
    with pytest.raises(RaplReadError):
        source.close()
    assert source.close() == IntervalEnergy(components={})


# -- properties ---------------------------------------------------------------------


@st.composite
def interval_plans(draw: st.DrawFn) -> tuple[int, int, list[list[int]]]:
    """(max_range, initial counter, intervals of advances): each interval's total is
    below one period, the precondition for any wrapping counter."""
    max_range = draw(st.integers(min_value=1, max_value=10**12))
    period = max_range + 1
    start = draw(st.integers(min_value=0, max_value=max_range))
    intervals = []
    for _ in range(draw(st.integers(min_value=1, max_value=25))):
        total = draw(st.integers(min_value=0, max_value=max_range))
        cuts = sorted(draw(st.lists(st.integers(min_value=0, max_value=total), max_size=4)))
        parts = [b - a for a, b in zip([0, *cuts], [*cuts, total], strict=True)]
        intervals.append(parts)
    assert all(sum(p) < period for p in intervals)
    return max_range, start, intervals


@settings(max_examples=200, deadline=None)
@given(plan=interval_plans(), sample_between=st.booleans())
def test_property_read_deltas_sum_to_programmed_energy(
    plan: tuple[int, int, list[list[int]]], sample_between: bool
) -> None:
    max_range, start, intervals = plan
    with tempfile.TemporaryDirectory() as tmp:
        _check_interval_plan(Path(tmp) / "powercap", max_range, start, intervals, sample_between)


def _check_interval_plan(
    root: Path, max_range: int, start: int, intervals: list[list[int]], sample_between: bool
) -> None:
    fake = FakeRapl(root, max_energy_range_uj=max_range, core=False)
    fake.set_counter("package-0", start)
    source = RaplSource(root)
    source.open()
    total = 0
    for parts in intervals:
        for part in parts:
            fake.add_energy_uj({"package-0": part})
            if sample_between:
                source.sample()  # sampling more often must change nothing
        got = cpu_uj(source.read_interval())
        assert got == sum(parts)
        total += got
    assert total == fake.energy_uj("package-0") == sum(map(sum, intervals))


@settings(max_examples=150, deadline=None)
@given(
    # 1 kJ..100 kJ periods against steps of up to 15 kJ: several wraps per step at the low end.
    max_range=st.integers(min_value=10**9, max_value=10**11),
    steps=st.lists(
        st.tuples(st.floats(min_value=0.0, max_value=30.0), st.floats(min_value=0.0, max_value=500.0)),
        min_size=1,
        max_size=30,
    ),
)
def test_property_watts_profile_is_measured_exactly_with_sampling(
    max_range: int, steps: list[tuple[float, float]]
) -> None:
    """Arbitrary step profile; samples taken at least once per period, reads every third
    step, tail at close: the reader's total equals what the counter advanced, which is
    the profile's W*s less under 1 µJ (far inside the 0.5 % budget)."""
    with tempfile.TemporaryDirectory() as tmp:
        _check_watts_profile(Path(tmp) / "powercap", max_range, steps)


def _check_watts_profile(root: Path, max_range: int, steps: list[tuple[float, float]]) -> None:
    fake = FakeRapl(root, max_energy_range_uj=max_range, core=False)
    source = RaplSource(root)
    source.open()
    measured = 0
    for i, (seconds, watts) in enumerate(steps):
        # Split so that no more than half a period passes between samples.
        energy_uj = seconds * watts * 1e6
        pieces = int(energy_uj // (max_range / 2)) + 1
        for _ in range(pieces):
            fake.advance(seconds / pieces, {"package-0": watts})
            source.sample()
        if i % 3 == 2:
            measured += cpu_uj(source.read_interval())
    measured += cpu_uj(source.close())
    assert measured == fake.energy_uj("package-0")
    programmed_uj = sum(s * w for s, w in steps) * 1e6
    # The counter shows whole µJ: below 1 µJ short of the profile (plus float noise).
    assert -1e-9 * programmed_uj <= programmed_uj - measured < 1 + 1e-9 * programmed_uj


# -- live mode ----------------------------------------------------------------------


def test_live_constant_power(root: Path) -> None:
    fake = FakeRapl(root, dram=True)
    source = RaplSource(root)
    source.open()
    with fake:
        start = time.monotonic()
        fake.start_live({"package-0": 42.0, "package-0/dram": 6.0}, tick=0.002)
        time.sleep(1.5)
        with fake.paused():  # read and the fake's clock as one snapshot
            first = source.read_interval()
            live_s = fake.live_seconds
        wall_s = time.monotonic() - start
        time.sleep(0.5)
        ran = fake.stop_live()
    tail = source.close()
    assert_close(first.components["cpu"].joules / live_s, 42.0, 0.01)
    assert_close(first.components["ram"].joules / live_s, 6.0, 0.01)
    # Against the wall clock the fake lags by its tick plus scheduling delays: loose bound.
    assert_close(first.components["cpu"].joules / wall_s, 42.0, 0.05)
    # Once the fake has stopped, reads and truth agree to the µJ.
    assert cpu_uj(first) + cpu_uj(tail) == fake.energy_uj("package-0")
    assert_close((cpu_uj(first) + cpu_uj(tail)) / 1e6 / ran, 42.0, 0.005)


def test_live_step_profile(root: Path) -> None:
    fake = FakeRapl(root, max_energy_range_uj=5_000_000)  # 5 J: wraps every 0.1-0.25 s
    source = RaplSource(root)
    source.open()
    got = 0
    with fake:
        fake.start_live([(0.0, {"package-0": 20.0}), (0.4, {"package-0": 50.0})], tick=0.002)
        deadline = time.monotonic() + 0.8
        while time.monotonic() < deadline:
            time.sleep(0.02)  # reads far more often than the 0.1 s period
            got += cpu_uj(source.read_interval())
        ran = fake.stop_live()
    got += cpu_uj(source.close())
    assert got == fake.energy_uj("package-0")
    assert_close(got / 1e6, 20.0 * 0.4 + 50.0 * (ran - 0.4), 0.005)


def test_live_writes_are_atomic_for_readers(root: Path) -> None:
    fake = FakeRapl(root, max_energy_range_uj=999_999)
    path = fake.path("package-0") / "energy_uj"
    bad: list[bytes] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            data = path.read_bytes()
            if not data.strip().isdigit() or int(data) > 999_999:
                bad.append(data)

    with fake:
        fake.start_live({"package-0": 1e6 / 3}, tick=0.0)
        thread = threading.Thread(target=reader)
        thread.start()
        time.sleep(0.3)
        stop.set()
        thread.join()
    assert bad == []


# -- the hard-coded default path, in a private mount namespace ---------------------------------

NAMESPACE_CHILD = """
import json, sys
from pathlib import Path
from src.components.carbon.sources.rapl import RaplSource, rapl_readable
from tests.fixtures.fake_rapl import FakeRapl

fake = FakeRapl(Path("/sys/class/powercap"), packages=2, dram=True, max_energy_range_uj=10_000_000)
fake.set_counter("package-1", 9_999_990)
source = RaplSource()  # default root
source.open()
reads = []
for _ in range(3):
    fake.advance(15.0, {"package-0": 0.5, "package-1": 0.25, "package-0/dram": 0.1, "package-1/dram": 0.1})
    e = source.read_interval()
    reads.append({"cpu": e.components["cpu"].joules, "ram": e.components["ram"].joules, "devices": e.devices})
fake.advance(2.0, {"package-0": 0.5})
tail = source.close()
print(json.dumps({
    "readable": rapl_readable(),
    "reads": reads,
    "tail_cpu": tail.components["cpu"].joules,
    "entries": sorted(p.name for p in Path("/sys/class/powercap").iterdir()),
}))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs over /sys/class needs root")
def test_default_root_in_a_private_mount_namespace() -> None:
    if shutil.which("unshare") is None:
        pytest.skip("unshare(1) not installed")
    host_had_powercap = Path("/sys/class/powercap").exists()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        powercap_namespace_argv([sys.executable, "-c", NAMESPACE_CHILD]),
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["readable"] == [True, "RAPL readable: package-0, package-0/dram, package-1, package-1/dram"]
    for read in result["reads"]:
        assert uj(read["cpu"]) == 11_250_000  # (0.5 + 0.25) W * 15 s, package-1 wrapping
        assert uj(read["ram"]) == 3_000_000
        assert read["devices"] == {"package-0": 7.5, "package-0/dram": 1.5, "package-1": 3.75, "package-1/dram": 1.5}
    assert uj(result["tail_cpu"]) == 1_000_000
    assert "intel-rapl" in result["entries"] and "intel-rapl:0:2" in result["entries"]
    # Nothing leaked to the host's mount namespace.
    assert Path("/sys/class/powercap").exists() == host_had_powercap
    assert Path("/sys/class/net").exists()
