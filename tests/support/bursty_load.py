"""A bursty CPU load: one core busy for 1-2 s, then idle for 5-7 s, repeated (seeded, so runs compare).

Usage: ``python -m tests.support.bursty_load SECONDS [SEED]``; exits by itself after SECONDS.
``python -m tests.support.bursty_load --steady SECONDS``: one core busy the whole time instead.
"""

from __future__ import annotations

import random
import sys
import time


def busy(seconds: float) -> None:
    """Keep one core busy for ``seconds``."""
    busy_until = time.monotonic() + seconds
    while time.monotonic() < busy_until:
        pass


def main() -> None:
    if sys.argv[1] == "--steady":
        busy(float(sys.argv[2]))
        return
    seconds = float(sys.argv[1])
    rng = random.Random(int(sys.argv[2]) if len(sys.argv) > 2 else 12)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        busy(rng.uniform(1.0, 2.0))
        time.sleep(rng.uniform(5.0, 7.0))


if __name__ == "__main__":
    main()
