"""A BMC on 127.0.0.1 that answers DCMI Get Power Reading over real RMCP+ (UDP), for tests.

Built on pyghmi's ``pyghmi.ipmi.bmc.Bmc``, the server class virtualbmc builds on. That class
speaks RMCP+ (channel auth capabilities, cipher suites, open session, RAKP 1-4 with cipher
suite 3, session privilege, close session) and a few chassis commands, but not DCMI: every
netfn 0x2C request gets completion code 0xC1 ("invalid command"). :class:`_DcmiBmc` adds
DCMI Get Power Reading (netfn 0x2C, cmd 0x02, group extension 0xDC) with the DCMI 1.5
response layout (completion code; 0xDC; current, minimum, maximum, average watts as 16-bit
little-endian; IPMI timestamp u32; statistics reporting period in ms u32; power reading
state, bit 6 = measurement active).

Power follows a :class:`~tests.fixtures.power_profile.PowerProfile`: piecewise linear in wall-clock time (steps and ramps),
so a test computes the exact programmed energy over any window, e.g. over a record's
[interval_start, interval_end], which are wall-clock times. "Current power" is the profile at
the instant the request is handled; "average" is the exact mean over the last
``sample_ms``; minimum and maximum are over that window too.

Failure modes a test can switch at any time (:meth:`FakeBmc.set`): ``silent`` (no packet
answered: an unreachable BMC), ``delay_s`` (the DCMI answer comes that late), a changed
``password`` (ipmitool then finds RAKP 2's HMAC invalid, as with a real BMC), an unknown user
(RAKP 2 with status "unauthorized name", what real BMCs send; pyghmi itself stays silent),
``watts_override`` (a fixed wire value for all four figures: 0 or 65535),
``active=False`` ("power measurement not active"), ``unsupported`` (DCMI answered with 0xC1).

The BMC runs in its own process (``python -m tests.support.fake_bmc``): pyghmi keeps its
sockets, sessions and IO thread in module and class globals, so several BMCs or a clean stop
are only possible one process each. The parent talks to it over stdin/stdout, one JSON object
a line; closing stdin (or :meth:`FakeBmc.stop`) ends it.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.fixtures.power_profile import PowerProfile

REPO = Path(__file__).resolve().parents[2]

__all__ = ["FakeBmc", "PowerProfile"]

DCMI_NETFN = 0x2C
DCMI_GET_POWER_READING = 0x02
DCMI_GROUP = 0xDC
STATE_ACTIVE = 0x40  # power reading state, bit 6: "power measurement active"
NO_READING = 0xFFFF  # the largest figure the wire can carry


# --------------------------------------------------------------------------- the BMC (child process)
@dataclass
class _State:
    """What the BMC answers; the control thread changes it, the IO loop reads it."""

    profile: PowerProfile
    users: dict[str, str]
    sample_ms: int = 1000
    silent: bool = False
    delay_s: float = 0.0
    watts_override: int | None = None
    active: bool = True
    unsupported: bool = False
    reads: int = 0  # DCMI Get Power Reading requests answered
    sessions: int = 0  # RAKP 1 messages seen (one per ipmitool run that gets that far)
    last: dict[str, Any] = field(default_factory=dict)  # the last answer: t and the four figures
    lock: threading.Lock = field(default_factory=threading.Lock)


def _serve(config: dict[str, Any]) -> None:
    """The child: bind, report the port, answer until stdin closes."""
    import pyghmi.ipmi.bmc as bmc
    import pyghmi.ipmi.private.constants as constants
    import pyghmi.ipmi.private.serversession as serversession
    import pyghmi.ipmi.private.session as session

    state = _State(PowerProfile.from_json(config["profile"]), dict(config["users"]),
                   sample_ms=int(config.get("sample_ms", 1000)))

    # pyghmi wakes its IO thread with a datagram sent to itself at ``myself``, which it
    # guesses as an IPv6 loopback; our socket is IPv4 on 127.0.0.1, so say so first.
    session.myself = "127.0.0.1"

    real_sendto = session._io_sendto

    def sendto(sock: Any, packet: Any, sockaddr: Any) -> None:
        # Every answer (sessionless and in-session) leaves through here: silence is one switch.
        if len(packet) >= 4 and state.silent:
            return
        real_sendto(sock, packet, sockaddr)

    session._io_sendto = sendto

    class _ServerSession(serversession.ServerSession):
        def _got_rakp1(self, data: Any) -> None:
            with state.lock:
                state.sessions += 1
            name = bytes(data[28:28 + data[27]]).decode("utf-8", "replace")
            if data[27] and self.authdata.get(name) is None:
                # A real BMC answers an unknown user with RAKP 2 status 0x0D "unauthorized
                # name"; pyghmi drops the message, which would look like a dead BMC.
                self.send_payload(bytearray([data[0], 0x0D, 0, 0]) + self.clientsessionid,
                                  constants.payload_types["rakp2"], retry=False)
                return
            super()._got_rakp1(data)

    # IpmiServer.sessionless_data creates sessions by this module-level name.
    serversession.ServerSession = _ServerSession

    class _DcmiBmc(bmc.Bmc):
        def handle_raw_request(self, request: dict[str, Any], sess: Any) -> None:
            if request["netfn"] == DCMI_NETFN and request["command"] == DCMI_GET_POWER_READING:
                self.power_reading(list(request["data"]), sess)
                return
            super().handle_raw_request(request, sess)

        def power_reading(self, data: list[int], sess: Any) -> None:
            with state.lock:
                unsupported, delay = state.unsupported, state.delay_s
            if unsupported:
                sess.send_ipmi_response(code=0xC1)  # invalid command: a BMC without DCMI power
                return
            if not data or data[0] != DCMI_GROUP:
                sess.send_ipmi_response(code=0xCC)  # invalid data field in request
                return
            if len(data) > 1 and data[1] != 0x01:
                sess.send_ipmi_response(code=0x80)  # enhanced statistics (mode 2): not supported here
                return
            deadline = time.monotonic() + delay
            while time.monotonic() < deadline:  # a slow BMC; a test may cut the delay short
                time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
                with state.lock:
                    if state.delay_s < delay:
                        break
            now = time.time()
            with state.lock:
                window = state.sample_ms / 1000.0
                current = state.profile.watts(now)
                average = state.profile.energy_j(now - window, now) / window
                low, high = state.profile.extremes(now - window, now)
                figures = [current, low, high, average]
                if state.watts_override is not None:
                    figures = [state.watts_override] * 4
                wire = [max(0, min(NO_READING, round(w))) for w in figures]
                flags = STATE_ACTIVE if state.active else 0
                state.reads += 1
                state.last = {"t": now, "current": wire[0], "minimum": wire[1], "maximum": wire[2],
                              "average": wire[3], "exact_current": current, "exact_average": average}
                sample_ms = state.sample_ms
            payload = struct.pack("<B4HIIB", DCMI_GROUP, *wire, int(now) & 0xFFFFFFFF, sample_ms, flags)
            sess.send_ipmi_response(data=list(payload))

    server = _DcmiBmc(state.users, port=0, address="127.0.0.1")
    # Sessions are filed under the server's port; with port 0 that is the one the OS chose.
    server.port = server.serversocket.getsockname()[1]
    stop = threading.Event()

    def control() -> None:
        for line in sys.stdin:
            try:
                reply = _control(state, json.loads(line))
            except Exception as exc:  # a test's mistake: say so, keep serving
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            sys.stdout.write(json.dumps(reply) + "\n")
            sys.stdout.flush()
        stop.set()

    threading.Thread(target=control, name="fake-bmc-control", daemon=True).start()
    sys.stdout.write(json.dumps({"port": server.port}) + "\n")
    sys.stdout.flush()
    while not stop.is_set():
        session.Session.wait_for_rsp(timeout=0.2)
    os._exit(0)  # pyghmi's IO thread never ends by itself


_SETTABLE = {"silent": bool, "delay_s": float, "active": bool, "unsupported": bool, "sample_ms": int}


def _control(state: _State, msg: dict[str, Any]) -> dict[str, Any]:
    with state.lock:
        if "profile" in msg:
            state.profile = PowerProfile.from_json(msg["profile"])
        if "users" in msg:
            state.users.clear()  # the same dict pyghmi looks passwords up in
            state.users.update(msg["users"])
        if "watts_override" in msg:
            value = msg["watts_override"]
            state.watts_override = None if value is None else int(value)
        for key, kind in _SETTABLE.items():
            if key in msg:
                setattr(state, key, kind(msg[key]))
        return {"reads": state.reads, "sessions": state.sessions, "last": dict(state.last)}


# --------------------------------------------------------------------------- the handle (test process)
class FakeBmc:
    """Start with ``with FakeBmc(profile) as bmc:``; ``bmc.port`` is its UDP port on 127.0.0.1."""

    host = "127.0.0.1"

    def __init__(self, profile: PowerProfile, *, user: str = "admin", password: str = "bmc-secret",
                 sample_ms: int = 1000) -> None:
        self.profile = profile
        self.user = user
        self.password = password
        self.sample_ms = sample_ms
        self.port = 0
        self._proc: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._call_lock = threading.Lock()

    def __enter__(self) -> FakeBmc:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 20.0) -> FakeBmc:
        self._proc = subprocess.Popen([sys.executable, "-m", "tests.support.fake_bmc"], cwd=REPO,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                      start_new_session=True)
        threading.Thread(target=self._reader, name="fake-bmc-reader", daemon=True).start()
        config = {"profile": self.profile.to_json(), "users": {self.user: self.password},
                  "sample_ms": self.sample_ms}
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps(config) + "\n")
        self._proc.stdin.flush()
        self.port = int(self._reply(timeout)["port"])
        return self

    def _reader(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _reply(self, timeout: float) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"fake BMC did not answer within {timeout}s") from None
        if line is None:
            raise AssertionError(f"fake BMC exited ({self._proc.poll() if self._proc else None})")
        reply = json.loads(line)
        if "error" in reply:
            raise AssertionError(f"fake BMC refused the command: {reply['error']}")
        return reply

    def _call(self, msg: dict[str, Any]) -> dict[str, Any]:
        with self._call_lock:
            assert self._proc is not None and self._proc.stdin is not None, "fake BMC not started"
            self._proc.stdin.write(json.dumps(msg) + "\n")
            self._proc.stdin.flush()
            return self._reply(10.0)

    def set(self, **changes: Any) -> dict[str, Any]:
        """Change what the BMC answers from now on: ``silent``, ``delay_s``, ``active``,
        ``unsupported``, ``sample_ms``, ``watts_override`` (None to clear), ``password``."""
        if "password" in changes:
            self.password = changes.pop("password")
            changes["users"] = {self.user: self.password}
        return self._call(changes)

    def set_profile(self, profile: PowerProfile) -> None:
        self.profile = profile
        self._call({"profile": profile.to_json()})

    def stats(self) -> dict[str, Any]:
        """``reads`` (DCMI answers so far), ``sessions`` (RAKP 1 seen), ``last`` (the last answer)."""
        return self._call({})

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            assert proc.stdin is not None
            proc.stdin.close()  # the child's control loop ends, then the child
            proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=5)


if __name__ == "__main__":
    _serve(json.loads(sys.stdin.readline()))
