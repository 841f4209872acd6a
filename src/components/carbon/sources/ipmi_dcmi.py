"""Platform power from the BMC's DCMI power reading, through Debian's ``ipmitool``.

What is asked. DCMI Get Power Reading: IPMI netfn 0x2C (DCMI group), command 0x02, request
data ``DC 01 00 00`` (group extension 0xDC, mode 0x01 "system power statistics"). The answer:
completion code, 0xDC, then as 16-bit little-endian watts the *current* power, the minimum,
the maximum and the *average* over the "statistics reporting time period", an IPMI timestamp,
that period in milliseconds (u32) and the power reading state (bit 6: measurement active).
``ipmitool dcmi power reading`` prints them as "Instantaneous power reading", "Minimum/Maximum
during sampling period", "Average power reading over sample period", "IPMI timestamp",
"Sampling period" (the period in whole seconds: ms / 1000, rounded down) and "Power reading
state is: activated|deactivated".

What the figure means. The whole machine's input power as the BMC measures it: on most
servers the sum of the PSUs' PMBus input readings (AC at the wall, so PSU losses, fans, disks,
NICs and the BMC itself are in), on some a hot-swap controller on the board (DC after the
PSUs). Whole watts; the BMC refreshes it every ~0.1-1 s, depending on the vendor.

Which figure is used, current or average. PlatformSource takes a reading at t as the power
since the previous reading (platform.py). The BMC's average is that exactly when its period S
equals the time p between our reads; the current power is the limit of a zero-length period.
Crediting the average over S to the last p seconds moves energy late by (S - p) / 2 on average,
crediting the current power moves it early by p / 2: so the average should be at least as
good while S <= 2p, and worse beyond. What BMCs report for S varies (published ipmitool and
FreeIPMI output): 0 (OpenBMC), 1 s, 5 s (AMI MegaRAC, Gigabyte), 300 s (HPE iLO) and weeks
(1,473,439,000 ms: statistics since the BMC's last reset). So: the average when 1 s <= S <= 2p and it lies
within the reported minimum and maximum; the current power otherwise (first reading, S shown
as 0 because it is under 1 s or not given, or S too long to say anything about the last
seconds). p is the time between this meter's good readings, smoothed, with 10 % allowed for
scheduling jitter: S = 2p is a common case (a 1 s window read every 0.5 s) and the choice must
not flip from read to read there, since switching between a leading and a lagging figure at a
power step counts part of the step twice or not at all.

Evidence (test_ipmi_dcmi.py::test_the_bmc_average_beats_the_instantaneous_figure_through_
platform_source: 30 random step/ramp profiles through the real PlatformSource, BMC-style reads
at a random phase to the boundaries, rms error per interval / of the run's total):

=================  ===========================  ===========================
reads, window,     average                      instantaneous
interval           per interval / run total     per interval / run total
=================  ===========================  ===========================
5 s, 5 s, 60 s     0.95 % / 0.21 %              2.73 % / 0.39 %
5 s, 5 s, 15 s     3.91 % / 0.72 %              7.12 % / 1.60 %
1 s, 1 s, 2 s      2.35 % / 0.36 %              4.00 % / 0.89 %
5 s, 10 s, 15 s    5.65 % / 0.49 %              7.12 % / 1.60 %
0.5 s, 1 s, 2 s    2.42 % / 0.25 %              2.13 % / 0.32 %
=================  ===========================  ===========================

The average wins wherever S = p and on run totals everywhere; at S = 2p it is about even per
interval. (What remains of its error is PlatformSource's boundary: the time since the last
reading is held at that reading's power, which for an averaging meter is the previous
period's; a reading landing just before each boundary makes the average nearly exact.)

Cost per read, measured (test_ipmi_dcmi.py prints it; 2-core AMD EPYC VM, fake BMC on
127.0.0.1, median of 15 reads, three runs): one ipmitool process per read, 25-36 ms wall and
21-31 ms CPU (ipmitool's user + system). Of that, ~16 ms is ipmitool parsing the 4.7 MB IANA enterprise-numbers registry
(/usr/share/misc/enterprise-numbers.txt), which it does on every start; the rest opens the
RMCP+ session (11 datagrams: auth capabilities, cipher suites, open session, RAKP 1-4, session
privilege, a VSO capabilities probe), sends the DCMI request and closes the session. Against a
real BMC the wall time is mostly the BMC's answer time (not measured here); the CPU time stays
about the same: ~0.5 % of one core at the default period (5 s), ~5 % at 0.5 s.

Why ipmitool and not RMCP+ written here. RMCP+ is a session protocol with RAKP key exchange,
HMAC-SHA1/SHA256 integrity, AES-CBC confidentiality, sequence numbers and per-vendor quirks
(cipher suite negotiation, privilege handling, retries); ipmitool is the client every BMC
vendor tests against, is packaged by Debian, and also reaches the local BMC in-band
(``/dev/ipmi0``) with the same command. The daemon gains no crypto code and no extra Python
dependency. The costs: a process per read (above) and output meant for people, parsed here
with anchored patterns and checked (state, sentinels) before a figure is believed.

Deadline. ``read(timeout_s)`` is a total deadline: ipmitool runs in its own process group and
the group is killed when the deadline passes. ``-N 1`` (the shortest retransmission interval
ipmitool takes) and ``-R 1`` (``-R 2`` when the deadline leaves room for a retransmission)
make ipmitool give up by itself on a dead BMC at about the same time instead of retrying for
tens of seconds. Killing a session half-open leaves a session slot on the BMC until its idle
timeout (about a minute); this only happens when the BMC is already too slow for the period.

Secrets. The password goes to ipmitool as ``IPMI_PASSWORD`` in its environment with ``-E``,
never on the command line (``/proc/<pid>/cmdline`` is world-readable); the child gets a
minimal environment, so an inherited ``IPMITOOL_PASSWORD`` (which ipmitool prefers) cannot
override it. Any text quoted from ipmitool's output is passed through ``Secret.scrub``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

from src.components.carbon.record import DeviceInfo
from src.components.carbon.secret import Secret
from src.components.carbon.sources.platform import MeterError, MeterReading, platform_device

METHOD = "ipmi_dcmi"
IPMITOOL = "ipmitool"
INSTALL_HINT = "install Debian's ipmitool (apt-get install ipmitool)"
NO_READING_W = 0xFFFF  # the top of the 16-bit field: what BMCs send when they have no figure
# The average counts only if its period is within this factor of the time between our reads,
AVERAGE_PERIOD_FACTOR = 2.0
# plus this much for scheduling jitter (so that S = 2p, a common case, does not flip read to read).
JITTER_ALLOWANCE = 0.10
# Weight of the newest interval in the smoothed time between reads.
_SMOOTHING = 0.25
_MAX_QUOTE = 160  # characters of ipmitool's output quoted in an error

_FIELD = r"\s*:\s*(\d+)\s+Watts"
_PATTERNS = {
    "current": re.compile(r"Instantaneous power reading" + _FIELD),
    "minimum": re.compile(r"Minimum during sampling period" + _FIELD),
    "maximum": re.compile(r"Maximum during sampling period" + _FIELD),
    "average": re.compile(r"Average power reading over sample period" + _FIELD),
}
_PERIOD = re.compile(r"Sampling period\s*:\s*(\d+)\s+Seconds")
_STATE = re.compile(r"Power reading state is\s*:\s*(\w+)")
_DCMI_FAILED = re.compile(r"DCMI request failed because:\s*(.+?)(?:\s*\(([0-9a-fA-F]+)\))?\s*$", re.MULTILINE)
# Completion codes that mean "this BMC has no DCMI power reading" (IPMI 2.0 table 5-2, DCMI 1.5).
_UNSUPPORTED_CODES = {"c1", "c2", "cc", "d5", "d6", "80", "81", "82", "83"}


@dataclass(frozen=True, slots=True)
class DcmiPowerReading:
    """One ``ipmitool dcmi power reading`` answer, as printed."""

    current_w: int
    minimum_w: int | None
    maximum_w: int | None
    average_w: int | None
    period_s: int | None  # the statistics period in whole seconds (0: under 1 s, or not given)
    active: bool  # "Power reading state is: activated"


def parse_power_reading(text: str) -> DcmiPowerReading:
    """The figures in ipmitool's output; ValueError (a short reason) when they are not all there.

    Patterns are searched in the whole text, not per line: ipmitool 1.8.19 prints the IPMI
    timestamp without a newline, so "Sampling period" shares its line."""
    current = _PATTERNS["current"].search(text)
    state = _STATE.search(text)
    if current is None:
        raise ValueError("no 'Instantaneous power reading: N Watts' in ipmitool's output")
    if state is None:
        raise ValueError("no 'Power reading state is:' in ipmitool's output")
    others = {k: (int(m.group(1)) if (m := p.search(text)) else None) for k, p in _PATTERNS.items() if k != "current"}
    period = _PERIOD.search(text)
    return DcmiPowerReading(
        current_w=int(current.group(1)),
        minimum_w=others["minimum"],
        maximum_w=others["maximum"],
        average_w=others["average"],
        period_s=int(period.group(1)) if period else None,
        active=state.group(1).lower() == "activated",
    )


def choose_watts(reading: DcmiPowerReading, read_every_s: float | None) -> tuple[int, str]:
    """The figure to use and which one it is ("average" or "current"), given the (smoothed) time
    between our reads, None before the second reading: see the module docstring."""
    avg, period = reading.average_w, reading.period_s
    if (avg is not None and period and read_every_s is not None and read_every_s > 0
            and period <= AVERAGE_PERIOD_FACTOR * read_every_s * (1 + JITTER_ALLOWANCE)
            and (reading.minimum_w is None or reading.minimum_w <= avg)
            and (reading.maximum_w is None or avg <= reading.maximum_w)):
        return avg, "average"
    return reading.current_w, "current"


class IpmiDcmiMeter:
    """The BMC's DCMI power reading through ipmitool (see the module docstring).

    ``host`` "" is the local BMC, in-band (``/dev/ipmi0``); otherwise IPMI over LAN+ to
    ``host:port`` as ``user`` with ``password``."""

    method = METHOD
    blocking_ok = False  # a subprocess and a network round trip: PlatformSource's thread reads it
    default_period_s = 5.0

    def __init__(self, host: str, user: str = "", password: Secret | None = None, *, port: int = 623,
                 ipmitool: str = IPMITOOL, clock: Callable[[], float] = time.monotonic) -> None:
        self.host = host
        self.port = port
        self.user = user
        self._password = password
        self._ipmitool = ipmitool
        self._clock = clock
        self.where = f"BMC {host}:{port}" if host else "local BMC"
        self.device: DeviceInfo = platform_device(self.where)
        self._last_good: float | None = None  # clock() of the previous good reading
        self._read_every_s: float | None = None  # smoothed time between good readings
        self.last_figure = ""  # "average" or "current": which one the last reading used
        self.last_wall_s = 0.0  # the last ipmitool run's wall time (for the docs' cost figures)

    # ------------------------------------------------------------------ the command
    def argv(self, executable: str, timeout_s: float) -> list[str]:
        """ipmitool's arguments (no secret among them: the password travels in the environment)."""
        if not self.host:
            return [executable, "dcmi", "power", "reading"]
        retries = 2 if timeout_s >= 4.0 else 1  # room for one retransmission after -N 1 s
        # -v: without it a wrong password reads only "Unable to establish IPMI v2 / RMCP+ session",
        # like a dead BMC; with it ipmitool also says "RAKP 2 HMAC is invalid" (same packets sent).
        args = [executable, "-v", "-I", "lanplus", "-H", self.host, "-p", str(self.port),
                "-N", "1", "-R", str(retries), "-L", "USER", "-E"]
        if self.user:
            args += ["-U", self.user]  # no -U: the BMC's null user
        return [*args, "dcmi", "power", "reading"]

    def _env(self) -> dict[str, str]:
        # Minimal on purpose: nothing inherited can change the password (IPMITOOL_PASSWORD wins
        # over IPMI_PASSWORD in ipmitool) or the language of the output we parse.
        env = {"PATH": os.environ.get("PATH", os.defpath), "LC_ALL": "C"}
        if self.host:
            env["IPMI_PASSWORD"] = self._password.get_secret_value() if self._password is not None else ""
        return env

    def _scrub(self, text: str) -> str:
        return self._password.scrub(text) if self._password is not None else text

    # ------------------------------------------------------------------ PowerMeter
    def read(self, timeout_s: float) -> MeterReading:
        started = self._clock()
        deadline = started + max(0.05, timeout_s)
        executable = shutil.which(self._ipmitool, path=os.environ.get("PATH", os.defpath))
        if executable is None:
            raise MeterError(f"{self.where}: {self._ipmitool} not found on PATH: {INSTALL_HINT}")
        try:
            proc = subprocess.Popen(self.argv(executable, timeout_s), stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self._env(),
                                    start_new_session=True)  # its own group: the deadline kills it all
        except OSError as exc:
            raise MeterError(f"{self.where}: cannot run {executable}: {exc.strerror or exc}") from None
        try:
            out, err = proc.communicate(timeout=max(0.0, deadline - self._clock()))
        except subprocess.TimeoutExpired:
            _kill(proc)
            self.last_wall_s = self._clock() - started
            raise MeterError(f"{self.where}: {_no_answer(timeout_s)}") from None
        finally:
            if proc.returncode is None:  # any other exception (KeyboardInterrupt): leave no child
                _kill(proc)
        now = self._clock()
        self.last_wall_s = now - started
        text = (out + b"\n" + err).decode("utf-8", "replace")
        reading = self._interpret(text, proc.returncode, timeout_s)
        every = self._read_every_s
        if self._last_good is not None:
            since = now - self._last_good
            every = since if every is None else every + _SMOOTHING * (since - every)
        watts, self.last_figure = choose_watts(reading, every)
        if watts == NO_READING_W:
            raise MeterError(f"{self.where}: the BMC reports {NO_READING_W} W, the 'no reading' value; ignored")
        if watts == 0:
            raise MeterError(f"{self.where}: the BMC reports 0 W while this machine runs (no measurement); ignored")
        self._last_good, self._read_every_s = now, every
        return MeterReading(watts=float(watts))

    def close(self) -> None:
        """Nothing held: each read is one ipmitool session, closed by ipmitool."""

    # ------------------------------------------------------------------ errors
    def _interpret(self, text: str, returncode: int, timeout_s: float) -> DcmiPowerReading:
        """The reading in ipmitool's output, or a one-line MeterError saying what went wrong."""
        failed = _DCMI_FAILED.search(text)
        if failed:
            why, code = failed.group(1).strip(), (failed.group(2) or "").lower()
            if "privilege" in why.lower() or code == "d4":
                raise MeterError(f"{self.where}: the IPMI user's privilege is too low for DCMI Get Power Reading "
                                 f"(asked for USER): {self._quote(why)}")
            if code in _UNSUPPORTED_CODES:
                raise MeterError(f"{self.where}: DCMI power reading unsupported by this BMC "
                                 f"({self._quote(why)}, completion code 0x{code})")
            raise MeterError(f"{self.where}: DCMI power reading failed: {self._quote(why)}")
        try:
            reading = parse_power_reading(text)
        except ValueError as exc:
            raise MeterError(f"{self.where}: {self._failure(text, returncode, str(exc), timeout_s)}") from None
        if not reading.active:
            raise MeterError(f"{self.where}: power measurement not active "
                             f"(the BMC says 'Power reading state is: deactivated')")
        return reading

    def _failure(self, text: str, returncode: int, parse_error: str, timeout_s: float) -> str:
        """What ipmitool's output says went wrong when it has no reading in it."""
        low = text.lower()
        # RAKP 2's HMAC is keyed by the password: a wrong one fails here, an unknown user gets
        # status "unauthorized name" (IPMI 2.0 table 13-15).
        if "rakp 2 hmac is invalid" in low or "unauthorized name" in low:
            return "wrong IPMI user name or password (the BMC refused the RMCP+ session)"
        if "could not open device" in low:
            return ("cannot open the IPMI device /dev/ipmi0 (load the ipmi_si and ipmi_devintf kernel modules; "
                    "the service user needs read-write access to /dev/ipmi0)")
        if "insufficient privilege" in low or "unauthorized role" in low or "set session privilege level" in low:
            return "the IPMI user's privilege is too low (the meter asks for a USER session)"
        if "insufficient resources" in low:
            return ("the BMC has no free session (insufficient resources to create a session); it frees "
                    "abandoned ones after its idle timeout")
        if "indicates an error" in low:  # another RMCP+ status code: quote it
            return f"the BMC refused the RMCP+ session: {self._quote(_line_with(text, 'indicates an error'))}"
        if ("unable to establish" in low or "get auth capabilities error" in low
                or "no response from remote controller" in low or "authentication capabilities" in low):
            # The same words as a killed run: one failure, one log line, whoever gave up first.
            return _no_answer(timeout_s)
        if "address lookup" in low or "name or service not known" in low or "no hostname" in low:
            return f"cannot resolve the BMC's address ({self._quote(_salient_line(text))})"
        if returncode != 0:
            return f"ipmitool failed (exit status {returncode}): {self._quote(_salient_line(text))}"
        return f"unparseable ipmitool output: {parse_error}: {self._quote(_salient_line(text))}"

    def _quote(self, text: str) -> str:
        """ipmitool's words, safe to log: scrubbed of the password, one line, bounded."""
        one = " ".join(self._scrub(text).split())
        one = "".join(ch if ch.isprintable() else "?" for ch in one)
        return repr(one if len(one) <= _MAX_QUOTE else one[:_MAX_QUOTE] + "...")


def _no_answer(timeout_s: float) -> str:
    return f"no answer within {timeout_s:g} s (BMC unreachable, wrong port, IPMI over LAN disabled, or too slow)"


def _line_with(text: str, words: str) -> str:
    return next((line.strip() for line in text.splitlines() if words in line.lower()), _salient_line(text))


# What ipmitool -v says on every run: never the line that explains a failure.
_CHATTER = ("loading iana pen registry", "using best available cipher suite", "running get vso capabilities",
            "invalid completion code received", "discovered ipmb address")


def _salient_line(text: str) -> str:
    """The line of ipmitool's output that best says what went wrong: an error line if there is one."""
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and not line.strip().lower().startswith(_CHATTER)]
    for line in lines:
        if any(w in line.lower() for w in ("error", "fail", "unable", "invalid", "could not", "cannot")):
            return line
    return lines[0] if lines else "(no output)"


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """Kill ipmitool's whole process group and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.communicate(timeout=2.0)
    except (subprocess.TimeoutExpired, OSError, ValueError):
        pass
