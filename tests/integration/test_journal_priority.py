"""The `<N>` syslog-priority prefix: on a stderr that is the journal stream only, never in the log file.

systemd names the journal stream it connected in $JOURNAL_STREAM (st_dev:st_ino). Here the
daemon's stderr is a plain file and JOURNAL_STREAM names that file, which is exactly the check
the daemon makes; the real journald is in tests/system/test_systemd_service.py.
"""

from __future__ import annotations

import os
import subprocess

from tests.support.daemon import REPO, TTA_CARBON, clean_env


def stream_id(path) -> str:
    st = os.stat(path)
    return f"{st.st_dev}:{st.st_ino}"


def test_daemon_lines_carry_their_priority_on_the_journal_stream_only(daemon_factory):
    d = daemon_factory(settings={"log_level": "debug"})
    d.workdir.mkdir(parents=True)
    (d.workdir / "stderr.log").touch()  # start() reopens it with "wb": same inode
    d.env = {"JOURNAL_STREAM": stream_id(d.workdir / "stderr.log")}
    d.start()
    d.wait_for_records(2)
    assert d.stop() == 0
    lines = (d.workdir / "stderr.log").read_text().splitlines()
    prio = {ln.split(">", 1)[1].split('"event": ')[1].split('"')[1]: ln[:3] for ln in lines if '"event": ' in ln}
    assert prio["started"] == "<6>" and prio["measured"] == "<7>" and prio["stopped"] == "<6>", lines[:5]
    assert all(ln[:3] in ("<7>", "<6>", "<4>", "<3>", "<2>") for ln in lines), lines
    assert all(ln.startswith("<4>") for ln in lines if '"level": "warning"' in ln)
    # The log file gets the same lines, without the prefix.
    logged = d.log_file.read_text().splitlines()
    assert logged and all(ln.startswith("{") for ln in logged), logged[:3]


def test_config_error_is_an_err_on_the_journal_stream_and_plain_elsewhere(tmp_path):
    err = tmp_path / "stderr"
    err.touch()
    argv = [*TTA_CARBON, "run", "--config", os.devnull, "--env-file", os.devnull, "--set", "country_iso_code=XXX"]

    def run(journal_stream: str) -> str:
        with err.open("wb") as f:
            r = subprocess.run(argv, cwd=REPO, env=clean_env(JOURNAL_STREAM=journal_stream), stderr=f, timeout=60)
        assert r.returncode == 78
        return err.read_text()

    assert run(stream_id(err)).startswith("<3>tta-carbon: config error: invalid country_iso_code='XXX'")
    # Inherited from a parent under systemd, but stderr is somewhere else: no prefix.
    assert run(stream_id(os.devnull)).startswith("tta-carbon: config error: invalid country_iso_code='XXX'")
