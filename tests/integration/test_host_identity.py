"""Host identity and measured time through the real daemon (issue 16): ``host_name`` is every
record's ``host`` and the ``host`` label of ``tta_carbon_build_info``; the seconds the records
cover are a counter that continues across restarts, as the energy counters do."""

from __future__ import annotations

import re
import urllib.request

import pytest


def page(d) -> str:
    return urllib.request.urlopen(d.url(), timeout=5).read().decode()


def sample(text: str, name: str) -> float:
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    assert m, f"no {name} on the page:\n{text}"
    return float(m.group(1))


def test_host_name_is_the_records_host_and_the_build_info_label(daemon_factory):
    d = daemon_factory(settings={"host_name": "carbon-staging-07"}).start()
    d.wait_for_records(2)
    text = page(d)
    assert d.stop() == 0
    assert {r["host"] for r in d.records()} == {"carbon-staging-07"}
    assert re.search(r'^tta_carbon_build_info\{[^}]*host="carbon-staging-07"[^}]*\} 1\.0$', text, re.M), text


def test_record_hostname_false_leaves_host_out_of_records_and_build_info(daemon_factory):
    d = daemon_factory(settings={"host_name": "carbon-staging-07", "record_hostname": "false"}).start()
    d.wait_for_records(1)
    text = page(d)
    assert d.stop() == 0
    assert all("host" not in r for r in d.records())
    assert re.search(r'^tta_carbon_build_info\{[^}]*host=""', text, re.M), text
    assert "carbon-staging-07" not in text


def test_measured_seconds_are_the_records_durations_and_continue_across_a_restart(daemon_factory):
    d = daemon_factory().start()
    d.wait_for_records(3)
    assert d.stop() == 0
    first = d.records()
    d2 = daemon_factory().start()  # same work dir: same state and output directories
    d2.wait_for_records(len(first) + 2)
    text = page(d2)
    assert d2.stop() == 0
    records = d2.records()
    seq = int(sample(text, "tta_carbon_last_record_sequence"))
    covered = sum(r["duration_s"] for r in records if r["seq"] <= seq)
    assert sample(text, "tta_carbon_measured_seconds_total") == pytest.approx(covered, rel=1e-9)
    assert covered > sum(r["duration_s"] for r in first)  # the first run's seconds are in it
    assert records[-1]["totals"]["measured_s"] == pytest.approx(sum(r["duration_s"] for r in records), rel=1e-9)
