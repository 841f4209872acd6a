"""Every bad configuration in tests/data/bad_configs/ through the real CLI, each case in its own process.

For each case `tta-carbon run` must exit 78 (EX_CONFIG), print nothing on stdout and exactly one line
on stderr containing the case's expect.txt, and create nothing: the output dir, state dir and log file
(in a fresh sandbox, which is also the working directory) stay absent and the case's files unchanged.
See tests/data/bad_configs/README.md for the case format.

How each case runs (``mode`` in the report):
- "exec": a fresh `.venv/bin/tta-carbon run` subprocess, exactly what systemd starts. Used for the
  cases in EXEC_CASES and for every case that chmods files (run without CAP_DAC_OVERRIDE when root).
- "fork": the real ``src.service.cli.main(["run", ...])`` in a process forked from one pre-warmed
  interpreter (cli_fork_runner.py), with the case's own environment, cwd, stdout and stderr. A fresh
  interpreter costs ~1 s of imports per case; forking keeps the corpus well under a minute on 2 cores.
Set TTA_CORPUS_EXEC_ALL=1 to run every case as "exec".
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
CORPUS = REPO_ROOT / "tests" / "data" / "bad_configs"
FORK_RUNNER = Path(__file__).with_name("cli_fork_runner.py")
CASES = sorted(p.name for p in CORPUS.iterdir() if p.is_dir())
META_FILES = ("expect.txt", "forbid.txt", "env.json", "args.json", "setup.json")
EX_CONFIG = 78
PREFIX = "tta-carbon: config error: "
CASE_TIMEOUT_S = 30
# Address-space limit per case: a regression (e.g. repr() of a YAML alias bomb) must fail the case with
# MemoryError instead of OOM-killing the test machine. 2 GiB is several times what the CLI needs.
MEMORY_LIMIT_BYTES = 2 << 30
# Always run as a fresh `tta-carbon` process (one or more per kind of input), besides the chmod cases.
EXEC_CASES = {
    "yaml-bad-indentation", "yaml-python-tag", "yaml-alias-bomb", "env-var-token-typo", "interval-nan",
    "output-dir-empty", "config-missing-named-in-env-file", "env-file-not-utf8", "env-binary-value",
    "config-missing-explicit-argument", "env-var-from-env-file",
}
EXEC_ALL = os.environ.get("TTA_CORPUS_EXEC_ALL", "") not in ("", "0")
# Process-environment names a case must not inherit from the host (or from systemd, if tests run under it).
SCRUB_PREFIXES = ("CARBON_", "TTA_")
SCRUB_NAMES = {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID"}


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(SCRUB_PREFIXES) and k not in SCRUB_NAMES}
    env["PYTHONPATH"] = str(REPO_ROOT)  # this worktree's src, whatever else is installed
    return env


def _cli() -> list[str]:
    script = Path(sys.executable).with_name("tta-carbon")
    if script.exists():
        return [str(script)]
    found = shutil.which("tta-carbon")
    return [found] if found else [sys.executable, "-m", "src.service.cli"]


def _fill(text: str, case_dir: Path, sandbox: Path) -> str:
    return text.replace("@CASE@", str(case_dir)).replace("@SANDBOX@", str(sandbox))


def _snapshot(root: Path) -> set[tuple[str, int]]:
    return {(str(p.relative_to(root)), p.stat().st_size if p.is_file() else -1) for p in root.rglob("*")}


@dataclass
class Case:
    """One corpus case laid out in its own work directory, ready to run."""

    name: str
    work: Path
    inputs: Path
    sandbox: Path
    argv: list[str]
    env: dict[str, str]
    expect: str
    forbid: str | None
    locked: dict[Path, int]
    watched: list[Path]
    before: set[tuple[str, int]]
    mode: str

    @classmethod
    def prepare(cls, name: str, work: Path) -> Case:
        source = CORPUS / name
        inputs, sandbox = work / "case", work / "sandbox"
        shutil.copytree(source, inputs, ignore=shutil.ignore_patterns(*META_FILES))
        sandbox.mkdir()
        for fname in ("config.yaml", "environment"):  # placeholders inside the files too (latin-1: bytes survive)
            path = inputs / fname
            text = path.read_bytes().decode("latin-1") if path.exists() else ""
            path.write_bytes(_fill(text, inputs, sandbox).encode("latin-1"))

        def meta(fname: str, default: Any = None) -> Any:
            path = source / fname
            if not path.exists():
                return default
            text = _fill(path.read_text(encoding="utf-8"), inputs, sandbox)
            return json.loads(text) if fname.endswith(".json") else text.rstrip("\n")

        env = _base_env() | {
            "TTA_CONFIG": str(inputs / "config.yaml"),
            "TTA_ENV_FILE": str(inputs / "environment"),
            "CARBON_OUTPUT_DIR": str(sandbox / "output"),
            "CARBON_STATE_DIR": str(sandbox / "state"),
            "CARBON_LOG_FILE": str(sandbox / "carbon.log"),
        }
        for key, value in meta("env.json", {}).items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        watched = [Path(env[k]) for k in ("CARBON_OUTPUT_DIR", "CARBON_STATE_DIR", "CARBON_LOG_FILE") if env.get(k)]
        watched = [p for p in watched if "\x00" not in str(p) and len(str(p)) < 1000 and not os.path.lexists(p)]
        setup = meta("setup.json", {})
        for rel in setup.get("mkdir", []):
            (inputs / rel).mkdir(parents=True, exist_ok=True)
        for rel in setup.get("mkfifo", []):
            os.mkfifo(inputs / rel)
        locked = {inputs / rel: int(mode, 8) for rel, mode in setup.get("chmod", {}).items()}
        short_name = name.split("-", 1)[1]
        mode = "exec" if EXEC_ALL or locked or short_name in EXEC_CASES else "fork"
        return cls(name, work, inputs, sandbox, ["run", *meta("args.json", [])], env, meta("expect.txt", ""),
                   meta("forbid.txt"), locked, watched, _snapshot(inputs), mode)

    def run_exec(self) -> Outcome:
        cmd = [*_cli(), *self.argv]
        prlimit = shutil.which("prlimit")
        if prlimit:
            cmd = [prlimit, f"--as={MEMORY_LIMIT_BYTES}", "--", *cmd]
        if self.locked and os.geteuid() == 0:
            # root reads anything: drop CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH so chmod 000 really bites.
            setpriv = shutil.which("setpriv")
            if setpriv is None:
                return Outcome(self, None, b"", b"", skip="running as root without setpriv: chmod 000 has no effect")
            drop = "-dac_override,-dac_read_search"
            cmd = [setpriv, f"--bounding-set={drop}", f"--inh-caps={drop}", *cmd]
        for path, mode in self.locked.items():
            path.chmod(mode)
        try:
            proc = subprocess.run(cmd, env=self.env, cwd=self.sandbox, stdin=subprocess.DEVNULL,
                                  capture_output=True, timeout=CASE_TIMEOUT_S, check=False)
            returncode, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
        except subprocess.TimeoutExpired as exc:
            returncode, stdout, stderr = None, exc.stdout or b"", (exc.stderr or b"") + b"[timed out]"
        finally:
            for path in self.locked:
                path.chmod(0o755 if path.is_dir() else 0o644)
        return Outcome(self, returncode, stdout, stderr)  # after the chmod is undone: it snapshots the files

    def fork_job(self) -> dict[str, Any]:
        return {"argv": self.argv, "env": self.env, "cwd": str(self.sandbox), "memory_limit": MEMORY_LIMIT_BYTES,
                "stdout": str(self.work / "stdout"), "stderr": str(self.work / "stderr")}

    def fork_outcome(self, code: int) -> Outcome:
        return Outcome(self, code, (self.work / "stdout").read_bytes(), (self.work / "stderr").read_bytes())


@dataclass
class Outcome:
    case: Case
    returncode: int | None
    stdout: bytes
    stderr: bytes
    skip: str = ""
    sandbox_left: list[str] = field(default_factory=list)
    watched_left: list[str] = field(default_factory=list)
    inputs_changed: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        c = self.case
        self.sandbox_left = sorted(str(p.relative_to(c.sandbox)) for p in c.sandbox.rglob("*"))
        self.watched_left = [str(p) for p in c.watched if os.path.lexists(p)]
        self.inputs_changed = sorted(str(x) for x in c.before ^ _snapshot(c.inputs))


def _run_forked(cases: list[Case]) -> list[Outcome]:
    if not cases:
        return []
    proc = subprocess.run([sys.executable, str(FORK_RUNNER)], input=json.dumps([c.fork_job() for c in cases]),
                          env=_base_env(), cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=CASE_TIMEOUT_S * len(cases), check=False)
    assert proc.returncode == 0, f"fork runner failed: {proc.stderr[-3000:]}"
    return [c.fork_outcome(code) for c, code in zip(cases, json.loads(proc.stdout), strict=True)]


@pytest.fixture(scope="module")
def outcomes(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    """Run every case selected in this session (honours -k) once; exec and fork cases side by side."""
    selected = [
        item.callspec.params["case"]
        for item in request.session.items
        if item.module is request.module and hasattr(item, "callspec") and "case" in item.callspec.params
    ]
    cases = [Case.prepare(name, tmp_path_factory.mktemp(name)) for name in selected]
    exec_cases = [c for c in cases if c.mode == "exec"]
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        forked = pool.submit(_run_forked, [c for c in cases if c.mode == "fork"])
        results = list(pool.map(Case.run_exec, exec_cases)) + forked.result()
    return {outcome.case.name: outcome for outcome in results}


def test_corpus_is_big_enough() -> None:
    assert len(CASES) >= 40
    for name in CASES:
        assert (CORPUS / name / "expect.txt").read_text(encoding="utf-8").strip(), f"{name}: empty expect.txt"


@pytest.mark.parametrize("case", CASES)
def test_bad_config_exits_78_with_one_line_and_creates_nothing(outcomes: dict[str, Outcome], case: str) -> None:
    out = outcomes[case]
    if out.skip:
        pytest.skip(out.skip)
    where = f"[{out.case.mode}] "
    stderr = out.stderr.decode("utf-8")  # strict: the error line is valid UTF-8 even for binary input
    assert out.returncode == EX_CONFIG, f"{where}exit {out.returncode}, stderr: {stderr[-2000:]}"
    assert out.stdout == b"", where
    assert stderr.endswith("\n") and stderr.count("\n") == 1 and len(stderr.splitlines()) == 1, where + stderr
    assert stderr.startswith(PREFIX), where + stderr
    assert out.case.expect in stderr, f"{where}expected {out.case.expect!r} in {stderr!r}"
    assert len(stderr) < 1000, f"{where}error line of {len(stderr)} characters"
    if out.case.forbid:
        assert out.case.forbid not in stderr, where
    assert out.sandbox_left == [], f"{where}created: {out.sandbox_left}"
    assert out.watched_left == [], f"{where}created: {out.watched_left}"
    assert out.inputs_changed == [], f"{where}case files changed: {out.inputs_changed}"
