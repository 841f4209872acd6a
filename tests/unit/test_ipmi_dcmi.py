"""The IPMI DCMI meter: real ipmitool against the pyghmi-based BMC in tests/support/fake_bmc.py, over UDP.

Nothing here mocks ipmitool or the socket: each read is an ipmitool process opening an RMCP+
session with the fake BMC on 127.0.0.1. Skipped where ipmitool is not installed (Debian:
``apt-get install ipmitool``), except the test that checks the message for exactly that.
"""

from __future__ import annotations

import math
import random
import resource
import shutil
import socket
import statistics
import threading
import time
from pathlib import Path

import pytest

from src.components.carbon.record import PLATFORM
from src.components.carbon.secret import Secret
from src.components.carbon.sources.ipmi_dcmi import (
    INSTALL_HINT,
    DcmiPowerReading,
    IpmiDcmiMeter,
    choose_watts,
    parse_power_reading,
)
from src.components.carbon.sources.platform import MeterError, MeterReading, PlatformSource, platform_device
from tests.support.fake_bmc import FakeBmc, PowerProfile

PASSWORD = "s3cret-Pa55:wd"  # ':' and '-' so that a careless quote would show
needs_ipmitool = pytest.mark.skipif(shutil.which("ipmitool") is None, reason="ipmitool not installed")
READ_TIMEOUT = 3.0  # generous: the test machine may be busy; the deadline tests use their own


@pytest.fixture(scope="module")
def bmc_process():
    if shutil.which("ipmitool") is None:
        pytest.skip("ipmitool not installed")
    with FakeBmc(PowerProfile.constant(237.0), password=PASSWORD) as bmc:
        yield bmc


@pytest.fixture
def bmc(bmc_process):
    """The module's BMC, back to a healthy 237 W before each test."""
    bmc_process.set(silent=False, delay_s=0.0, active=True, unsupported=False, watts_override=None,
                    sample_ms=1000, password=PASSWORD)
    bmc_process.set_profile(PowerProfile.constant(237.0))
    return bmc_process


def meter_for(bmc: FakeBmc, password: str = PASSWORD, user: str = "admin") -> IpmiDcmiMeter:
    return IpmiDcmiMeter(bmc.host, user, Secret(password), port=bmc.port)


def ipmitool_processes(port: int) -> list[str]:
    """Command lines of ipmitool processes talking to ``port`` (ours: the tests start no others)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"ipmitool") and str(port).encode() in argv:
            found.append(b" ".join(argv).decode(errors="replace"))
    return found


def assert_one_line_without_secret(exc: MeterError, *secrets: str) -> str:
    msg = str(exc)
    assert "\n" not in msg and "Traceback" not in msg, msg
    for s in secrets:
        assert s not in msg, msg
    return msg


# ----------------------------------------------------------------------------- parsing (no BMC)
IPMITOOL_1_8_19 = """
    Instantaneous power reading:                   212 Watts
    Minimum during sampling period:                188 Watts
    Maximum during sampling period:                260 Watts
    Average power reading over sample period:      230 Watts
    IPMI timestamp:                           12/02/26 14:00:00 UTC    Sampling period:                          00000005 Seconds.
    Power reading state is:                   activated

