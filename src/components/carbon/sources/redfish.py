"""Platform power from a BMC's Redfish service: the chassis power reading, over HTTPS.

What the reading is. The BMC's own figure for the power the chassis draws, in watts. On rack
servers the BMC usually takes it from the power supplies' input (PMBus ``READ_PIN``), so it
includes PSU losses, fans, disks, NICs and the board: the whole box, as the wall socket sees
it. BMCs refresh it about once a second and some average it over a few seconds; Redfish does
not say which. :class:`~src.components.carbon.sources.platform.PlatformSource` takes each
reading as the power since the previous one and integrates (sources/platform.py).

Resources read (docs/platform-power.md#redfish). Discovery, once, then cached:

1. ``GET /redfish/v1/Chassis`` (a URI every Redfish service since DSP0266 1.6 serves); its
   ``Members`` in the order the BMC lists them (the server's own chassis usually first:
   iDRAC's ``System.Embedded.1`` before its ``Enclosure.Internal.0-1`` backplane).
2. For each chassis, ``GET`` the member, then, following the links the chassis itself gives
   (never URIs built by hand):

   a. ``EnvironmentMetrics`` → ``PowerWatts.Reading``: the current model (Chassis 1.15,
      DMTF release 2020.4, together with ``PowerSubsystem``, which holds the power supplies
      and capacity but no total reading). Preferred: it is defined as the chassis's power,
      and the OCP Sustainability profile requires it on the outermost chassis. Firmware
      that links it but leaves ``PowerWatts`` empty falls through to b.
   b. ``Power`` → ``PowerControl[0].PowerConsumedWatts``: the classic resource, deprecated
      in 2020.4 but what most BMCs in service serve, and the only one Kepler's experimental
      Redfish support reads (each PowerControl entry as its own metric). Entry 0 is the
      chassis total ("System Power Control", Dell's "Server Power Control"); later entries
      are sub-domains (CPU, memory) inside it and are not added.

   The first chassis that gives a numeric reading is the meter (``RedfishMeter.target``; the
   choice is logged at INFO, which the daemon's log leaves out for library loggers). After a
   failure that says something about that resource (HTTP 404, not JSON, no numeric reading),
   the next read discovers again; after one that does not (unreachable, timeout, TLS,
   401/403, 5xx), the next read retries the same resource.

Every later read is one ``GET`` of that resource. Authentication is HTTP basic auth on each
request: every Redfish service supports it, it needs no state on the BMC, and it cannot leak
sessions. (A Redfish session, ``POST /redfish/v1/SessionService/Sessions`` and an
``X-Auth-Token``, saves the BMC a password check per request but occupies one of its few
session slots, often 4 to 16, and must be renewed when the BMC drops it after its idle
timeout or a reset; basic auth over a kept-alive TLS connection costs the client nothing extra.)

Cost per read (tests/unit/test_redfish.py prints it; medians on the 2-core CI VM against a
local HTTPS server, EC P-256 certificate, TLS 1.3, this process's reading thread only): the
connection is kept alive between reads, so a read is one request on an open TLS connection,
0.2 ms wall and 0.1 ms CPU. When the BMC closes the connection after each answer (some do),
each read opens a new one and resumes the TLS session: 2.2 ms wall, 1.5 ms CPU; without
resumption, a full handshake: 2.9 ms wall, 2.0 ms CPU. A real BMC takes 50 ms to 2 s to
answer; that is waited for on the background thread, not in the measurement loop.

Deadline. ``read(timeout_s)`` returns or raises within ``timeout_s`` in total: name resolution
(for a host name) runs on a helper thread joined with the deadline; connect, the TLS handshake,
every send and every receive get only the time left until the deadline, so a server that
trickles one byte a second cannot stretch a read. Answers over ``MAX_RESPONSE_BYTES`` are
refused. TLS is verified against the system's CAs, or only the ``ca_file`` given (a BMC's own
CA); ``verify_tls=False`` accepts any certificate and says so once in the log.

Failures are :class:`MeterError`, one line naming the BMC (``https://host:port``, never
credentials) and what went wrong; every form of the password is scrubbed from it.
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import json
import logging
import math
import socket
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from src.components.carbon.record import DeviceInfo, SourceUnavailable
from src.components.carbon.secret import Secret
from src.components.carbon.sources.platform import MeterError, MeterReading, platform_device

METHOD = "redfish"
CHASSIS_COLLECTION = "/redfish/v1/Chassis"
# An iDRAC's Power resource (PSUs, voltages, redundancy, Oem) is 20-40 KiB; nothing we read is near this.
MAX_RESPONSE_BYTES = 512 * 1024
MAX_CHASSIS = 16  # members looked at in discovery; a blade enclosure lists more, the host's own come first
MAX_MESSAGE_CHARS = 400
_MAX_LINK_CHARS = 512
TLS_HINT = "set redfish_ca_file to the BMC's CA"
_NAME_MISMATCH = frozenset({62, 64})  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH

_log = logging.getLogger("tta.sources")


class _SecretLike(Protocol):
    def get_secret_value(self) -> str: ...


class _Failure(Exception):
    """A read failed. ``resource``: it says something about the resource read (404, not JSON, no
    reading), so discovery looks again next time and goes on to the next candidate now."""

    def __init__(self, text: str, *, resource: bool = False) -> None:
        super().__init__(text)
        self.text = text
        self.resource = resource


@dataclass(frozen=True, slots=True)
class RedfishTarget:
    """The resource a meter reads: ``kind`` is "environment" (EnvironmentMetrics) or "power" (Power)."""

    kind: str
    path: str

    @property
    def property(self) -> str:
        return "PowerWatts.Reading" if self.kind == "environment" else "PowerControl[0].PowerConsumedWatts"


class _DeadlineSocket(ssl.SSLSocket):
    """An SSLSocket whose every send and receive waits only until ``deadline`` (time.monotonic()).

    A socket timeout alone bounds each ``recv``, not the answer: a server trickling a byte a
    second would keep a read alive for as long as it likes. http.client reads through
    ``makefile()``, which calls ``recv_into``; it writes with ``sendall``, which calls ``send``.
    """

    deadline: float = math.inf

    def _arm(self) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("deadline passed")
        self.settimeout(left)

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        self._arm()
        return super().recv(buflen, flags)

    def recv_into(self, buffer: Any, nbytes: int | None = None, flags: int = 0) -> int:
        self._arm()
        return super().recv_into(buffer, nbytes, flags)

    def send(self, data: Any, flags: int = 0) -> int:
        self._arm()
        return super().send(data, flags)


class _Connection(http.client.HTTPConnection):
    """One kept-alive HTTPS connection to the BMC, opened within ``deadline``."""

    default_port = 443

    def __init__(self, host: str, port: int, context: ssl.SSLContext, meter: RedfishMeter) -> None:
        super().__init__(host, port)
        self._ssl_context = context
        self._meter = meter
        self.deadline = math.inf
        self._tls: _DeadlineSocket | None = None  # the last TLS socket (http.client forgets it on Connection: close)

    def remember_session(self) -> None:
        """Keep the TLS session for the next connection to resume, once the answer's headers are in
        (a TLS 1.3 ticket arrives after the handshake) and before the socket closes."""
        tls, self._tls = self._tls, None
        if tls is not None:
            try:
                self._meter._tls_session = tls.session
            except (OSError, ValueError, AttributeError):  # closed already: the next connection does a full handshake
                pass

    def connect(self) -> None:
        deadline = self.deadline
        addresses = self._meter._addresses(deadline)
        last: OSError | None = None
        raw: socket.socket | None = None
        for family, address in addresses:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("deadline passed")
            candidate = socket.socket(family, socket.SOCK_STREAM)
            try:
                candidate.settimeout(left)
                candidate.connect(address)
            except OSError as exc:
                candidate.close()
                if isinstance(exc, TimeoutError):
                    raise
                last = exc
                continue
            raw = candidate
            break
        if raw is None:
            raise last or OSError("no address")
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("deadline passed")
            # The handshake's total is bounded by the socket timeout (ssl, Python 3.5+).
            raw.settimeout(left)
            session = self._meter._tls_session
            tls = self._ssl_context.wrap_socket(raw, server_hostname=self.host, session=session)
        except BaseException:
            raw.close()
            raise
        assert isinstance(tls, _DeadlineSocket)
        tls.deadline = deadline
        self.sock = self._tls = tls
        self._meter.connections += 1
        if tls.session_reused:
            self._meter.resumed += 1


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _describe(value: Any) -> str:
    """A JSON value, for a message: short, and never the whole of a long string."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"the string {value[:24]!r}{'...' if len(value) > 24 else ''}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Failure(f"{where} is {_describe(value)}, not a number", resource=True)
    try:
        return float(value)
    except OverflowError:  # an integer beyond float: PlatformSource refuses it as absurd
        return math.inf


