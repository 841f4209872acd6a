"""BasicAuth's verdict cache is shared by the event loop (``cached``) and worker threads (``check``)."""

from __future__ import annotations

import sys
import threading

from src.components.carbon.sinks.web_config import BasicAuth


def test_cache_survives_concurrent_checks_and_lookups(monkeypatch) -> None:
    auth = BasicAuth({"prometheus": b"$2y$unused"}, cache_size=2)
    monkeypatch.setattr(auth, "_verify", lambda token: token.endswith(b"0"))  # bcrypt's verdict, minus its cost
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: a race shows in well under a second
    headers = [b"Basic " + str(i).encode() for i in range(6)]
    errors: list[BaseException] = []
    stop = threading.Event()

    def hammer(offset: int) -> None:
        try:
            i = offset
            while not stop.is_set():
                header = headers[i % len(headers)]
                if auth.cached(header) is None:
                    auth.check(header)
                i += 1
        except BaseException as exc:  # noqa: BLE001  (any failure is the finding)
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(8)]
    try:
        for t in threads:
            t.start()
        stop.wait(1.5)
    finally:
        stop.set()
        for t in threads:
            t.join()
        sys.setswitchinterval(interval)
    assert errors == [], f"{type(errors[0]).__name__}: {errors[0]}"
    assert auth.cached(headers[0]) in (True, None) and auth.cached(headers[1]) in (False, None)