"""


def test_parse_ipmitool_output_with_timestamp_and_period_on_one_line():
    r = parse_power_reading(IPMITOOL_1_8_19)
    assert r == DcmiPowerReading(212, 188, 260, 230, 5, True)
    assert parse_power_reading(IPMITOOL_1_8_19.replace("activated", "deactivated")).active is False
    with pytest.raises(ValueError, match="Instantaneous"):
        parse_power_reading("Instantaneous power reading: 212garbage Watts\nPower reading state is: activated")
    with pytest.raises(ValueError, match="state"):
        parse_power_reading("Instantaneous power reading: 212 Watts\n")


@pytest.mark.parametrize(("period", "every", "want"), [
    (5, 5.0, (230, "average")),   # the BMC's window is the time between our reads: the exact figure
    (5, 2.5, (230, "average")),   # twice as long: lags by as much as the current power leads
    (5, 2.3, (230, "average")),   # ... with 10 % for scheduling jitter, so S = 2p does not flip
    (5, 2.2, (212, "current")),   # longer: it says more about the past than about these 2 s
    (0, 5.0, (212, "current")),   # under 1 s or not reported
    (5, None, (212, "current")),  # first reading: nothing to compare with
    (300, 5.0, (212, "current")),  # iLO's 5 minutes
])
def test_average_only_when_its_period_matches_the_time_between_reads(period, every, want):
    r = DcmiPowerReading(212, 188, 260, 230, period, True)
    assert choose_watts(r, every) == want


def test_average_outside_min_max_is_not_believed():
    assert choose_watts(DcmiPowerReading(212, 188, 260, 400, 5, True), 5.0) == (212, "current")


def test_profile_integral_is_exact():
    """The integration test's yardstick: the analytic integral against a fine Riemann sum."""
    p = PowerProfile.starting(180.0, 1000.0).hold(4).step(260).hold(2).ramp(200, 6).hold(1).ramp(320, 0.5)
    a, b, n = 998.0, 1016.0, 180_000
    riemann = sum(p.watts(a + (i + 0.5) * (b - a) / n) for i in range(n)) * (b - a) / n
    assert p.energy_j(a, b) == pytest.approx(riemann, rel=1e-6)
    assert p.energy_j(1000.0, 1004.0) == pytest.approx(720.0)
    assert p.energy_j(1006.0, 1012.0) == pytest.approx(1380.0)  # mean of 260 and 200 over 6 s
    assert p.watts(1004.0) == 260.0 and p.watts(1009.0) == pytest.approx(230.0)


# ----------------------------------------------------------------------------- against the fake BMC
@needs_ipmitool
def test_reading_equals_programmed_watts_and_cost_per_read(bmc):
    meter = meter_for(bmc)
    assert meter.method == "ipmi_dcmi" and meter.blocking_ok is False and meter.default_period_s == 5.0
    assert meter.device.name == f"BMC 127.0.0.1:{bmc.port}" and meter.device.component == "platform"
    # A ramp, so that the figure depends on when the BMC answered: it must be the profile there.
    bmc.set_profile(PowerProfile.starting(150.0).ramp(450.0, 60.0))
    walls, cpus = [], []
    for _ in range(15):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        got = meter.read(READ_TIMEOUT).watts
        walls.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        last = bmc.stats()["last"]
        assert last["current"] == round(last["exact_current"])
        # Back-to-back reads: the BMC's 1 s window is more than twice the time since the last read.
        assert meter.last_figure == "current"
        assert got == last["current"], (got, last)
    wall_ms, cpu_ms = statistics.median(walls) * 1000, statistics.median(cpus) * 1000
    print(f"\nipmi_dcmi read against the fake BMC: median {wall_ms:.1f} ms wall, {cpu_ms:.1f} ms CPU (ipmitool), "
          f"max {max(walls) * 1000:.1f} ms wall over {len(walls)} reads")
    assert wall_ms < 1000


@needs_ipmitool
def test_average_is_used_when_the_bmc_window_matches_the_read_period(bmc):
    bmc.set_profile(PowerProfile.starting(150.0).ramp(450.0, 60.0))  # 5 W/s: average = current - 2.5 W
    meter = meter_for(bmc)
    meter.read(READ_TIMEOUT)
    time.sleep(1.0)
    got = meter.read(READ_TIMEOUT).watts
    last = bmc.stats()["last"]
    assert meter.last_figure == "average"
    assert got == last["average"] == round(last["exact_average"])
    assert last["current"] - last["average"] in (2, 3)  # half the 1 s window's rise, rounded
    bmc.set(sample_ms=300_000)  # a 5-minute window says nothing about the last second
    time.sleep(1.0)
    got = meter.read(READ_TIMEOUT).watts
    assert meter.last_figure == "current" and got == bmc.stats()["last"]["current"]