def _link(value: Any) -> str | None:
    """The path of a Redfish link (``{"@odata.id": "/redfish/v1/..."}``), or None when absent or odd.

    Only paths on this service: a link is sent to the same connection, never to another host."""
    ref = value.get("@odata.id") if isinstance(value, dict) else None
    if not isinstance(ref, str):
        return None
    path = ref.split("#", 1)[0]
    if (not path.startswith("/redfish/") or len(path) > _MAX_LINK_CHARS or not path.isascii()
            or not path.isprintable() or " " in path):
        return None
    return path


def _shown(path: str) -> str:
    """A path for a message (BMC-supplied: one line, bounded)."""
    return path if len(path) <= 120 else path[:117] + "..."


class RedfishMeter:
    """The chassis power of one BMC over Redfish (see the module docstring)."""

    method = METHOD
    blocking_ok = False  # network: read on PlatformSource's background thread
    default_period_s = 5.0

    def __init__(self, url: str, user: str = "", password: _SecretLike | None = None, *,
                 ca_file: Path | None = None, verify_tls: bool = True) -> None:
        self.host, self.port, self.url = _parse_url(url)
        if ":" in user:
            raise SourceUnavailable("redfish_user must not contain ':' (HTTP basic auth separates it from the password "
                                    "with one)")
        if any(not c.isprintable() for c in user):
            raise SourceUnavailable("redfish_user contains a control character")
        self.user = user
        pw = password.get_secret_value() if password is not None else ""
        self._secrets: tuple[Secret, ...] = ()
        self._authorization: Secret | None = None  # a Secret too: a dump of the meter's attributes shows asterisks
        if user or pw:
            token = base64.b64encode(f"{user}:{pw}".encode("utf-8")).decode("ascii")
            self._authorization = Secret(f"Basic {token}")
            self._secrets = tuple(s for s in (Secret(pw), Secret(token)) if s.get_secret_value())
        host_port = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        self.device: DeviceInfo = platform_device(host_port)
        self._context = self._tls_context(ca_file, verify_tls)
        self._lock = threading.Lock()  # one read at a time; close() does not wait for it
        self._conn: _Connection | None = None
        self._tls_session: ssl.SSLSession | None = None
        self._target: RedfishTarget | None = None
        self._announced: RedfishTarget | None = None
        self._resolver: threading.Thread | None = None
        self._resolved: list[tuple[int, tuple]] | None = None
        self._timeout_s = 0.0
        self.connections = 0  # TCP+TLS connections opened (one while the BMC keeps it alive)
        self.resumed = 0  # of those, TLS sessions resumed (no full handshake)

    def __repr__(self) -> str:
        return f"RedfishMeter({self.url!r}, user={self.user!r})"

    @property
    def target(self) -> RedfishTarget | None:
        """The resource read, once discovered."""
        return self._target

    # ------------------------------------------------------------------ PowerMeter
    def read(self, timeout_s: float) -> MeterReading:
        """One reading of the chassis power, discovering the resource first when needed."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            self._timeout_s = timeout_s
            try:
                if self._target is None:
                    target, watts = self._discover(deadline)
                    self._target = target
                    if target != self._announced:
                        _log.info("platform meter redfish %s: reading %s %s", self.url, target.path, target.property)
                        self._announced = target
                else:
                    watts = self._read_target(self._target, deadline)
            except _Failure as failure:
                if failure.resource:
                    self._target = None
                raise MeterError(self._line(failure.text)) from None
            except Exception as exc:  # a bug must not end PlatformSource's thread, nor print a traceback
                self._drop()
                raise MeterError(self._line(f"unexpected {type(exc).__name__}: {exc}")) from None
        return MeterReading(watts=watts)

    def close(self) -> None:
        """Close the kept-alive connection (a read in flight on another thread fails at once)."""
        self._drop()

    # ------------------------------------------------------------------ discovery and reading
    def _discover(self, deadline: float) -> tuple[RedfishTarget, float]:
        collection = self._get(CHASSIS_COLLECTION, deadline)
        members = collection.get("Members")
        if not isinstance(members, list):
            raise _Failure(f"{CHASSIS_COLLECTION} has no Members list: not a Redfish chassis collection")
        first: _Failure | None = None
        looked = 0
        for member in members[:MAX_CHASSIS]:
            path = _link(member)
            if path is None:
                continue
            looked += 1
            try:
                chassis = self._get(path, deadline)
            except _Failure as failure:
                if not failure.resource:
                    raise  # unreachable, timeout, credentials: no other chassis will do better
                first = first or failure
                continue
            for kind, key in (("environment", "EnvironmentMetrics"), ("power", "Power")):
                link = _link(chassis.get(key))
                if link is None:
                    continue
                target = RedfishTarget(kind, link)
                try:
                    return target, self._read_target(target, deadline)
                except _Failure as failure:
                    if not failure.resource:
                        raise
                    first = first or failure
        if first is not None:
            # The first candidate's own problem, worded as a read of it would be: the same failure gives the
            # same line whether it shows on a cached read or in discovery (PlatformSource logs each change).
            raise _Failure(first.text, resource=True)
        raise _Failure(f"no power resource: none of the {looked} chassis under {CHASSIS_COLLECTION} links a Power "
                       f"or EnvironmentMetrics resource", resource=True)

    def _read_target(self, target: RedfishTarget, deadline: float) -> float:
        data = self._get(target.path, deadline)
        where = _shown(target.path)
        if target.kind == "environment":
            watts = data.get("PowerWatts")
            if not isinstance(watts, dict) or "Reading" not in watts:
                raise _Failure(f"{where} has no PowerWatts.Reading", resource=True)
            return _number(watts["Reading"], f"{where} PowerWatts.Reading")
        controls = data.get("PowerControl")
        if not isinstance(controls, list) or not controls or not isinstance(controls[0], dict):
            raise _Failure(f"{where} has no PowerControl entry", resource=True)
        if "PowerConsumedWatts" not in controls[0]:
            raise _Failure(f"{where} has no PowerControl[0].PowerConsumedWatts", resource=True)
        return _number(controls[0]["PowerConsumedWatts"], f"{where} PowerControl[0].PowerConsumedWatts")

    # ------------------------------------------------------------------ HTTP
    def _get(self, path: str, deadline: float) -> dict[str, Any]:
        """GET ``path``: its JSON object, or _Failure. A kept-alive connection the BMC closed in
        the meantime is retried once on a fresh one (that is not a failure of the BMC)."""
        for attempt in range(2):
            conn = self._conn
            if conn is None:
                conn = self._conn = _Connection(self.host, self.port, self._context, self)
            reused = conn.sock is not None
            try:
                status, body = self._exchange(conn, path, deadline)
            except _Failure:
                raise
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError, ssl.SSLEOFError,
                    ssl.SSLZeroReturnError) as exc:
                self._drop()
                if reused and attempt == 0:
                    continue
                raise _Failure(self._transport(exc)) from None
            except Exception as exc:
                self._drop()
                raise _Failure(self._transport(exc)) from None
            return self._decode(path, status, body)
        raise AssertionError("unreachable")  # the loop returns or raises

    def _exchange(self, conn: _Connection, path: str, deadline: float) -> tuple[int, bytes]:
        conn.deadline = deadline
        if isinstance(conn.sock, _DeadlineSocket):
            conn.sock.deadline = deadline
        headers = {"Accept": "application/json", "OData-Version": "4.0", "User-Agent": "tta-staging-carbon"}
        if self._authorization is not None:
            headers["Authorization"] = self._authorization.get_secret_value()
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        conn.remember_session()
        if resp.status != 200:
            self._drop()  # an error's body is not wanted; a fresh connection next time costs little
            return resp.status, b""
        if resp.length is not None and resp.length > MAX_RESPONSE_BYTES:
            self._drop()
            raise _Failure(f"{_shown(path)}: answer of {resp.length} bytes is over the {MAX_RESPONSE_BYTES} byte "
                           "limit", resource=True)
        body = resp.read(MAX_RESPONSE_BYTES + 1)
        if len(body) > MAX_RESPONSE_BYTES:
            self._drop()
            raise _Failure(f"{_shown(path)}: answer is over the {MAX_RESPONSE_BYTES} byte limit", resource=True)
        if not resp.isclosed():  # a body longer than announced, or the like: do not reuse the connection
            self._drop()
        # (If the BMC said "Connection: close", http.client opens a new connection, through connect(), next time.)
        return 200, body

    def _decode(self, path: str, status: int, body: bytes) -> dict[str, Any]:
        where = _shown(path)
        if status in (401, 403):
            # Not per path: a refusal in discovery and one on the cached resource read the same.
            what = "unauthorized" if status == 401 else "forbidden"
            raise _Failure(f"HTTP {status} ({what}): wrong redfish_user or redfish_password, or the user may "
                               "not read chassis power")
        if status == 404:
            raise _Failure(f"{where}: HTTP 404 (no such resource; no power resource there)", resource=True)
        if 300 <= status < 400:
            raise _Failure(f"{where}: HTTP {status} redirect, not followed")
        if status != 200:
            raise _Failure(f"{where}: HTTP {status}")
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: "[[[[...": nesting deeper than the parser goes
            raise _Failure(f"{where}: answer is not JSON", resource=True) from None
        if not isinstance(data, dict):
            raise _Failure(f"{where}: answer is not a JSON object", resource=True)
        return data

    def _transport(self, exc: BaseException) -> str:
        """One line for a failure below HTTP. Not per path: an unreachable BMC reads the same
        whichever request met it."""
        if isinstance(exc, _Failure):
            return exc.text
        if isinstance(exc, TimeoutError):
            return f"no complete answer within {self._timeout_s:g} s"
        if isinstance(exc, ssl.SSLCertVerificationError):
            detail = (exc.verify_message or str(exc.reason)).rstrip(".")
            if exc.verify_code in _NAME_MISMATCH:  # trusted, but issued for another name: a CA file will not help
                return f"TLS certificate verification failed ({detail}); redfish_url must name the BMC as its " \
                       "certificate does"
            return f"TLS certificate verification failed ({detail}); {TLS_HINT}"
        if isinstance(exc, ssl.SSLError):
            return f"TLS error: {exc.reason or type(exc).__name__}"
        if isinstance(exc, http.client.RemoteDisconnected):
            return "the BMC closed the connection without an answer"
        if isinstance(exc, http.client.HTTPException):
            return f"malformed HTTP answer ({type(exc).__name__})"
        if isinstance(exc, socket.gaierror):
            return f"cannot resolve {self.host}: {exc.strerror or exc}"
        if isinstance(exc, ConnectionRefusedError):
            return "cannot connect: connection refused"
        if isinstance(exc, OSError):
            return f"cannot connect: {(exc.strerror or type(exc).__name__).lower()}"
        return f"{type(exc).__name__}: {exc}"

    def _addresses(self, deadline: float) -> list[tuple[int, tuple]]:
        """The BMC's addresses. A host name is resolved on a helper thread joined with the deadline
        (getaddrinfo cannot be interrupted); at most one resolution is ever in flight."""
        if _is_ip(self.host):
            family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            return [(family, (self.host, self.port))]
        if self._resolved is not None:
            return self._resolved
        stuck = self._resolver
        if stuck is not None and stuck.is_alive():
            raise TimeoutError("the previous name resolution is still unanswered")
        outcome: list[Any] = []

        def resolve() -> None:
            try:
                outcome.append(socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM))
            except BaseException as exc:  # handed to the reading thread below
                outcome.append(exc)

        worker = threading.Thread(target=resolve, name="redfish-resolve", daemon=True)
        self._resolver = worker
        worker.start()
        worker.join(max(0.0, deadline - time.monotonic()))
        if not outcome:
            raise TimeoutError("name resolution timed out")
        if isinstance(outcome[0], BaseException):
            raise outcome[0]
        found = [(family, address) for family, _, _, _, address in outcome[0]]
        if not found:
            raise socket.gaierror(socket.EAI_NONAME, "no address")
        self._resolved = found  # kept until a connection fails (a BMC's address rarely changes)
        return found

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        self._resolved = None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # closing a broken connection must not raise
                pass

    def _line(self, text: str) -> str:
        """``redfish https://host:port: <text>`` on one line, bounded, with no form of the password in it."""
        line = f"redfish {self.url}: {text}"
        for secret in self._secrets:
            line = secret.scrub(line)
        line = "".join(c if c.isprintable() else " " for c in line)
        for secret in self._secrets:  # again: flattening may have made a rendering whole
            line = secret.scrub(line)
        return line if len(line) <= MAX_MESSAGE_CHARS else line[:MAX_MESSAGE_CHARS - 3] + "..."

    # ------------------------------------------------------------------ TLS
    def _tls_context(self, ca_file: Path | None, verify_tls: bool) -> ssl.SSLContext:
        if verify_tls:
            try:
                # With a cafile, only that CA is trusted (not the system's): a BMC's own CA vouches for BMCs only.
                context = ssl.create_default_context(cafile=str(ca_file) if ca_file is not None else None)
                if ca_file is not None:
                    # A BMC's factory certificate is often self-signed and not RFC 5280-strict (no key
                    # identifiers, CA:FALSE on its own issuer); Python 3.13 made strict checks the default.
                    # The chain and the name are still verified, against the one CA the operator named.
                    context.verify_flags &= ~ssl.VERIFY_X509_STRICT
            except (OSError, ssl.SSLError, ValueError) as exc:
                detail = (exc.reason if isinstance(exc, ssl.SSLError) else getattr(exc, "strerror", None)) \
                    or type(exc).__name__
                name = str(ca_file) if str(ca_file).isprintable() else repr(str(ca_file))
                raise SourceUnavailable(f"redfish_ca_file {name}: cannot load it as PEM CA certificates "
                                        f"({detail})") from None
        else:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            _log.warning("platform meter redfish %s: redfish_verify_tls is false: the BMC's certificate is not "
                         "checked, so anyone on the network path to it can read the password%s", self.url,
                         " (redfish_ca_file is ignored)" if ca_file is not None else "")
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.sslsocket_class = _DeadlineSocket
        return context


