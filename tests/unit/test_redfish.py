"""The Redfish platform meter against a real HTTPS Redfish service (tests/support/fake_redfish.py).

Real sockets, real TLS with a certificate made for the test, real basic auth: nothing of http
or ssl is mocked. Figures (cost per read, failure-detection times) are printed.
"""

from __future__ import annotations

import base64
import json
import logging
import statistics
import time
import urllib.parse

import pytest

from src.components.carbon.record import SourceUnavailable
from src.components.carbon.secret import Secret
from src.components.carbon.sources.platform import MeterError, PlatformSource
from src.components.carbon.sources.redfish import TLS_HINT, RedfishMeter
from tests.fixtures.power_profile import PowerProfile
from tests.support.fake_redfish import BmcCertificates, FakeRedfish, silent_listener

PASSWORD = "p@ss:w/rd%"  # every character that quoting, URLs or basic auth treat specially
# Steps and ramps, repeating every 3 s.
STEPS_AND_RAMPS = [(0.0, 150.0), (1.0, 300.0), (1.0, 210.0), (1.8, 210.0), (1.8, 120.0), (3.0, 150.0)]


def _renderings(pw: str, user: str = "admin") -> list[str]:
    """Every form the password could take in a message."""
    return [pw, repr(pw), repr(pw)[1:-1], repr(pw.encode()), urllib.parse.quote(pw, safe=""),
            urllib.parse.quote_plus(pw), urllib.parse.quote(pw), json.dumps(pw)[1:-1],
            base64.b64encode(f"{user}:{pw}".encode()).decode(), "p@ss"]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> BmcCertificates:
    return BmcCertificates.make(tmp_path_factory.mktemp("bmc-certs"))


@pytest.fixture
def profile() -> PowerProfile:
    return PowerProfile(STEPS_AND_RAMPS, period_s=3.0)


def _fake(certs: BmcCertificates, profile: PowerProfile, **kwargs) -> FakeRedfish:
    return FakeRedfish(certs, profile, password=PASSWORD, **kwargs)


def _meter(bmc: FakeRedfish, certs: BmcCertificates, password: str = PASSWORD, **kwargs) -> RedfishMeter:
    kwargs.setdefault("ca_file", certs.ca)
    return RedfishMeter(bmc.url, "admin", Secret(password), **kwargs)


def _error(meter: RedfishMeter, timeout_s: float = 2.0) -> tuple[str, float]:
    """The MeterError's line and how long the read took to fail."""
    start = time.monotonic()
    with pytest.raises(MeterError) as info:
        meter.read(timeout_s)
    elapsed = time.monotonic() - start
    line = str(info.value)
    assert "\n" not in line and "Traceback" not in line and line.startswith("redfish https://"), line
    return line, elapsed


@pytest.mark.parametrize(("layout", "resource"), [
    ("power", "Power"), ("environment", "EnvironmentMetrics"), ("both", "EnvironmentMetrics")])
def test_readings_are_the_programmed_watts_in_both_layouts(certs, profile, layout, resource):
    # A backplane first, as on a Dell: the meter walks on to the first chassis that gives a reading.
    with _fake(certs, profile, layout=layout, chassis=("Enclosure.Internal.0-1", "1")) as bmc:
        meter = _meter(bmc, certs)
        got = []
        for _ in range(10):
            watts = meter.read(2.0).watts
            t, served = bmc.served[-1]
            assert watts == served == profile.watts(t)  # exactly what the BMC said, not PowerControl[1] added
            got.append(watts)
            time.sleep(0.2)
        assert len(set(got)) >= 3, got  # the profile moved under it: these are live readings
        assert meter.target is not None and meter.target.path == f"/redfish/v1/Chassis/1/{resource}"
        assert bmc.count("/redfish/v1/Chassis") == 1  # discovered once, then only the resource is read
        assert bmc.count(f"/redfish/v1/Chassis/1/{resource}") == 10
        assert meter.connections == 1  # one kept-alive TLS connection
        assert meter.device.name == f"127.0.0.1:{bmc.port}" and meter.device.kind == "platform"
        meter.close()


def test_a_host_name_is_resolved_within_the_deadline(certs, profile):
    with _fake(certs, profile) as bmc:
        meter = RedfishMeter(f"https://localhost:{bmc.port}", "admin", Secret(PASSWORD), ca_file=certs.ca)
        assert meter.read(2.0).watts == bmc.served[-1][1]
        meter.close()