@needs_ipmitool
def test_wrong_password_is_one_line_without_the_password(bmc):
    wrong = "Wr0ng-pa55-XYZ"
    t0 = time.monotonic()
    with pytest.raises(MeterError) as caught:
        meter_for(bmc, password=wrong).read(READ_TIMEOUT)
    elapsed = time.monotonic() - t0
    msg = assert_one_line_without_secret(caught.value, wrong, PASSWORD)
    assert msg.startswith(f"BMC 127.0.0.1:{bmc.port}: wrong IPMI user name or password"), msg
    assert elapsed < READ_TIMEOUT  # refused, not timed out
    # An unknown user: the BMC says "unauthorized name" in RAKP 2; same message.
    with pytest.raises(MeterError, match="wrong IPMI user name or password") as caught:
        meter_for(bmc, user="nobody").read(READ_TIMEOUT)
    assert_one_line_without_secret(caught.value, PASSWORD)
    print(f"\nwrong password detected in {elapsed * 1000:.0f} ms: {msg}")


@needs_ipmitool
def test_password_travels_in_the_environment_never_on_the_command_line(bmc):
    bmc.set(delay_s=2.0)  # keep ipmitool alive long enough to look at it
    meter = meter_for(bmc)
    assert PASSWORD not in " ".join(meter.argv("ipmitool", 1.0))
    errors: list[BaseException] = []
    reader = threading.Thread(target=lambda: _read_into(meter, errors), daemon=True)
    reader.start()
    seen: list[tuple[bytes, bytes]] = []
    deadline = time.monotonic() + 2.0
    while not seen and time.monotonic() < deadline:
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                try:
                    argv = (proc / "cmdline").read_bytes()
                    if argv.split(b"\0")[0].endswith(b"ipmitool") and str(bmc.port).encode() in argv:
                        seen.append((argv, (proc / "environ").read_bytes()))
                except OSError:
                    continue
        time.sleep(0.01)
    reader.join(5)
    assert seen, "never saw the ipmitool process"
    argv, environ = seen[0]
    assert PASSWORD.encode() not in argv
    assert b"-E" in argv.split(b"\0") and b"-v" in argv.split(b"\0")
    assert f"IPMI_PASSWORD={PASSWORD}".encode() in environ.split(b"\0")
    assert not any(e.startswith(b"IPMITOOL_PASSWORD=") for e in environ.split(b"\0"))


def _read_into(meter: IpmiDcmiMeter, errors: list[BaseException]) -> None:
    try:
        meter.read(1.0)
    except MeterError as exc:
        errors.append(exc)


def _closed_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@needs_ipmitool
@pytest.mark.parametrize("how", ["nothing listening", "silent BMC"])
def test_unreachable_fails_within_the_deadline(bmc, how):
    timeout = 1.0
    if how == "silent BMC":
        bmc.set(silent=True)
        meter = meter_for(bmc)
    else:
        meter = IpmiDcmiMeter("127.0.0.1", "admin", Secret(PASSWORD), port=_closed_udp_port())
    t0 = time.monotonic()
    with pytest.raises(MeterError) as caught:
        meter.read(timeout)
    elapsed = time.monotonic() - t0
    msg = assert_one_line_without_secret(caught.value, PASSWORD)
    assert msg.startswith(f"BMC 127.0.0.1:{meter.port}: no answer within 1 s"), msg
    assert elapsed < timeout + 0.5, elapsed
    assert not ipmitool_processes(meter.port)
    print(f"\n{how}: MeterError after {elapsed * 1000:.0f} ms (deadline {timeout * 1000:.0f} ms): {msg}")


