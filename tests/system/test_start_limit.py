"""The unit's start limit: an operator's restarts and a round of config fixing never lock the service out,
while a crash loop is still stopped (issue 13, item 5). Real systemd 252, the shipped unit.

systemd counts every start against StartLimitBurst= within StartLimitIntervalSec=, manual ones
included; the shipped 5 in 300 s locked operators out after a few restarts plus one bad config.
"""

from __future__ import annotations

import re
import time


from nsystemd import wait_for
from staged import CONFIG, UNIT, StagedService





def set_config(svc: StagedService, key: str, value: str) -> None:
    new, n = re.subn(rf"(?m)^{key}:.*$", f"{key}: {value}", svc.pristine[CONFIG])
    assert n == 1, f"{key} not in the shipped config"
    svc.sd.write(CONFIG, new, 0o640)


def test_operator_restarts_and_a_config_fix_are_not_refused(svc: StagedService) -> None:
    for _ in range(6):  # an operator's afternoon: start, restarts
        svc.sd.systemctl("restart", UNIT, check=True)
    set_config(svc, "country_iso_code", "XXX")  # a typo ...
    assert svc.sd.systemctl("restart", UNIT).returncode != 0
    assert svc.props("ExecMainStatus")["ExecMainStatus"] == "78"
    svc.sd.write(CONFIG, svc.pristine[CONFIG], 0o640)  # ... fixed
    r = svc.sd.systemctl("start", UNIT)
    assert r.returncode == 0, r.stderr  # was: "Start request repeated too quickly"
    svc.sd.wait_active(UNIT)


def test_a_crash_loop_still_stops_at_the_limit(svc: StagedService) -> None:
    # 192.0.2.1 (TEST-NET-1) is on no interface: bind fails, exit 69, Restart=on-failure loops
    # (every RestartSec=1 under the test drop-in) until the start limit stops it.
    set_config(svc, "metrics_address", "192.0.2.1")
    t0 = time.monotonic()
    cur = svc.cursor()
    svc.sd.systemctl("start", UNIT)
    try:
        wait_for(lambda: "Start request repeated too quickly" in svc.journal(cur), 60, interval=0.5,
                 what="the start limit")
    except TimeoutError:
        raise AssertionError(f"{svc.props('ActiveState', 'Result', 'NRestarts')}\n{svc.journal(cur)[-3000:]}") from None
    time.sleep(2.5)  # > RestartSec=1: a restart would have happened by now
    p = svc.props("ActiveState", "NRestarts", "ExecMainStatus")
    assert p["ActiveState"] == "failed" and p["ExecMainStatus"] == "69", p
    assert int(p["NRestarts"]) == 10, p  # the start that would exceed StartLimitBurst=10 is refused
    assert time.monotonic() - t0 < 60