def _parse_url(url: str) -> tuple[str, int, str]:
    """``https://host[:port]`` → (host, port, "https://host:port"). SourceUnavailable, one line and
    never echoing the URL's userinfo, for anything else."""
    text = url.strip()
    if not text:
        raise SourceUnavailable("platform_meter is redfish but redfish_url is not set (https://bmc-host)")
    try:
        parts = urllib.parse.urlsplit(text)
        port = parts.port
    except ValueError:
        raise SourceUnavailable("redfish_url is not a URL of the form https://host[:port]") from None
    if "@" in parts.netloc:
        raise SourceUnavailable("redfish_url must not carry credentials; set redfish_user and redfish_password "
                                "(CARBON_REDFISH_PASSWORD in the environment file)")
    shown = text if text.isprintable() and len(text) <= 200 else repr(text[:200])
    if parts.scheme.lower() != "https":
        raise SourceUnavailable(f"redfish_url {shown}: must be https:// (basic auth over plain HTTP would send the "
                                "password in clear)")
    if parts.path not in ("", "/") or parts.query or parts.fragment or not parts.hostname:
        raise SourceUnavailable(f"redfish_url {shown}: give only https://host[:port]; the service root and its "
                                "chassis are found from there")
    host = parts.hostname
    port = port or 443
    base = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
    return host, port, base