@needs_ipmitool
def test_slow_bmc_fails_by_the_deadline_and_leaves_no_ipmitool(bmc):
    bmc.set(delay_s=3.0)
    timeout = 0.8
    t0 = time.monotonic()
    with pytest.raises(MeterError, match="no answer within 0.8 s") as caught:
        meter_for(bmc).read(timeout)
    elapsed = time.monotonic() - t0
    assert_one_line_without_secret(caught.value, PASSWORD)
    assert elapsed < timeout + 0.5, elapsed
    assert not ipmitool_processes(bmc.port), "ipmitool outlived the deadline"
    print(f"\nslow BMC (3 s): MeterError after {elapsed * 1000:.0f} ms (deadline {timeout * 1000:.0f} ms)")
    # The BMC answers again at normal speed: the next read is good.
    bmc.set(delay_s=0.0)
    assert meter_for(bmc).read(READ_TIMEOUT).watts == 237.0


@needs_ipmitool
def test_measurement_not_active(bmc):
    bmc.set(active=False)
    with pytest.raises(MeterError) as caught:
        meter_for(bmc).read(READ_TIMEOUT)
    msg = assert_one_line_without_secret(caught.value, PASSWORD)
    assert msg == f"BMC 127.0.0.1:{bmc.port}: power measurement not active " \
                  "(the BMC says 'Power reading state is: deactivated')"


@needs_ipmitool
def test_dcmi_unsupported(bmc):
    bmc.set(unsupported=True)
    with pytest.raises(MeterError) as caught:
        meter_for(bmc).read(READ_TIMEOUT)
    msg = assert_one_line_without_secret(caught.value, PASSWORD)
    assert "DCMI power reading unsupported by this BMC" in msg and "0xc1" in msg, msg


@needs_ipmitool
@pytest.mark.parametrize(("wire", "words"), [(65535, "65535 W, the 'no reading' value"), (0, "0 W")])
def test_absurd_figures_are_refused(bmc, wire, words):
    bmc.set(watts_override=wire)
    with pytest.raises(MeterError) as caught:
        meter_for(bmc).read(READ_TIMEOUT)
    msg = assert_one_line_without_secret(caught.value, PASSWORD)
    assert words in msg, msg


