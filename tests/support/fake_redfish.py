"""A BMC's Redfish service for tests: a real HTTPS server on 127.0.0.1, a certificate made at test time.

Why not sushy-tools: its emulator (openstack/sushy-tools, sushy_tools/emulator/main.py)
serves Chassis and Chassis/{id}/Thermal but no Power, PowerSubsystem or EnvironmentMetrics,
and it needs flask plus a libvirt or OpenStack backend for its systems. This one serves the
few resources a platform meter reads, both layouts, with the power a programmed function of
time and switches for every way a BMC fails.

Tree (``layout``): the ServiceRoot ``/redfish/v1/`` (no auth, as on real BMCs), the Chassis
collection with the ``chassis`` ids given (only ``powered`` carries power links; the others are
backplanes, as on a Dell), and for the powered chassis:

- ``"power"``: ``Power`` with ``PowerControl[0].PowerConsumedWatts`` (and a second, CPU-only
  entry that must not be added), the classic resource;
- ``"environment"``: ``PowerSubsystem`` and ``EnvironmentMetrics`` with ``PowerWatts.Reading``
  (DMTF 2020.4);
- ``"both"``: all of them (new firmware that keeps the deprecated resource);
- ``"none"``: no power resource at all.

Power: ``profile`` (tests/fixtures/power_profile.py: steps and ramps in wall-clock time) gives the
watts served at the time of each request; with ``average_s`` > 0 the reading is the exact mean
over the trailing window, as a BMC that averages reports. ``served`` lists (wall time, watts)
of every reading served.

Faults, set between requests (they apply to the power resources, Power and EnvironmentMetrics):
``fault`` = "http_500", "malformed_json", "null_reading", "string_reading", "missing_reading",
"huge" (a 1 MiB answer), "trickle" (the whole answer at ``trickle_bytes_per_s``, one byte at a
time), "slow" (``slow_s`` before a complete answer); ``override_watts`` replaces the reading (an
absurd -5 or 1e9); ``password`` is what the server accepts (wrong credentials: 401);
``stop()`` stops listening and drops every open connection, ``start()`` listens again on the
same port. ``keep_alive=False`` closes each connection after its answer; ``tls_tickets=False``
makes every new connection a full TLS handshake.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.fixtures.power_profile import PowerProfile

FAULTS = frozenset({"http_500", "malformed_json", "null_reading", "string_reading", "missing_reading", "huge",
                    "trickle", "slow"})
LAYOUTS = frozenset({"power", "environment", "both", "none"})


@dataclass(frozen=True)
class BmcCertificates:
    """A CA, a server certificate it signed for 127.0.0.1 and localhost, and an unrelated CA."""

    ca: Path  # the BMC's CA (what redfish_ca_file names)
    cert: Path
    key: Path
    other_ca: Path  # a CA that did not sign the server's certificate

    @classmethod
    def make(cls, directory: Path) -> BmcCertificates:
        """Generate them with Debian's openssl (EC P-256: fast to make, fast handshakes)."""
        directory.mkdir(parents=True, exist_ok=True)
        d = directory

        def openssl(*args: str) -> None:
            subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        for name in ("ca", "other-ca"):
            openssl("req", "-x509", *ec, "-days", "2", "-subj", f"/CN=Fake BMC {name}",
                    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                    "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.pem"))
        openssl("req", *ec, "-subj", "/CN=127.0.0.1", "-keyout", str(d / "bmc.key"), "-out", str(d / "bmc.csr"))
        (d / "bmc.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\n"
                                   "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
                                   "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n")
        openssl("x509", "-req", "-in", str(d / "bmc.csr"), "-CA", str(d / "ca.pem"), "-CAkey", str(d / "ca.key"),
                "-set_serial", str(int(time.time() * 1000)), "-days", "2", "-extfile", str(d / "bmc.ext"),
                "-out", str(d / "bmc.pem"))
        return cls(ca=d / "ca.pem", cert=d / "bmc.pem", key=d / "bmc.key", other_ca=d / "other-ca.pem")

    @classmethod
    def self_signed(cls, directory: Path, san: str = "IP:127.0.0.1") -> BmcCertificates:
        """A BMC's factory certificate: self-signed, CA:FALSE, naming only ``san``; its own ``ca``."""
        directory.mkdir(parents=True, exist_ok=True)
        cert, key = directory / "self-signed.pem", directory / "self-signed.key"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=bmc",
                        "-addext", f"subjectAltName={san}", "-addext", "basicConstraints=critical,CA:FALSE",
                        "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)
        return cls(ca=cert, cert=cert, key=key, other_ca=cert)


