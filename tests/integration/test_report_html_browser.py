"""`tta-carbon report --html` rendered in a real headless Chromium (Debian's `chromium`).

The page is written by the installed `tta-carbon` command (a real process) from a few days
of records shaped like the daemon's: two hosts, several units (one with a hostile name),
a day with a platform meter's remainder, measured and estimated methods, embodied carbon
on one host. Chromium is driven over the DevTools protocol on a pipe
(``--remote-debugging-pipe``: fds 3 and 4, NUL-separated JSON), so no websocket client is
needed. Checked: no console message, no exception, no CSP violation, no request but the
page itself; every chart an SVG with nonzero rendered size and drawn marks; the totals
shown equal `report --json`'s; the hostile unit name shown as text, never as markup.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.ops_helpers import REPO, TTA_CARBON, clean_env

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (scripts/run_tests.sh installs it)")

HOSTILE = "evil<script>alert(1)</script>\"'&.service"
CHARTS = ("energy", "emissions", "intensity", "units", "measured")


def _record(host: str, seq: int, end: str, *, platform: bool, embodied: bool, source: str, ci: float) -> dict[str, Any]:
    e = {"cpu": 3000.0 + 10 * seq, "ram": 450.0, "gpu": 9000.0 if host == "gpu-1" else 0.0}
    methods = ({"cpu": "rapl", "ram": "rapl"} if host == "web-1"
               else {"cpu": "codecarbon_cpu_load", "ram": "codecarbon_ram_model", "gpu": "nvml"})
    r: dict[str, Any] = {"timestamp": end, "interval_end": end, "duration_s": 300.0, "seq": seq, "run_id": f"run-{host}",
                         "host": host, "carbon_intensity_g_per_kwh": ci, "intensity_source": source,
                         "energy_method": methods, "estimated": host != "web-1"}
    if platform:
        e["remainder"] = 1200.0
        methods["platform"] = "redfish"
    e["total"] = sum(e.values())
    r["energy_j"] = e
    r["emissions_g"] = {k: v / 3.6e6 * ci for k, v in e.items()}
    names = ["nginx.service", "postgresql.service", HOSTILE] if host == "web-1" else ["inference@llama.service", "jupyterhub.service"]
    share = 0.6 * e["total"] / len(names)
    r["units"] = {n: {"energy_j": share, "emissions_g": share / 3.6e6 * ci, "cpu_s": 20.0} for n in names}
    r["units"]["unattributed"] = {"energy_j": e["total"] - share * len(names),
                                  "emissions_g": (e["total"] - share * len(names)) / 3.6e6 * ci, "cpu_s": 0.0}
    if not platform and host == "web-1" and seq % 5 == 0:
        r["energy_assumptions"] = {"platform": "meter redfish had no reading for 9.8 s of 300.0 s: not counted"}
    if embodied:
        r["embodied_g"] = 0.6
        for u in r["units"].values():
            u["embodied_g"] = 0.6 * u["energy_j"] / e["total"]
    return r


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("fleet")
    for host in ("web-1", "gpu-1"):
        (root / host).mkdir()
        seq = 0
        for d, day in enumerate(("2026-11-28", "2026-11-29", "2026-11-30")):
            lines = []
            for i in range(48):  # every half hour
                seq += 1
                source = "country_mix" if d == 1 and i < 8 else "electricitymaps"
                lines.append(json.dumps(_record(host, seq, f"{day}T{i // 2:02d}:{i % 2 * 30:02d}:00.000Z",
                                                platform=host == "web-1" and d == 2, embodied=host == "gpu-1",
                                                source=source, ci=150.0 + 4 * i + 20 * d)))
            (root / host / f"emissions_{day}.json").write_text("\n".join(lines) + "\n")
    out = root.parent / "report.html"
    run = subprocess.run([TTA_CARBON, "report", "--fleet", str(root), "--html", str(out)], capture_output=True,
                         text=True, env=clean_env(), cwd=REPO, timeout=60)
    assert run.returncode == 0, run.stderr
    js = subprocess.run([TTA_CARBON, "report", "--fleet", str(root), "--json"], capture_output=True, text=True,
                        env=clean_env(), cwd=REPO, timeout=60)
    assert js.returncode == 0, js.stderr
    return out, json.loads(js.stdout)


class Cdp:
    """The DevTools protocol over Chromium's pipe: requests by id, events collected as they come."""

    def __init__(self, url_dir: Path) -> None:
        to_chrome_r, self._w = os.pipe()
        self._r, from_chrome_w = os.pipe()

        def fds() -> None:  # Chromium reads commands on fd 3 and writes on fd 4
            r, w = (fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_chrome_r, from_chrome_w))  # clear of 3 and 4
            os.dup2(r, 3, inheritable=True)
            os.dup2(w, 4, inheritable=True)

        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
             "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--disable-sync",
             "--disable-background-networking", "--disable-component-update",
             "--host-resolver-rules=MAP * ~NOTFOUND", f"--user-data-dir={url_dir / 'profile'}",
             "--window-size=1280,2400", "about:blank"],
            pass_fds=(3, 4), preexec_fn=fds, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf = b""
        self._next = 0
        self.events: list[dict[str, Any]] = []

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._r], [], [], left)[0]:
                raise TimeoutError("chromium did not answer")
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                raise EOFError("chromium closed the pipe")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method: str, session: str | None = None, timeout: float = 30, **params: Any) -> dict[str, Any]:
        self._next += 1
        msg: dict[str, Any] = {"id": self._next, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next:
                assert "error" not in reply, reply
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == method for e in self.events):
            self.events.append(self._read(deadline))

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=5)
        except (TimeoutError, EOFError, OSError, AssertionError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._w)
        os.close(self._r)