def test_tls_an_unknown_ca_is_refused_with_the_hint_and_the_bmcs_ca_file_accepts(certs, profile, caplog):
    caplog.set_level(logging.WARNING, "tta.sources")
    with _fake(certs, profile) as bmc:
        for ca_file in (None, certs.other_ca):  # the system's CAs; a CA that did not sign the BMC's certificate
            line, _ = _error(_meter(bmc, certs, ca_file=ca_file))
            assert "TLS certificate verification failed" in line and TLS_HINT in line, line
            assert bmc.url in line
        assert _meter(bmc, certs, ca_file=certs.ca).read(2.0).watts == bmc.served[-1][1]
        assert not caplog.records
        insecure = _meter(bmc, certs, ca_file=None, verify_tls=False)
        for _ in range(3):
            insecure.read(2.0)
        warnings = [r.getMessage() for r in caplog.records]
        assert len(warnings) == 1 and "redfish_verify_tls is false" in warnings[0], warnings  # said once


def test_a_self_signed_factory_certificate_named_as_ca_file_is_trusted_for_its_own_name_only(tmp_path, profile):
    factory = BmcCertificates.self_signed(tmp_path / "factory")  # RSA, self-signed, CA:FALSE, IP:127.0.0.1 only
    with _fake(factory, profile) as bmc:
        assert _meter(bmc, factory).read(2.0).watts == bmc.served[-1][1]
        by_name = RedfishMeter(f"https://localhost:{bmc.port}", "admin", Secret(PASSWORD), ca_file=factory.ca)
        line, _ = _error(by_name)
    assert "mismatch" in line and "redfish_url must name the BMC as its certificate does" in line, line
    assert TLS_HINT not in line  # the CA is right; the name is not


def test_a_ca_file_that_is_not_a_certificate_is_refused_in_one_line(certs, profile, tmp_path):
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    for path in (bad, tmp_path / "missing.pem"):
        with pytest.raises(SourceUnavailable) as info:
            RedfishMeter("https://127.0.0.1:1", "admin", Secret(PASSWORD), ca_file=path)
        assert "redfish_ca_file" in str(info.value) and "\n" not in str(info.value)


def test_a_wrong_password_is_one_line_naming_the_bmc_and_never_the_password(certs, profile, caplog):
    caplog.set_level(logging.DEBUG, "tta.sources")
    with FakeRedfish(certs, profile, password="the-right-one") as bmc:
        meter = _meter(bmc, certs, password=PASSWORD)
        line, _ = _error(meter)
        assert "HTTP 401" in line and "redfish_password" in line and bmc.url in line, line
        assert _error(meter)[0] == line  # the same line every time: PlatformSource logs it once
        # Through PlatformSource too: its log line and its status.
        source = PlatformSource(meter, period_s=0.5)  # each read has 0.4 s: a busy CI machine still makes it
        source.open()
        time.sleep(1.2)
        status = source.platform_meter
        source.close()
    shown = [line, str(meter), repr(meter), meter.device.name, meter.url, status.error, status.device,
             caplog.text]
    for form in _renderings(PASSWORD):
        for text in shown:
            assert form not in text, (form, text)
    assert caplog.text.count("HTTP 401") == 1, caplog.text


def test_a_password_changed_on_the_bmc_mid_run_fails_the_same_way(certs, profile):
    with _fake(certs, profile) as bmc:
        meter = _meter(bmc, certs)
        meter.read(2.0)
        bmc.password = "rotated"
        first, _ = _error(meter)  # the cached resource refused
        bmc.password = PASSWORD
        meter.read(2.0)
    assert "HTTP 401" in first


