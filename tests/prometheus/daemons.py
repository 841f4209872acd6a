"""The real daemon for the Prometheus tests: tests/support/daemon.py's
DaemonProc (READY=1 read from a real NOTIFY_SOCKET), plus a thread that keeps
reading that socket the way systemd does.

Why: the daemon sends STATUS= every interval, and its sd_notify socket is
blocking. With net.unix.max_dgram_qlen = 10 (this machine's default), a
NOTIFY_SOCKET nobody reads fills after ~10 intervals; the measurement loop
then blocks inside notify(), /metrics keeps serving the last page (so
CarbonMeasurementsStale is what would notice), and SIGTERM cannot stop the
daemon until the socket is read (seen: exit -9 after a 15 s SIGTERM wait).
"""
from __future__ import annotations

import signal
import threading

from tests.support.daemon import DaemonProc, free_port  # noqa: F401  (re-exported)


class DrainedDaemon(DaemonProc):
    _drain_stop: threading.Event | None = None
    _drainer: threading.Thread | None = None

    def start(self, wait_ready: bool = True, timeout: float = 20.0) -> "DrainedDaemon":
        super().start(wait_ready=wait_ready, timeout=timeout)
        if wait_ready:
            self.start_draining()
        return self

    def start_draining(self) -> None:
        """Call after READY=1 was seen (wait_for_notification reads the same socket)."""
        self._drain_stop = threading.Event()
        self._drainer = threading.Thread(target=self._drain_loop, name=f"drain-{self.port}", daemon=True)
        self._drainer.start()

    def _drain_loop(self) -> None:
        while not self._drain_stop.is_set():
            try:
                self.drain_notifications(0.2)
            except OSError:
                return

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self._drainer is not None:
            self._drain_stop.set()
            self._drainer.join(5)
            self._drainer = None
        return super().stop(sig, timeout)

    @property
    def instance(self) -> str:
        return f"127.0.0.1:{self.port}"