@pytest.fixture(scope="module")
def rendered(page: tuple[Path, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The page loaded in Chromium: the DOM figures measured, and every event it raised."""
    return load(page[0], tmp_path_factory.mktemp("chromium"))


def load(path: Path, profile: Path) -> dict[str, Any]:
    cdp = Cdp(profile)
    try:
        target = cdp.call("Target.createTarget", url="about:blank")["targetId"]
        session = cdp.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            cdp.call(f"{domain}.enable", session)
        cdp.call("Page.navigate", session, url=path.as_uri())
        cdp.wait_for("Page.loadEventFired")
        # Runtime.evaluate is the debugger's, not the page's: the page's CSP forbids the page any script
        probe = """JSON.stringify({
          charts: Object.fromEntries([...document.querySelectorAll('figure[data-chart]')].map(f => {
            const s = f.querySelector('svg'); const r = s ? s.getBoundingClientRect() : {width: 0, height: 0};
            return [f.dataset.chart, {w: r.width, h: r.height,
              marks: s ? [...s.querySelectorAll('rect[data-value],circle[data-value]')]
                .filter(e => { const b = e.getBoundingClientRect(); return b.width > 0 && b.height > 0; }).length : 0,
              text: f.innerText}];
          })),
          totals: Object.fromEntries([...document.querySelectorAll('[data-total]')]
            .map(e => [e.dataset.name, e.dataset.total])),
          totalText: Object.fromEntries([...document.querySelectorAll('[data-total]')]
            .map(e => [e.dataset.name, e.innerText])),
          scripts: document.scripts.length,
          unitLabels: [...document.querySelectorAll('figure[data-chart=units] text.y-label')].map(e => e.textContent),
          title: document.title,
          csp: document.querySelector('meta[http-equiv="Content-Security-Policy"]').content,
        })"""
        value = cdp.call("Runtime.evaluate", session, expression=probe, returnByValue=True)["result"]["value"]
        events = list(cdp.events)
    finally:
        cdp.close()
    stderr = cdp.proc.stderr.read().decode(errors="replace") if cdp.proc.stderr else ""
    return {"dom": json.loads(value), "events": events, "stderr": stderr}


def test_no_console_errors_no_requests_no_scripts(rendered: dict[str, Any], page: tuple[Path, dict[str, Any]]) -> None:
    events = rendered["events"]
    console = [e for e in events if e.get("method") in ("Runtime.consoleAPICalled", "Runtime.exceptionThrown")]
    logs = [e["params"]["entry"] for e in events if e.get("method") == "Log.entryAdded"]
    assert console == [] and logs == [], (console, logs)
    requests = [e["params"]["request"]["url"] for e in events if e.get("method") == "Network.requestWillBeSent"]
    assert requests == [page[0].as_uri()]  # the page itself, nothing else
    assert not [e for e in events if e.get("method") == "Network.loadingFailed"]
    assert "Content Security Policy" not in rendered["stderr"]
    dom = rendered["dom"]
    assert dom["scripts"] == 0
    assert dom["csp"] == "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def test_every_chart_is_drawn(rendered: dict[str, Any]) -> None:
    charts = rendered["dom"]["charts"]
    assert sorted(charts) == sorted(CHARTS)
    for name, c in charts.items():
        assert c["w"] > 600 and c["h"] > 100, (name, c)
        assert c["marks"] > 0, name
    assert charts["energy"]["marks"] == 3 * 3 + 1  # cpu, ram, gpu each day, the remainder on the third
    assert charts["emissions"]["marks"] == 3 * 2  # operational and embodied each day
    assert "no embodied carbon configured" not in charts["emissions"]["text"].lower()
    assert charts["intensity"]["marks"] == 3 * 24  # one point per hour and source (country_mix replaces 4 hours)


def test_totals_equal_report_json(rendered: dict[str, Any], page: tuple[Path, dict[str, Any]]) -> None:
    doc = page[1]["overall"]
    shown = rendered["dom"]["totals"]
    assert sorted(shown) == ["embodied_g", "emissions_g", "energy_j", "measured_energy_j", "records"]
    text = rendered["dom"]["totalText"]  # what a reader sees, rounded from the same numbers
    assert text["energy_j"] == f"{doc['energy_j']['total'] / 3.6e6:,.3f} kWh"
    assert text["emissions_g"] == f"{doc['emissions_g']['total']:,.2f} g"
    assert text["records"] == "288"
    assert float(shown["energy_j"]) == doc["energy_j"]["total"]
    assert float(shown["emissions_g"]) == doc["emissions_g"]["total"]
    assert float(shown["embodied_g"]) == doc["embodied_g"] == pytest.approx(0.6 * 144)
    assert float(shown["measured_energy_j"]) == doc["measured_energy_j"]
    assert int(shown["records"]) == doc["records"] == 288
    # embodied is never inside the operational total
    assert doc["emissions_g"]["total"] == pytest.approx(sum(v for k, v in doc["emissions_g"].items() if k != "total"))


def test_hostile_unit_name_is_text(rendered: dict[str, Any], page: tuple[Path, dict[str, Any]]) -> None:
    assert HOSTILE in rendered["dom"]["unitLabels"]
    html = page[0].read_text()
    assert "<script" not in html and "alert(1)</script>" not in html


def test_the_checks_see_a_fetch_and_a_script(tmp_path: Path, page: tuple[Path, dict[str, Any]]) -> None:
    """The same page with an image from the network and an inline script added: the CSP blocks
    both, and the events this test reads show it (so the checks above can fail)."""
    bad = tmp_path / "bad.html"
    bad.write_text(page[0].read_text().replace(
        "</main>", '<img src="http://203.0.113.7/x.png"><script>console.log("ran")</script></main>'))
    result = load(bad, tmp_path / "chromium")
    logs = [e["params"]["entry"]["text"] for e in result["events"] if e.get("method") == "Log.entryAdded"]
    assert any("Content Security Policy" in t and "img-src" in t for t in logs), logs
    assert any("Content Security Policy" in t and "script" in t for t in logs), logs
    assert not [e for e in result["events"] if e.get("method") == "Runtime.consoleAPICalled"]  # the script never ran