def test_a_trickling_server_fails_by_the_deadline(certs, profile):
    timeout_s = 1.0
    with _fake(certs, profile) as bmc:
        bmc.trickle_bytes_per_s = 1.0  # one byte a second: never trips a per-recv socket timeout
        warm = _meter(bmc, certs)
        warm.read(2.0)
        bmc.fault = "trickle"
        cached, cached_s = _error(warm, timeout_s)
        cold, cold_s = _error(_meter(bmc, certs), timeout_s)  # discovery, then the trickled resource
        bmc.fault = None
        assert warm.read(2.0).watts == bmc.served[-1][1]  # a fresh connection after the abandoned one
    listener, port = silent_listener()  # accepts TCP, never answers the TLS handshake
    try:
        mute = RedfishMeter(f"https://127.0.0.1:{port}", "admin", Secret(PASSWORD), ca_file=certs.ca)
        handshake, handshake_s = _error(mute, timeout_s)
    finally:
        listener.close()
    for line, took in ((cached, cached_s), (cold, cold_s), (handshake, handshake_s)):
        assert "no complete answer within 1 s" in line, line
        assert timeout_s - 0.05 <= took <= timeout_s + 0.5, (line, took)
    print(f"\nredfish deadline {timeout_s:g} s: trickled answer failed after {cached_s:.3f} s (cached resource), "
          f"{cold_s:.3f} s (discovery), silent TLS handshake after {handshake_s:.3f} s")


def test_an_unreachable_bmc_fails_at_once_and_is_read_again_when_back(certs, profile):
    with _fake(certs, profile) as bmc:
        meter = _meter(bmc, certs)
        meter.read(2.0)
        bmc.stop()  # drops the kept-alive connection too
        first, first_s = _error(meter)
        second, _ = _error(meter)
        assert "cannot connect: connection refused" in first and first == second, (first, second)
        bmc.start()
        assert meter.read(2.0).watts == bmc.served[-1][1]
        assert meter.connections == 2
    print(f"\nredfish: BMC gone detected in {first_s * 1000:.1f} ms (refused connection)")


@pytest.mark.parametrize(("layout", "fault", "says"), [
    ("power", "http_500", "/redfish/v1/Chassis/1/Power: HTTP 500"),
    ("power", "malformed_json", "/redfish/v1/Chassis/1/Power: answer is not JSON"),
    ("power", "null_reading", "/redfish/v1/Chassis/1/Power PowerControl[0].PowerConsumedWatts is null, not a number"),
    ("power", "string_reading", "PowerControl[0].PowerConsumedWatts is the string 'abc', not a number"),
    ("power", "missing_reading", "/redfish/v1/Chassis/1/Power has no PowerControl[0].PowerConsumedWatts"),
    ("power", "huge", "byte limit"),
    ("environment", "null_reading", "/redfish/v1/Chassis/1/EnvironmentMetrics PowerWatts.Reading is null"),
    ("environment", "string_reading", "PowerWatts.Reading is the string 'abc', not a number"),
    ("environment", "missing_reading", "EnvironmentMetrics has no PowerWatts.Reading"),
])
def test_bad_answers_are_one_line_errors_the_same_every_read_and_recover(certs, profile, layout, fault, says):
    with _fake(certs, profile, layout=layout) as bmc:
        meter = _meter(bmc, certs)
        meter.read(2.0)
        bmc.fault = fault
        first, _ = _error(meter)  # the cached resource
        second, _ = _error(meter)  # after a resource failure: discovery again, which meets the same answer
        assert says in first and bmc.url in first, first
        assert second == first
        bmc.fault = None
        assert meter.read(2.0).watts == bmc.served[-1][1]


def test_no_power_resource_is_one_line(certs, profile):
    with _fake(certs, profile, layout="none", chassis=("1", "2")) as bmc:
        line, _ = _error(_meter(bmc, certs))
    assert "no power resource" in line and "2 chassis" in line, line


def test_a_power_resource_that_moves_is_found_again(certs, profile, caplog):
    """A firmware update swaps Power for EnvironmentMetrics: one 404, then discovery finds the new one."""
    caplog.set_level(logging.INFO, "tta.sources")
    with _fake(certs, profile, layout="power") as bmc:
        meter = _meter(bmc, certs)
        meter.read(2.0)
        bmc.layout = "environment"
        line, _ = _error(meter)
        assert "/redfish/v1/Chassis/1/Power: HTTP 404" in line, line
        assert meter.read(2.0).watts == bmc.served[-1][1]
        assert meter.target is not None and meter.target.path.endswith("/EnvironmentMetrics")
    announced = [r.getMessage() for r in caplog.records if "reading /redfish" in r.getMessage()]
    assert len(announced) == 2, announced  # the resource read is logged when chosen, and when it changes