def test_ipmitool_absent_gives_the_install_hint(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH with no ipmitool on it
    with pytest.raises(MeterError) as caught:
        IpmiDcmiMeter("127.0.0.1", "admin", Secret(PASSWORD), port=623).read(1.0)
    msg = assert_one_line_without_secret(caught.value, PASSWORD)
    assert msg == f"BMC 127.0.0.1:623: ipmitool not found on PATH: {INSTALL_HINT}"
    with pytest.raises(MeterError, match="^local BMC: ipmitool not found on PATH: install Debian's ipmitool"):
        IpmiDcmiMeter("").read(1.0)


@needs_ipmitool
@pytest.mark.skipif(any(Path(p).exists() for p in ("/dev/ipmi0", "/dev/ipmi/0", "/dev/ipmidev/0")),
                    reason="this machine has a local BMC device")
def test_in_band_without_a_bmc_device_names_the_kernel_modules():
    meter = IpmiDcmiMeter("")
    assert meter.device.name == "local BMC"
    assert meter.argv("ipmitool", 1.0) == ["ipmitool", "dcmi", "power", "reading"]
    t0 = time.monotonic()
    with pytest.raises(MeterError) as caught:
        meter.read(2.0)
    msg = assert_one_line_without_secret(caught.value)
    assert msg.startswith("local BMC: cannot open the IPMI device /dev/ipmi0 (load the ipmi_si and ipmi_devintf"), msg
    assert time.monotonic() - t0 < 2.0


# ----------------------------------------------------------------------------- the evidence for choose_watts
class _Clock:
    t = 0.0

    def __call__(self) -> float:
        return self.t


class _BmcFigure:
    """A BMC meter on a fake clock: the profile's average over ``window_s`` or its instantaneous value,
    whole watts, as DCMI gives them. ``blocking_ok`` is switched by the driver below so that the
    PlatformSource reads it only at the read times (a BMC meter's thread), never at a boundary."""

    method = "sim"
    default_period_s = 5.0

    def __init__(self, profile: PowerProfile, clock: _Clock, figure: str, window_s: float) -> None:
        self.profile, self.clock, self.figure, self.window_s = profile, clock, figure, window_s
        self.blocking_ok = True
        self.device = platform_device("sim")

    def read(self, timeout_s: float) -> MeterReading:
        t = self.clock()
        if self.figure == "average":
            return MeterReading(watts=round(self.profile.energy_j(t - self.window_s, t) / self.window_s))
        return MeterReading(watts=round(self.profile.watts(t)))

    def close(self) -> None:
        pass


def _random_profile(rng: random.Random, length_s: float) -> PowerProfile:
    p = PowerProfile.starting(rng.uniform(150, 300), 0.0)
    while p.end[0] < length_s:
        p = p.hold(rng.uniform(0.5, 8)).step(rng.uniform(150, 350)) if rng.random() < 0.5 \
            else p.ramp(rng.uniform(150, 350), rng.uniform(1, 8))
    return p


def _simulate(profile: PowerProfile, figure: str, window_s: float, period_s: float, interval_s: float,
              intervals: int, phase_s: float) -> list[tuple[float, float]]:
    """(programmed J, PlatformSource's J) per interval, the first (which starts at open()) left out."""
    clock = _Clock()
    meter = _BmcFigure(profile, clock, figure, window_s)
    source = PlatformSource(meter, period_s=period_s, clock=clock)
    source.open()
    meter.blocking_ok = False  # from here on: read only where the events below say
    events = [(i * interval_s, "boundary") for i in range(1, intervals + 1)]
    k = 1
    while k * period_s + phase_s < intervals * interval_s:
        events.append((k * period_s + phase_s, "read"))
        k += 1
    out, prev = [], 0.0
    for t, what in sorted(events):
        clock.t = t
        if what == "read":
            meter.blocking_ok = True
            source.sample()
            meter.blocking_ok = False
        else:
            out.append((profile.energy_j(prev, t), source.read_interval().components[PLATFORM].joules))
            prev = t
    return out[1:]


@pytest.mark.parametrize(("period_s", "window_s", "interval_s"), [
    (1.0, 1.0, 2.0), (5.0, 5.0, 15.0), (5.0, 5.0, 60.0),  # the window is the read period
    (0.5, 1.0, 2.0), (5.0, 10.0, 15.0),  # the window is twice the read period: the edge of the rule
])
def test_the_bmc_average_beats_the_instantaneous_figure_through_platform_source(period_s, window_s, interval_s):
    """Why choose_watts takes the average while S <= 2p: random step/ramp profiles through the real
    PlatformSource on a fake clock, BMC-style (reads on their own schedule, boundaries held), reads
    at a random phase to the boundaries. Run totals: the average is better in every case; per
    interval it is better where S = p and about even at S = 2p."""
    rng = random.Random(20261202)
    per_interval: dict[str, list[float]] = {"average": [], "current": []}
    totals: dict[str, list[float]] = {"average": [], "current": []}
    for _ in range(30):
        profile = _random_profile(rng, 20 * interval_s + 20)
        phase = rng.uniform(0, period_s)
        for figure in per_interval:
            pairs = _simulate(profile, figure, window_s, period_s, interval_s, 20, phase)
            per_interval[figure] += [got / want - 1 for want, got in pairs]
            totals[figure].append(sum(g for _, g in pairs) / sum(w for w, _ in pairs) - 1)
    rms = {f: math.sqrt(statistics.fmean(e * e for e in errors)) for f, errors in per_interval.items()}
    total_rms = {f: math.sqrt(statistics.fmean(e * e for e in errors)) for f, errors in totals.items()}
    print(f"\nread every {period_s:g} s, BMC window {window_s:g} s, {interval_s:g} s intervals: "
          f"per interval rms average {rms['average'] * 100:.2f}% / instantaneous {rms['current'] * 100:.2f}%; "
          f"run total rms average {total_rms['average'] * 100:.3f}% / instantaneous {total_rms['current'] * 100:.3f}%")
    assert total_rms["average"] < total_rms["current"]
    if window_s == period_s:
        assert rms["average"] < 0.7 * rms["current"]
    else:
        assert rms["average"] < 1.2 * rms["current"]
