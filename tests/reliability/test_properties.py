"""Property-based: the record writer and the energy accounting (hypothesis)."""

from __future__ import annotations

import json
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from src.components.carbon.accounting import Accountant, Identity
from src.components.carbon.record import COMPONENTS, JOULES_PER_KWH, ComponentEnergy, Intensity, IntervalEnergy, Totals
from src.components.carbon.sinks.ndjson import NdjsonSink

joules = st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False)
energy = st.fixed_dictionaries({}, optional={c: joules for c in COMPONENTS})
text = st.text(min_size=1, max_size=60)
intervals = st.lists(st.tuples(energy, st.floats(min_value=1e-3, max_value=3600)), min_size=1, max_size=30)


def _interval(e: dict) -> IntervalEnergy:
    return IntervalEnergy({c: ComponentEnergy(j, "rapl") for c, j in e.items()})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(e=energy, dur=st.floats(min_value=1e-3, max_value=3600), project=text, host=st.one_of(st.none(), text),
       g=st.floats(min_value=1e-3, max_value=3000), end=st.floats(min_value=0, max_value=4e9))
def test_any_record_is_one_json_line_that_round_trips(tmp_path_factory, figures, e, dur, project, host, g, end):
    """Any record -> exactly one valid JSON line that round-trips (hypothesis, 150 examples)."""
    out = tmp_path_factory.mktemp("p")
    acct = Accountant(Totals())
    rec = acct.account(_interval(e), end_wall=end, elapsed_s=dur, intensity=Intensity(g, "fixed", "FRA"),
                       identity=Identity("r", host, project, "env"))
    sink = NdjsonSink(out)
    assert sink.write(rec)
    sink.close()
    data = b"".join(p.read_bytes() for p in out.iterdir())
    assert data.count(b"\n") == 1 and data.endswith(b"\n")
    assert json.loads(data) == json.loads(json.dumps(rec.to_json_dict()))
    figures["examples"] = figures.get("examples", 0) + 1


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=intervals, g=st.floats(min_value=1e-3, max_value=3000))
def test_totals_equal_sum_of_intervals(figures, steps, g):
    """Totals == sum of intervals; power x duration == energy; emissions == kWh x intensity (hypothesis, 200 examples)."""
    acct = Accountant(Totals())
    intensity = Intensity(g, "fixed", "FRA")
    recs = [acct.account(_interval(e), end_wall=1e9, elapsed_s=d, intensity=intensity,
                         identity=Identity("r", None, "p", "e")) for e, d in steps]
    for c in COMPONENTS:
        parts = [r.energy_j[c] for r in recs]
        assert math.isclose(recs[-1].totals.energy_j[c], math.fsum(parts), rel_tol=1e-9, abs_tol=1e-9)
        assert math.isclose(recs[-1].totals.emissions_g[c], math.fsum(r.emissions_g[c] for r in recs),
                            rel_tol=1e-9, abs_tol=1e-9)
        for r in recs:
            assert math.isclose(r.power_w[c] * r.duration_s, r.energy_j[c], rel_tol=1e-9, abs_tol=1e-9)
            assert math.isclose(r.emissions_g[c], r.energy_j[c] / JOULES_PER_KWH * g, rel_tol=1e-12, abs_tol=1e-15)
    assert [r.seq for r in recs] == list(range(1, len(recs) + 1))
    figures["examples"] = figures.get("examples", 0) + 1
