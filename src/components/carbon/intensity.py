"""Carbon-intensity providers: how many grams of CO2eq one kWh costs here and now.

A chain of providers is asked, in order, on every interval; the first that answers
wins and its ``source`` label goes into the record and the metric:

1. ``fixed``           the ``intensity_g_per_kwh`` override;
2. ``profile``         an hourly (UTC hour-of-day) or timestamped CSV profile;
3. ``electricitymaps`` online Electricity Maps (only when ``offline`` is false), refreshed
                       by a background thread; after a failed refresh the last known value
                       answers as ``electricitymaps_cached``;
4. ``country_mix``     codecarbon's bundled national mix (always answers).

``current()`` never does I/O: it is called from the measurement loop. See docs/intensity.md.
"""

from __future__ import annotations

import bisect
import csv
import json
import logging
import math
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Protocol


from src.components.carbon.files import NotARegularFile, read_small_file
from src.components.carbon.record import Intensity
from src.components.carbon.reference_data import energy_mix
from src.components.carbon.secret import Secret

MAX_G_PER_KWH = 3000.0
DEFAULT_ELECTRICITYMAPS_URL = "https://api.electricitymap.org/v3/carbon-intensity/latest"
MAX_RESPONSE_BYTES = 64 * 1024
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})

_log = logging.getLogger("tta.intensity")

# ISO 3166-1 alpha-3 -> Electricity Maps zone, for countries that are one zone.
# Countries split into several zones (USA, CAN, AUS, BRA, IND, JPN, ITA, SWE, NOR, DNK, ...)
# are deliberately absent: electricitymaps_zone must be set for them.
SINGLE_ZONE_COUNTRIES = {
    "AUT": "AT", "BEL": "BE", "BGR": "BG", "CHE": "CH", "CYP": "CY", "CZE": "CZ", "DEU": "DE",
    "ESP": "ES", "EST": "EE", "FIN": "FI", "FRA": "FR", "GBR": "GB", "GRC": "GR", "HRV": "HR",
    "HUN": "HU", "IRL": "IE", "ISL": "IS", "ISR": "IL", "KOR": "KR", "LTU": "LT", "LUX": "LU",
    "LVA": "LV", "NLD": "NL", "POL": "PL", "PRT": "PT", "ROU": "RO", "SGP": "SG", "SRB": "RS",
    "SVK": "SK", "SVN": "SI", "TUR": "TR", "TWN": "TW", "ZAF": "ZA",
}


def default_zone(country_iso_code: str) -> str | None:
    return SINGLE_ZONE_COUNTRIES.get(country_iso_code)


class IntensityProvider(Protocol):
    def current(self, now_wall: float) -> Intensity | None:
        """The intensity for wall-clock time ``now_wall``, or None to let the next step answer."""


# -- 1. fixed ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FixedProvider:
    grams_per_kwh: float
    location: str

    def current(self, now_wall: float) -> Intensity:
        return Intensity(self.grams_per_kwh, "fixed", self.location)


# -- 2. profile --------------------------------------------------------------------------------


class ProfileError(ValueError):
    """A profile file problem; ``str()`` is one line naming the file and line."""