class _Server(ThreadingHTTPServer):
    """TLS per connection, in the connection's own thread: a client that never finishes its
    handshake holds that thread only, never the accept loop."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, port: int, fake: FakeRedfish) -> None:
        self.fake = fake
        super().__init__(("127.0.0.1", port), _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        fake = self.fake
        request.settimeout(5.0)
        try:
            tls = fake.tls_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):  # the client refused our certificate, or went away
            return
        tls.settimeout(fake.idle_timeout_s)
        with fake._lock:
            fake._connections.add(tls)
            fake.connections_accepted += 1
        try:
            _Handler(tls, client_address, self)
        except Exception:  # a connection dropped by stop(), or a client that gave up mid-answer
            pass
        finally:
            with fake._lock:
                fake._connections.discard(tls)
            try:
                tls.close()
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # no tracebacks on stderr for connections the tests break on purpose


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as BMCs do
    server_version = "FakeBMC/1.0"
    server: _Server

    def do_GET(self) -> None:  # noqa: N802
        self.server.fake._answer(self)

    def log_message(self, *args: Any) -> None:
        pass


class FakeRedfish:
    """See the module docstring. A context manager: listening inside, stopped after."""

    def __init__(self, certs: BmcCertificates, profile: PowerProfile, *, user: str = "admin",
                 password: str = "secret", layout: str = "power", chassis: Sequence[str] = ("1",),
                 powered: str | None = None, average_s: float = 0.0, keep_alive: bool = True,
                 tls_tickets: bool = True, idle_timeout_s: float = 30.0) -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"layout {layout!r} is not one of {sorted(LAYOUTS)}")
        self.certs = certs
        self.profile = profile
        self.user = user
        self.password = password
        self.layout = layout
        self.chassis = tuple(chassis)
        self.powered = powered if powered is not None else self.chassis[-1]
        self.average_s = average_s
        self.keep_alive = keep_alive
        self.idle_timeout_s = idle_timeout_s
        self.fault: str | None = None
        self.override_watts: float | None = None
        self.trickle_bytes_per_s = 1.0
        self.slow_s = 2.0
        self.requests: list[tuple[float, str, int]] = []  # (wall time, path, status)
        self.served: list[tuple[float, float]] = []  # (wall time, watts) of every reading served
        self.connections_accepted = 0
        self.tls_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.tls_context.load_cert_chain(str(certs.cert), str(certs.key))
        if not tls_tickets:
            self.tls_context.num_tickets = 0  # TLS 1.3: no session tickets, so no resumption
            self.tls_context.options |= ssl.OP_NO_TICKET
        self._lock = threading.Lock()
        self._connections: set[ssl.SSLSocket] = set()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> FakeRedfish:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> FakeRedfish:
        """Listen (again, on the same port after a stop())."""
        if self._server is None:
            self._stopping.clear()
            self._server = _Server(self.port, self)
            self.port = self._server.server_address[1]
            self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True,
                                            name="fake-redfish")
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening (connections are refused) and drop every open connection: the BMC is gone."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        with self._lock:
            open_now = list(self._connections)
        for tls in open_now:
            try:
                socket.socket.shutdown(tls, socket.SHUT_RDWR)  # the plain socket's: no TLS state touched
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(5)

    def count(self, path: str) -> int:
        """Requests received for ``path``."""
        with self._lock:
            return sum(1 for _, p, _ in self.requests if p == path)

    # ------------------------------------------------------------------ power
    def watts_at(self, t: float) -> float:
        if self.override_watts is not None:
            return float(self.override_watts)
        if self.average_s > 0:
            return self.profile.energy_j(t - self.average_s, t) / self.average_s
        return self.profile.watts(t)

    # ------------------------------------------------------------------ the tree
    def _chassis_path(self, cid: str) -> str:
        return f"/redfish/v1/Chassis/{cid}"

    def _resource(self, path: str) -> tuple[int, Any] | None:
        """(status, JSON) for a resource that needs no power reading; None for the power resources."""
        root = "/redfish/v1"
        if path == root:
            return 200, {"@odata.id": "/redfish/v1/", "@odata.type": "#ServiceRoot.v1_15_0.ServiceRoot",
                         "Id": "RootService", "Name": "Root Service", "RedfishVersion": "1.17.0",
                         "Chassis": {"@odata.id": "/redfish/v1/Chassis"},
                         "SessionService": {"@odata.id": "/redfish/v1/SessionService"}}
        if path == f"{root}/Chassis":
            return 200, {"@odata.id": "/redfish/v1/Chassis", "@odata.type": "#ChassisCollection.ChassisCollection",
                         "Name": "Chassis Collection", "Members@odata.count": len(self.chassis),
                         "Members": [{"@odata.id": self._chassis_path(c)} for c in self.chassis]}
        for cid in self.chassis:
            base = self._chassis_path(cid)
            if path == base:
                body: dict[str, Any] = {
                    "@odata.id": base, "@odata.type": "#Chassis.v1_21_0.Chassis", "Id": cid,
                    "Name": "Computer System Chassis" if cid == self.powered else "Backplane",
                    "ChassisType": "RackMount" if cid == self.powered else "Enclosure",
                    "PowerState": "On", "Status": {"State": "Enabled", "Health": "OK"},
                    "Thermal": {"@odata.id": f"{base}/Thermal"}}
                if cid == self.powered:
                    if self.layout in ("power", "both"):
                        body["Power"] = {"@odata.id": f"{base}/Power"}
                    if self.layout in ("environment", "both"):
                        body["PowerSubsystem"] = {"@odata.id": f"{base}/PowerSubsystem"}
                        body["EnvironmentMetrics"] = {"@odata.id": f"{base}/EnvironmentMetrics"}
                else:
                    body["Links"] = {"ContainedBy": {"@odata.id": self._chassis_path(self.powered)}}
                return 200, body
            if cid == self.powered and path == f"{base}/PowerSubsystem" and self.layout in ("environment", "both"):
                return 200, {"@odata.id": path, "@odata.type": "#PowerSubsystem.v1_1_0.PowerSubsystem",
                             "Id": "PowerSubsystem", "Name": "Power Subsystem", "CapacityWatts": 1600,
                             "PowerSupplies": {"@odata.id": f"{path}/PowerSupplies"},
                             "Status": {"State": "Enabled", "Health": "OK"}}
        return None

    def _is_power(self, path: str) -> str | None:
        base = self._chassis_path(self.powered)
        if path == f"{base}/Power" and self.layout in ("power", "both"):
            return "power"
        if path == f"{base}/EnvironmentMetrics" and self.layout in ("environment", "both"):
            return "environment"
        return None

    def _power_body(self, kind: str, path: str, now: float) -> tuple[int, bytes, float | None]:
        """(status, body, watts served) for a power resource, faults applied."""
        fault = self.fault
        if fault == "http_500":
            return 500, _error_body("Base.1.8.InternalError", "The request failed due to an internal service error."), \
                None
        if fault == "huge":
            return 200, b'{"Padding": "' + b"x" * (1024 * 1024) + b'"}', None
        watts = self.watts_at(now)
        value: Any = watts
        if fault == "null_reading":
            value = None
        elif fault == "string_reading":
            value = "abc"
        if kind == "power":
            control: dict[str, Any] = {
                "@odata.id": f"{path}#/PowerControl/0", "MemberId": "0", "Name": "System Power Control",
                "PowerConsumedWatts": value, "PowerCapacityWatts": 1600,
                "PowerMetrics": {"IntervalInMin": 1, "MinConsumedWatts": 100, "MaxConsumedWatts": 400,
                                 "AverageConsumedWatts": 200},
                "Status": {"State": "Enabled", "Health": "OK"}}
            if fault == "missing_reading":
                del control["PowerConsumedWatts"]
            cpu = {"@odata.id": f"{path}#/PowerControl/1", "MemberId": "1", "Name": "CPU Sub-system Power",
                   "PowerConsumedWatts": 0.4 * watts if isinstance(value, float) else value}
            body: dict[str, Any] = {
                "@odata.id": path, "@odata.type": "#Power.v1_7_1.Power", "Id": "Power", "Name": "Power",
                "PowerControl": [control, cpu],
                "PowerSupplies": [{"@odata.id": f"{path}#/PowerSupplies/{i}", "MemberId": str(i),
                                   "Name": f"PS{i + 1}", "PowerCapacityWatts": 800, "LineInputVoltage": 230,
                                   "PowerInputWatts": watts / 2, "Status": {"State": "Enabled", "Health": "OK"}}
                                  for i in range(2)]}
        else:
            reading: dict[str, Any] = {"Reading": value,
                                       "DataSourceUri": f"{self._chassis_path(self.powered)}/Sensors/TotalPower"}
            if fault == "missing_reading":
                del reading["Reading"]
            body = {"@odata.id": path, "@odata.type": "#EnvironmentMetrics.v1_3_0.EnvironmentMetrics",
                    "Id": "EnvironmentMetrics", "Name": "Chassis Environment Metrics",
                    "TemperatureCelsius": {"Reading": 39}, "PowerWatts": reading}
        raw = json.dumps(body).encode()
        if fault == "malformed_json":
            raw = raw[: len(raw) // 2]  # cut mid-object, as a BMC whose web server died mid-answer
        served = watts if fault is None and isinstance(value, float) else None
        return 200, raw, served

    # ------------------------------------------------------------------ one request
    def _authorized(self, handler: _Handler) -> bool:
        want = "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        return handler.headers.get("Authorization", "") == want

    def _answer(self, h: _Handler) -> None:
        now = time.time()
        path = h.path.split("?", 1)[0]
        path = path.rstrip("/") or "/"
        served: float | None = None
        kind = self._is_power(path)
        if path in ("/redfish", "/redfish/v1"):  # the service root needs no credentials (DSP0266)
            status, raw = self._json(*(self._resource("/redfish/v1") if path == "/redfish/v1"
                                       else (200, {"v1": "/redfish/v1/"})))
        elif not self._authorized(h):
            status, raw = 401, _error_body("Base.1.8.NoValidSession", "There is no valid session established.")
        elif kind is not None:
            status, raw, served = self._power_body(kind, path, now)
        else:
            found = self._resource(path)
            status, raw = self._json(*found) if found is not None else (
                404, _error_body("Base.1.8.ResourceMissingAtURI", f"The resource at the URI {path} was not found."))
        with self._lock:
            self.requests.append((now, path, status))
            if served is not None:
                self.served.append((now, served))
        head = [f"HTTP/1.1 {status} {h.responses.get(status, ('',))[0]}", "Content-Type: application/json",
                "OData-Version: 4.0", f"Content-Length: {len(raw)}"]
        if status == 401:
            head.append('WWW-Authenticate: Basic realm="Redfish"')
        if not self.keep_alive:
            head.append("Connection: close")
            h.close_connection = True
        data = ("\r\n".join(head) + "\r\n\r\n").encode() + raw
        if kind is not None and self.fault == "trickle":
            for i in range(len(data)):
                if self._stopping.wait(1.0 / self.trickle_bytes_per_s):
                    break
                h.wfile.write(data[i:i + 1])  # raises once the client has given up: the handler ends
            h.close_connection = True
            return
        if kind is not None and self.fault == "slow":
            self._stopping.wait(self.slow_s)
        h.wfile.write(data)

    @staticmethod
    def _json(status: int, body: Any) -> tuple[int, bytes]:
        return status, json.dumps(body).encode()


def _error_body(message_id: str, message: str) -> bytes:
    return json.dumps({"error": {"code": message_id, "message": message,
                                 "@Message.ExtendedInfo": [{"MessageId": message_id, "Message": message}]}}).encode()


def silent_listener() -> tuple[socket.socket, int]:
    """A TCP port that accepts connections (the kernel's backlog) and never says a word: a TLS
    handshake against it waits forever unless the client has a deadline."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    return sock, sock.getsockname()[1]