def test_absurd_values_are_refused_by_platform_source_and_the_last_good_power_held(certs, caplog):
    caplog.set_level(logging.WARNING, "tta.sources")

    def wait(what, predicate, timeout=5.0):
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, f"no {what}: {source.platform_meter}"
            time.sleep(0.02)

    with _fake(certs, PowerProfile([(0.0, 200.0)])) as bmc:
        source = PlatformSource(_meter(bmc, certs), period_s=0.5, hold_s=30.0)
        source.open()
        start = time.monotonic()  # the interval starts once open() has its first reading (discovery excluded)
        wait("readings", lambda: len(bmc.served) >= 3)
        for bad, says in ((-5.0, "absurd power reading -5.0"), (1e9, "above platform_max_watts")):
            bmc.override_watts = bad
            wait(f"refusal of {bad}", lambda: says in source.platform_meter.error)
            time.sleep(0.5)  # more absurd readings: still one line
            assert source.last_watts == 200.0  # the last good power, held
        bmc.override_watts = None
        wait("recovery", lambda: source.platform_meter.error == "")
        energy = source.read_interval()
        elapsed = time.monotonic() - start
        source.close()
    joules = energy.components["platform"].joules
    assert joules == pytest.approx(200.0 * elapsed, rel=0.01)  # the refused seconds counted at the held 200 W
    lines = [r.getMessage() for r in caplog.records]
    starts = [m for m in lines if "readings good again" not in m]
    assert len(starts) == 2 and "-5.0" in starts[0] and "1e+09" in starts[1], lines  # one line per failure
    assert sum("readings good again" in m for m in lines) == 1, lines
    assert all("\n" not in m for m in lines)


def test_cost_per_read(certs):
    """Wall and CPU time of one read by this thread (the server runs on others), three ways."""
    reads = 40
    figures = {}
    for mode, kwargs in (("kept-alive connection", {}),
                         ("new connection, TLS resumed", {"keep_alive": False}),
                         ("new connection, full TLS handshake", {"keep_alive": False, "tls_tickets": False})):
        with _fake(certs, PowerProfile([(0.0, 200.0)]), **kwargs) as bmc:
            meter = _meter(bmc, certs)
            meter.read(2.0)  # discovery
            connections, resumed = meter.connections, meter.resumed
            walls, cpus = [], []
            for _ in range(reads):
                w0, c0 = time.perf_counter(), time.thread_time()
                assert meter.read(2.0).watts == 200.0
                cpus.append(time.thread_time() - c0)
                walls.append(time.perf_counter() - w0)
            opened, resumed = meter.connections - connections, meter.resumed - resumed
            meter.close()
        figures[mode] = (statistics.median(walls) * 1000, statistics.median(cpus) * 1000, opened, resumed)
        if mode.startswith("kept"):
            assert opened == 0
        else:
            assert opened == reads
            assert resumed == (reads if "resumed" in mode else 0), (mode, resumed)
    print("\nredfish cost per read (median of %d, this process's reading thread):" % reads)
    for mode, (wall, cpu, opened, resumed) in figures.items():
        print(f"  {mode:36s} {wall:6.2f} ms wall {cpu:6.2f} ms CPU ({opened} connections, {resumed} resumed)")
    assert figures["kept-alive connection"][1] < figures["new connection, full TLS handshake"][1]


@pytest.mark.parametrize(("url", "says"), [
    ("", "redfish_url is not set"),
    ("http://10.0.0.5", "must be https://"),
    (f"https://admin:{urllib.parse.quote(PASSWORD, safe='')}@10.0.0.5", "must not carry credentials"),
    ("https://10.0.0.5/redfish/v1", "give only https://host[:port]"),
    ("https://10.0.0.5:99999", "not a URL"),
])
def test_a_bad_url_is_refused_in_one_line_without_its_credentials(url, says):
    with pytest.raises(SourceUnavailable) as info:
        RedfishMeter(url, "admin", Secret(PASSWORD))
    line = str(info.value)
    assert says in line and "\n" not in line, line
    for form in _renderings(PASSWORD):
        assert form not in line


def test_a_user_name_with_a_colon_is_refused():
    with pytest.raises(SourceUnavailable, match="must not contain ':'"):
        RedfishMeter("https://10.0.0.5", "ad:min", Secret(PASSWORD))