def _parse_value(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ProfileError(f"{where}: g_per_kwh {text!r} is not a number") from None
    if not (math.isfinite(value) and 0 < value <= MAX_G_PER_KWH):
        raise ProfileError(f"{where}: g_per_kwh {text!r} must be > 0 and <= {MAX_G_PER_KWH:g}")
    return value


def _parse_timestamp(text: str, where: str) -> float:
    try:
        stamp = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise ProfileError(f"{where}: timestamp {text!r} is not RFC 3339 (e.g. 2026-01-31T18:00:00Z)") from None
    if stamp.tzinfo is None:
        raise ProfileError(f"{where}: timestamp {text!r} has no UTC offset (add Z or +01:00)")
    return stamp.timestamp()


@dataclass(frozen=True)
class ProfileProvider:
    """Hour-of-day (UTC) table, or a timestamped step function whose last value holds."""

    kind: str  # "hour" or "timestamp"
    starts: tuple[float, ...]  # hour 0..23, or unix times (sorted)
    values: tuple[float, ...]
    location: str

    @classmethod
    def load(cls, path: Path, location: str = "") -> ProfileProvider:
        name = str(path) if str(path).isprintable() else repr(str(path))  # errors stay on one line
        try:
            text = read_small_file(Path(path)).decode("utf-8")  # a FIFO or /dev/zero is refused, not waited on
        except UnicodeDecodeError as exc:
            raise ProfileError(f"{name}: not valid UTF-8 (byte {exc.start})") from None
        except NotARegularFile as exc:
            raise ProfileError(f"{name}: {exc.strerror}") from None
        except OSError as exc:
            raise ProfileError(f"{name}: cannot read: {exc.strerror}") from None
        except ValueError as exc:  # larger than the bound
            raise ProfileError(f"{name}: {exc}") from None
        rows = []
        # Only "\n" ends a line, as editors count (splitlines() also breaks at \x1e, \x85, ...).
        for lineno, line in enumerate(text.split("\n"), 1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            cells = [c.strip() for c in next(csv.reader([stripped]))]
            rows.append((lineno, cells))
        if not rows:
            raise ProfileError(f"{name}: empty; first line must be 'hour,g_per_kwh' or 'timestamp,g_per_kwh'")
        header_line, header = rows[0]
        kind = {("hour", "g_per_kwh"): "hour", ("timestamp", "g_per_kwh"): "timestamp"}.get(
            tuple(c.lower() for c in header))
        if kind is None:
            raise ProfileError(f"{name} line {header_line}: header must be 'hour,g_per_kwh' or "
                               f"'timestamp,g_per_kwh', got {','.join(header)!r}")
        points: list[tuple[float, float]] = []
        for lineno, cells in rows[1:]:
            where = f"{name} line {lineno}"
            if len(cells) != 2:
                raise ProfileError(f"{where}: expected 2 fields ({kind},g_per_kwh), got {len(cells)}")
            value = _parse_value(cells[1], where)
            if kind == "hour":
                if not cells[0].isdigit() or not 0 <= int(cells[0]) <= 23:
                    raise ProfileError(f"{where}: hour {cells[0]!r} must be an integer 0 to 23 (UTC)")
                hour = int(cells[0])
                if any(h == hour for h, _ in points):
                    raise ProfileError(f"{where}: hour {hour} appears twice")
                points.append((hour, value))
            else:
                start = _parse_timestamp(cells[0], where)
                if points and start <= points[-1][0]:
                    raise ProfileError(f"{where}: timestamp {cells[0]!r} is not after the previous one")
                points.append((start, value))
        if kind == "hour" and len(points) != 24:
            missing = sorted(set(range(24)) - {int(h) for h, _ in points})
            raise ProfileError(f"{name}: an hour profile needs all 24 hours 0-23 (UTC); missing {missing}")
        if not points:
            raise ProfileError(f"{name}: no timestamp rows after the header")
        points.sort()
        return cls(kind, tuple(p[0] for p in points), tuple(p[1] for p in points), location)

    def current(self, now_wall: float) -> Intensity | None:
        if self.kind == "hour":
            return Intensity(self.values[int(now_wall // 3600) % 24], "profile", self.location)
        i = bisect.bisect_right(self.starts, now_wall) - 1
        if i < 0:  # before the first timestamp: the profile has nothing to say
            return None
        return Intensity(self.values[i], "profile", self.location)

    @property
    def covers_all_times(self) -> bool:
        return self.kind == "hour"


# -- 3. Electricity Maps -------------------------------------------------------------------------


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect would carry the auth-token header to another host: refuse it."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001
        raise urllib.error.HTTPError(req.full_url, code, f"redirect refused ({code})", headers, fp)


class ElectricityMapsProvider:
    """Latest zone intensity, fetched off the measurement loop and cached in memory.

    A background thread fetches once at ``start()`` and then every ``refresh_s``
    (``retry_s`` after a failure). ``current()`` only reads the cached state:
    ``electricitymaps`` while the last fetch succeeded, ``electricitymaps_cached``
    (the last known value, for up to ``max_stale_s``) after a failure, None (the next
    step answers) before any success or once the cached value is too old.
    """

    def __init__(self, token: Secret, zone: str, base_url: str = DEFAULT_ELECTRICITYMAPS_URL, *,
                 refresh_s: float = 900.0, timeout_s: float = 5.0, retry_s: float = 60.0,
                 max_stale_s: float = 86400.0, clock: Callable[[], float] = time.time) -> None:
        # The library's Secret (it scrubs itself from messages), whatever secret type the caller holds.
        self._token = token if isinstance(token, Secret) else Secret(token.get_secret_value())
        self.zone = zone
        self.url = f"{base_url}?{urllib.parse.urlencode({'zone': zone})}"
        self.refresh_s = refresh_s
        self.timeout_s = timeout_s
        self.retry_s = min(retry_s, refresh_s)
        self.max_stale_s = max_stale_s
        self._clock = clock
        host = urllib.parse.urlsplit(base_url).hostname or ""
        handlers: list[urllib.request.BaseHandler] = [_NoRedirect()]
        if host in LOOPBACK_HOSTS:
            handlers.append(urllib.request.ProxyHandler({}))  # never send a loopback request to a proxy
        self._opener = urllib.request.build_opener(*handlers)
        # (value, fetched_at wall time, last fetch ok); replaced whole, so readers need no lock
        self._state: tuple[float | None, float, bool] = (None, 0.0, False)
        self.last_error = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._in_flight: threading.Thread | None = None  # a request past its deadline, still running

    @property
    def settings_key(self) -> tuple:
        return (self._token.get_secret_value(), self.url, self.refresh_s, self.timeout_s)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="electricitymaps", daemon=True)
            self._thread.start()

    def close(self, wait_s: float = 0.0) -> None:
        """Stop refreshing. Does not wait by default: a request in flight (up to ``timeout_s``)
        must not hold up a reload or shutdown; the thread is a daemon and ends on its own."""
        self._stop.set()
        if self._thread is not None and wait_s > 0:
            self._thread.join(wait_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            ok = self.fetch_once()
            self._stop.wait(self.refresh_s if ok else self.retry_s)

    def fetch_once(self) -> bool:
        """One request; updates the cached state. Returns whether it succeeded. Never raises."""
        try:
            value = self._request_within_deadline()
        except Exception as exc:  # any failure falls back; the daemon never dies of it
            error = self._scrub(_describe_error(exc))
            value_before, fetched_at, was_ok = self._state
            self._state = (value_before, fetched_at, False)
            if was_ok or error != self.last_error:
                _log.warning("electricitymaps %s failed: %s; using %s", self.zone, error,
                             "last known value" if value_before is not None else "the next intensity source")
            self.last_error = error
            return False
        if self.last_error:
            _log.warning("electricitymaps %s recovered: %s g/kWh", self.zone, value)
        self._state = (value, self._clock(), True)
        self.last_error = ""
        return True

    def _request_within_deadline(self) -> float:
        """``_request`` with a total deadline of ``timeout_s``, not only a per-``recv`` one.

        A server that trickles one byte every few seconds never trips a socket timeout, and
        the last value stayed labelled live ``electricitymaps`` for good. The request runs on
        a helper thread that is abandoned (a daemon thread) if it overruns; while one is still
        stuck no second one starts, so a hostile server holds at most one thread.
        """
        stuck = self._in_flight
        if stuck is not None and stuck.is_alive():
            raise TimeoutError(f"the previous request is still unanswered after its {self.timeout_s:g} s deadline")
        outcome: list[float | BaseException] = []

        def run() -> None:
            try:
                outcome.append(self._request())
            except BaseException as exc:  # handed to the caller's thread below
                outcome.append(exc)

        worker = threading.Thread(target=run, name="electricitymaps-request", daemon=True)
        self._in_flight = worker
        worker.start()
        worker.join(self.timeout_s)
        if not outcome:
            raise TimeoutError(f"no complete answer within {self.timeout_s:g} s")
        self._in_flight = None
        if isinstance(outcome[0], BaseException):
            raise outcome[0]
        return outcome[0]

    def _request(self) -> float:
        req = urllib.request.Request(self.url, headers={
            "auth-token": self._token.get_secret_value(), "Accept": "application/json",
            "User-Agent": "tta-staging-carbon"})
        with self._opener.open(req, timeout=self.timeout_s) as resp:
            body = resp.read(MAX_RESPONSE_BYTES + 1)
        if len(body) > MAX_RESPONSE_BYTES:
            raise ValueError(f"response larger than {MAX_RESPONSE_BYTES} bytes")
        try:
            data = json.loads(body)
        except ValueError:
            raise ValueError("response is not JSON") from None
        value = data.get("carbonIntensity") if isinstance(data, dict) else None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"response has no numeric carbonIntensity (got {type(value).__name__})")
        value = float(value)
        if not (math.isfinite(value) and 0 <= value <= MAX_G_PER_KWH):
            raise ValueError(f"carbonIntensity {value!r} out of range 0..{MAX_G_PER_KWH:g}")
        return value

    def _scrub(self, text: str) -> str:
        return self._token.scrub(text)

    def current(self, now_wall: float) -> Intensity | None:
        value, fetched_at, ok = self._state
        if value is None:
            return None
        if ok:
            return Intensity(value, "electricitymaps", self.zone)
        if self._clock() - fetched_at <= self.max_stale_s:
            return Intensity(value, "electricitymaps_cached", self.zone)
        return None


def _describe_error(exc: Exception) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        return f"cannot connect: {getattr(reason, 'strerror', None) or reason}"
    if isinstance(exc, TimeoutError):
        detail = str(exc)
        return f"timed out: {detail}" if detail and detail != "timed out" else "timed out"
    return f"{type(exc).__name__}: {exc}"


# -- 4. country mix --------------------------------------------------------------------------------


def country_mix_intensity(country_iso_code: str) -> Intensity:
    mix = energy_mix()
    if mix is None:  # TTAConfig refuses this combination; keep the message if called directly
        raise LookupError("codecarbon's country energy mix is unavailable (codecarbon not installed)")
    entry = mix[country_iso_code]
    return Intensity(float(entry["carbon_intensity"]), "country_mix", country_iso_code)


@dataclass(frozen=True)
class CountryMixProvider:
    intensity: Intensity

    @classmethod
    def for_country(cls, country_iso_code: str, location: str) -> CountryMixProvider:
        mix = country_mix_intensity(country_iso_code)
        return cls(Intensity(mix.grams_per_kwh, mix.source, location))

    def current(self, now_wall: float) -> Intensity:
        return self.intensity


# -- the chain -------------------------------------------------------------------------------------


class IntensityChain:
    """Ask each provider in order; the first answer wins. The last provider always answers."""

    def __init__(self, providers: Sequence[IntensityProvider]) -> None:
        if not providers:
            raise ValueError("an intensity chain needs at least one provider")
        self.providers = tuple(providers)

    @property
    def online(self) -> ElectricityMapsProvider | None:
        return next((p for p in self.providers if isinstance(p, ElectricityMapsProvider)), None)

    def current(self, now_wall: float) -> Intensity:
        for provider in self.providers:
            answer = provider.current(now_wall)
            if answer is not None:
                return answer
        raise LookupError("no intensity provider answered")  # unreachable with a fixed/country_mix tail

    def start(self) -> None:
        if self.online is not None:
            self.online.start()

    def close(self) -> None:
        if self.online is not None:
            self.online.close()


@dataclass(frozen=True, slots=True)
class OnlineSettings:
    """Electricity Maps: where to ask and how often. Present only when not offline."""

    token: Secret
    zone: str
    url: str = DEFAULT_ELECTRICITYMAPS_URL
    refresh_s: float = 900.0
    timeout_s: float = 5.0


@dataclass(frozen=True, slots=True)
class IntensitySettings:
    """What the chain is built from (docs/intensity.md); ``profile`` is already parsed."""

    country_iso_code: str
    region: str | None = None
    fixed_g_per_kwh: float | None = None
    profile: ProfileProvider | None = None
    online: OnlineSettings | None = None

    @property
    def location(self) -> str:
        return f"{self.country_iso_code}/{self.region}" if self.region else self.country_iso_code


def build_chain(settings: IntensitySettings, reuse: IntensityChain | None = None) -> IntensityChain:
    """The chain for ``settings``. An online provider with unchanged settings is taken over from
    ``reuse`` (keeping its cache and thread); the caller closes ``reuse`` only if it is not."""
    location = settings.location
    if settings.fixed_g_per_kwh is not None:
        return IntensityChain([FixedProvider(float(settings.fixed_g_per_kwh), location)])
    providers: list[IntensityProvider] = []
    profile = settings.profile
    if profile is not None:
        profile = replace(profile, location=location)
        providers.append(profile)
    online = settings.online
    if online is not None and not (profile and profile.covers_all_times):
        fresh = ElectricityMapsProvider(
            online.token, online.zone, online.url, refresh_s=online.refresh_s, timeout_s=online.timeout_s,
            retry_s=min(60.0, online.refresh_s),
        )
        old = reuse.online if reuse is not None else None
        providers.append(old if old is not None and old.settings_key == fresh.settings_key else fresh)
    providers.append(CountryMixProvider.for_country(settings.country_iso_code, location))
    return IntensityChain(providers)
