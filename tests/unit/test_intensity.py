"""The carbon-intensity chain: each provider, the order, and every fallback.

The online provider talks to a real HTTP server on 127.0.0.1 (tests/support/fake_electricitymaps.py).
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import pytest
from pydantic import SecretStr

from src.components.carbon.intensity import (
    CountryMixProvider,
    ElectricityMapsProvider,
    FixedProvider,
    IntensityChain,
    ProfileError,
    ProfileProvider,
    build_chain as build_chain_from_settings,
    country_mix_intensity,
)
from src.orchestration import ConfigError, TTAConfig
from src.orchestration.settings import intensity_settings
from tests.support.fake_electricitymaps import FakeElectricityMaps

TOKEN = "tok-unit-7f3a9c1e5d"
FRA_MIX = country_mix_intensity("FRA").grams_per_kwh


def ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


@pytest.fixture
def fake():
    server = FakeElectricityMaps(value=123.5)
    yield server
    server.stop()


def online(fake: FakeElectricityMaps, **kwargs) -> ElectricityMapsProvider:
    kwargs.setdefault("timeout_s", 2.0)
    return ElectricityMapsProvider(SecretStr(TOKEN), "FR", fake.base_url, **kwargs)


def build_chain(cfg: TTAConfig, reuse: IntensityChain | None = None) -> IntensityChain:
    return build_chain_from_settings(intensity_settings(cfg), reuse=reuse)


def config(tmp_path: Path, **values) -> TTAConfig:
    return TTAConfig(config_file="/dev/null", env_file="/dev/null", country_iso_code="FRA",
                     output_dir=tmp_path / "out", state_dir=tmp_path / "state", **values)


def write(tmp_path: Path, text: str, name: str = "profile.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


HOURS = "hour,g_per_kwh\n" + "".join(f"{h},{100 + h}\n" for h in range(24))


# -- 1. fixed / 4. country mix ----------------------------------------------------------------------


def test_fixed_and_country_mix_answer_with_their_labels():
    assert FixedProvider(250.0, "FRA").current(0).source == "fixed"
    mix = CountryMixProvider.for_country("FRA", "FRA/idf").current(0)
    assert (mix.grams_per_kwh, mix.source, mix.location) == (FRA_MIX, "country_mix", "FRA/idf")
    assert 0 < FRA_MIX < 200  # France's bundled mix is low-carbon nuclear; guards against reading USA


# -- 2. profile ------------------------------------------------------------------------------------------


def test_hour_profile_uses_the_utc_hour(tmp_path):
    profile = ProfileProvider.load(write(tmp_path, "# comment\n" + HOURS), "FRA")
    assert profile.current(ts("2026-03-01T00:30:00+00:00")).grams_per_kwh == 100
    assert profile.current(ts("2026-03-01T17:59:59+00:00")).grams_per_kwh == 117
    # 23:30 in UTC-05:00 is 04:30 UTC: the profile is UTC, not local time
    answer = profile.current(ts("2026-03-01T23:30:00-05:00"))
    assert (answer.grams_per_kwh, answer.source, answer.location) == (104, "profile", "FRA")


def test_timestamp_profile_is_a_step_function_whose_last_value_holds(tmp_path):
    profile = ProfileProvider.load(write(tmp_path, (
        "timestamp,g_per_kwh\n2026-01-01T00:00:00Z,300\n2026-01-01T06:00:00+01:00,200\n2026-01-02T00:00:00Z,50\n")))
    assert profile.current(ts("2025-12-31T23:59:59+00:00")) is None  # before the first step: no answer
    assert profile.current(ts("2026-01-01T00:00:00+00:00")).grams_per_kwh == 300
    assert profile.current(ts("2026-01-01T04:59:59+00:00")).grams_per_kwh == 300
    assert profile.current(ts("2026-01-01T05:00:00+00:00")).grams_per_kwh == 200  # 06:00+01:00
    assert profile.current(ts("2030-01-01T00:00:00+00:00")).grams_per_kwh == 50


@pytest.mark.parametrize("text, expected", [
    ("", "empty"),
    ("hours,g\n0,1\n", "line 1: header must be"),
    ("hour,g_per_kwh\n0,100\n24,100\n", "line 3: hour '24' must be an integer 0 to 23"),
    ("hour,g_per_kwh\n0,100\n0,100\n", "line 3: hour 0 appears twice"),
    ("hour,g_per_kwh\n0,100\n", "needs all 24 hours 0-23 (UTC); missing [1, 2,"),
    ("hour,g_per_kwh\n0,abc\n", "line 2: g_per_kwh 'abc' is not a number"),
    ("hour,g_per_kwh\n\n# c\n0,-5\n", "line 4: g_per_kwh '-5' must be > 0"),
    ("hour,g_per_kwh\n0,nan\n", "line 2: g_per_kwh 'nan' must be > 0"),
    ("hour,g_per_kwh\n0,100,7\n", "line 2: expected 2 fields"),
    ("timestamp,g_per_kwh\n2026-01-01T00:00:00,100\n", "line 2: timestamp '2026-01-01T00:00:00' has no UTC offset"),
    ("timestamp,g_per_kwh\nyesterday,100\n", "line 2: timestamp 'yesterday' is not RFC 3339"),
    ("timestamp,g_per_kwh\n2026-01-02T00:00:00Z,1\n2026-01-01T00:00:00Z,2\n", "line 3: timestamp "),
    ("timestamp,g_per_kwh\n", "no timestamp rows"),
])
def test_profile_errors_name_file_and_line(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ProfileError) as exc:
        ProfileProvider.load(path)
    assert str(path) in str(exc.value) and expected in str(exc.value)
    assert "\n" not in str(exc.value)


def test_bad_profile_is_a_one_line_config_error(tmp_path):
    path = write(tmp_path, HOURS.replace("7,107", "7,-1"))
    with pytest.raises(ConfigError) as exc:
        config(tmp_path, intensity_profile_file=str(path))
    msg = str(exc.value)
    assert msg.startswith("invalid intensity_profile_file=") and f"{path} line 9: g_per_kwh '-1'" in msg
    assert "\n" not in msg
    with pytest.raises(ConfigError, match="cannot read"):
        config(tmp_path, intensity_profile_file=str(tmp_path / "missing.csv"))


# -- config for the online step ---------------------------------------------------------------------------


def test_online_config_validation(tmp_path):
    # USA has many zones: no default, so offline=false needs one
    with pytest.raises(ConfigError, match="needs electricitymaps_zone"):
        TTAConfig(config_file="/dev/null", env_file="/dev/null", country_iso_code="USA", offline=False,
                  electricitymaps_token=TOKEN)
    with pytest.raises(ConfigError, match="https://") as exc:
        config(tmp_path, electricitymaps_url="http://api.example.com/v3/x", offline=False,
               electricitymaps_token=TOKEN)
    assert TOKEN not in str(exc.value)
    with pytest.raises(ConfigError) as exc:  # a rejected token value is never echoed
        config(tmp_path, electricitymaps_token=["not", TOKEN])
    assert TOKEN not in str(exc.value)
    with pytest.raises(ConfigError, match="electricitymaps_zone"):
        config(tmp_path, electricitymaps_zone="FR;rm")
    ok = config(tmp_path, offline=False, electricitymaps_token=TOKEN)
    assert build_chain(ok).online.zone == "FR"  # derived from FRA
    assert TOKEN not in str(ok.public_dict()) and TOKEN not in repr(ok)


# -- 3. Electricity Maps against a real loopback server ------------------------------------------------


def test_success_sends_zone_and_token_and_labels_electricitymaps(fake):
    p = online(fake)
    assert p.current(time.time()) is None  # nothing fetched yet: the next step answers
    assert p.fetch_once() is True
    answer = p.current(time.time())
    assert (answer.grams_per_kwh, answer.source, answer.location) == (123.5, "electricitymaps", "FR")
    req = fake.requests[-1]
    assert req["path"] == "/v3/carbon-intensity/latest?zone=FR"
    assert req["headers"].get("auth-token") == TOKEN


def test_background_refresh_is_cached_within_the_refresh_period(fake):
    p = online(fake, refresh_s=30.0)
    p.start()
    try:
        deadline = time.monotonic() + 5
        while p.current(time.time()) is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert p.current(time.time()).source == "electricitymaps"
        for _ in range(1000):  # what the measurement loop does: never a request
            p.current(time.time())
        time.sleep(0.5)
        assert fake.count == 1
    finally:
        p.close(wait_s=1)


def test_background_refresh_repeats_after_the_period(fake):
    p = online(fake, refresh_s=0.3)
    p.start()
    try:
        deadline = time.monotonic() + 5
        while fake.count < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert fake.count >= 2
        fake.value = 99.0
        while p.current(time.time()).grams_per_kwh != 99.0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert p.current(time.time()).grams_per_kwh == 99.0
    finally:
        p.close(wait_s=1)
    settled = fake.count
    time.sleep(0.7)
    assert fake.count == settled  # close() stopped the refresh thread


def test_timeout_falls_back_to_last_known_value(fake):
    p = online(fake, timeout_s=0.3)
    assert p.fetch_once()
    fake.delay_s, fake.value = 1.5, 999.0
    started = time.monotonic()
    assert p.fetch_once() is False
    assert time.monotonic() - started < 1.2  # the short timeout, not the server's delay
    answer = p.current(time.time())
    assert (answer.grams_per_kwh, answer.source) == (123.5, "electricitymaps_cached")
    assert "timed out" in p.last_error
    fake.delay_s = 0.0
    time.sleep(1.6)  # the timed-out request ends when the slow answer comes: no second one runs beside it
    assert p.fetch_once() and p.current(time.time()).source == "electricitymaps"  # recovers
    assert p.current(time.time()).grams_per_kwh == 999.0


def test_error_before_any_success_falls_back_to_country_mix(fake):
    fake.status = 500
    p = online(fake)
    chain = IntensityChain([p, CountryMixProvider.for_country("FRA", "FRA")])
    assert p.fetch_once() is False and p.last_error == "HTTP 500"
    answer = chain.current(time.time())
    assert (answer.grams_per_kwh, answer.source) == (FRA_MIX, "country_mix")


def test_connection_refused_before_success_falls_back_to_country_mix(fake):
    fake.stop()
    p = online(fake)
    assert p.fetch_once() is False and "cannot connect" in p.last_error
    assert build_chain_with(p).current(time.time()).source == "country_mix"


def build_chain_with(p: ElectricityMapsProvider) -> IntensityChain:
    return IntensityChain([p, CountryMixProvider.for_country("FRA", "FRA")])


@pytest.mark.parametrize("body, error", [
    (b"{not json", "not JSON"),
    (b'{"zone": "FR"}', "no numeric carbonIntensity"),
    (b'{"carbonIntensity": "high"}', "no numeric carbonIntensity"),
    (b'{"carbonIntensity": true}', "no numeric carbonIntensity"),
    (b'{"carbonIntensity": -4}', "out of range"),
    (b'[1, 2]', "no numeric carbonIntensity"),
])
def test_malformed_responses_are_failures(fake, body, error):
    p = online(fake)
    chain = build_chain_with(p)
    fake.body = body
    assert p.fetch_once() is False and error in p.last_error
    assert chain.current(time.time()).source == "country_mix"  # before any success
    fake.body = None
    assert p.fetch_once()
    fake.body = body
    assert p.fetch_once() is False
    answer = chain.current(time.time())
    assert (answer.grams_per_kwh, answer.source) == (123.5, "electricitymaps_cached")


def test_http_401_falls_back_and_never_reveals_the_token(fake, caplog):
    fake.status = 401
    fake.body = f'{{"error": "bad token {TOKEN}"}}'.encode()
    p = online(fake)
    with caplog.at_level("WARNING", logger="tta.intensity"):
        assert p.fetch_once() is False
    assert p.last_error == "HTTP 401"
    assert "electricitymaps FR failed: HTTP 401" in caplog.text
    assert TOKEN not in caplog.text and TOKEN not in p.last_error and TOKEN not in repr(p.__dict__)
    assert build_chain_with(p).current(time.time()).source == "country_mix"


def test_redirects_are_refused_so_the_token_stays_home(fake):
    other = FakeElectricityMaps()
    try:
        fake.status, fake.headers_out = 302, {"Location": other.base_url}
        p = online(fake)
        assert p.fetch_once() is False and "302" in p.last_error
        assert other.count == 0
    finally:
        other.stop()


def test_cached_value_expires_to_country_mix(fake):
    now = [1000.0]
    p = online(fake, max_stale_s=60.0, clock=lambda: now[0])
    chain = build_chain_with(p)
    assert p.fetch_once()
    fake.status = 503
    now[0] += 30
    assert p.fetch_once() is False
    assert chain.current(now[0]).source == "electricitymaps_cached"
    now[0] += 31  # 61 s after the last success
    assert chain.current(now[0]).source == "country_mix"


# -- the chain ---------------------------------------------------------------------------------------------


def test_chain_order_fixed_beats_everything(tmp_path, fake):
    cfg = config(tmp_path, intensity_g_per_kwh=42.0, intensity_profile_file=str(write(tmp_path, HOURS)),
                 offline=False, electricitymaps_token=TOKEN, electricitymaps_url=fake.base_url)
    chain = build_chain(cfg)
    assert [type(p) for p in chain.providers] == [FixedProvider] and chain.online is None
    answer = chain.current(time.time())
    assert (answer.grams_per_kwh, answer.source, answer.location) == (42.0, "fixed", "FRA")


def test_chain_order_profile_before_online_before_country_mix(tmp_path, fake):
    steps = write(tmp_path, "timestamp,g_per_kwh\n2026-06-01T00:00:00Z,321\n")
    cfg = config(tmp_path, intensity_profile_file=str(steps), offline=False, electricitymaps_token=TOKEN,
                 electricitymaps_url=fake.base_url, region="idf")
    chain = build_chain(cfg)
    assert [type(p) for p in chain.providers] == [ProfileProvider, ElectricityMapsProvider, CountryMixProvider]
    before = ts("2026-05-01T00:00:00+00:00")
    assert chain.current(before).source == "country_mix"  # profile silent, online not fetched yet
    assert chain.online.fetch_once()
    assert chain.current(before).source == "electricitymaps"
    after = chain.current(ts("2026-06-02T00:00:00+00:00"))
    assert (after.grams_per_kwh, after.source, after.location) == (321, "profile", "FRA/idf")


def test_hour_profile_shadows_online_so_it_is_not_built(tmp_path, fake):
    cfg = config(tmp_path, intensity_profile_file=str(write(tmp_path, HOURS)), offline=False,
                 electricitymaps_token=TOKEN, electricitymaps_url=fake.base_url)
    chain = build_chain(cfg)
    assert chain.online is None and chain.current(time.time()).source == "profile"


def test_offline_never_constructs_or_contacts_the_online_provider(tmp_path, fake):
    cfg = config(tmp_path, offline=True, electricitymaps_token=TOKEN, electricitymaps_url=fake.base_url)
    chain = build_chain(cfg)
    assert [type(p) for p in chain.providers] == [CountryMixProvider]
    chain.start()
    time.sleep(0.3)
    assert fake.count == 0
    assert chain.current(time.time()).source == "country_mix"


def test_rebuild_keeps_an_unchanged_online_provider_and_its_cache(tmp_path, fake):
    base = {"offline": False, "electricitymaps_token": TOKEN, "electricitymaps_url": fake.base_url}
    first = build_chain(config(tmp_path, **base))
    assert first.online.fetch_once()
    same = build_chain(config(tmp_path, project_name="Other", **base), reuse=first)
    assert same.online is first.online and same.current(time.time()).source == "electricitymaps"
    changed = build_chain(config(tmp_path, **{**base, "electricitymaps_token": TOKEN + "x"}), reuse=first)
    assert changed.online is not first.online and changed.current(time.time()).source == "country_mix"
