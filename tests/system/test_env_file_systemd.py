"""The environment file read by systemd 252 itself and by our reader must give the same values.

Each case is a file a real manager loads through ``EnvironmentFile=`` into a oneshot that
dumps its environment; our ``parse_env_file`` reads the same file. The daemon relies on
the agreement twice: an error names the file's line behind a variable, and a reload
subtracts what systemd copied in from the file (src/service/config_loader.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from nsystemd import NSystemd
from src.orchestration.errors import ConfigError
from src.orchestration.sources import parse_env_file

# (name, file bytes): files systemd and we both accept.
AGREED = [
    ("semicolon-comment", b"; a comment\n  ;indented\nA=1\n"),
    ("hash-comment-continued", b"# a comment ending in a backslash \\\nB=in-the-comment\nC=2\n"),
    ("unquoted-escapes", b"D=a\\ b\\\\c\\nd\n"),
    ("unquoted-continuation", b"E=one\\\ntwo\nE2=x\n"),
    ("double-quote-lines", b'F="line1\nline2"\nF2=after\n'),
    ("single-quote-lines", b"G='x\ny \\n $z'\n"),
    ("double-quote-escapes", b'H="a\\"b\\\\c\\$d\\`e\\qf\\\ng"\n'),
    ("concatenation", b"I=\"x\" 'y' z  \n"),
    ("quote-after-unquoted", b'J=a"b c"\n'),
    ("blanks", b"  K  =  v  \t\nL = 'v '  \n"),
    ("crlf", b'M=1\r\nN="a\r\nb"\r\nO=2\r\n'),
    ("lone-cr", b"V=1\rW=2\r"),
    ("escaped-trailing-blank", b"P=x\\ \n"),
    ("empty", b'Q=\nR=""\nS=   \n'),
    ("no-final-newline", b"T=end"),
    ("escape-at-end", b"U=a\\"),
    ("last-wins", b"X=1\nX=2\n"),
    ("not-comments", b"Y=#x ;y\nZ=15 # seconds\n"),
    ("utf8", "AA=ümlaut ☃\n".encode()),
]

# (name, file bytes, the key systemd drops): files we refuse with a line number, where
# systemd runs without the key (so the setting would silently do nothing).
REFUSED = [
    ("no-equals", b"GOOD=1\nBAD value\n", "BAD"),
    ("bad-name", b"GOOD=1\n1BAD=1\n", "1BAD"),
    ("unterminated", b"GOOD=1\nBAD='x\nMORE=2\n", "MORE"),
]

DUMP = "import json, os, sys; json.dump(dict(os.environ), open(sys.argv[1], 'w'))"


def _unit(env_file: Path, out: Path) -> str:
    return "\n".join([
        "[Service]", "Type=oneshot", f"EnvironmentFile={env_file}",
        f"ExecStart=/usr/bin/python3 -c \"{DUMP}\" {out}", "",
    ])


@pytest.fixture(scope="module")
def systemd_reads(nsystemd_available: None, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], dict]:
    """Boot one manager for every case; return name -> the environment systemd gave the unit."""
    root = tmp_path_factory.mktemp("envfile")
    files = {name: data for name, data in AGREED} | {name: data for name, data, _ in REFUSED}
    units = {}
    for name, data in files.items():
        (root / f"{name}.env").write_bytes(data)
        units[f"dump-{name}.service"] = _unit(root / f"{name}.env", root / f"{name}.json")
    work = root / "manager"
    work.mkdir()
    sd = NSystemd(work, units, share=[root])
    sd.start()
    try:
        for name in files:
            result = sd.systemctl("start", f"dump-{name}.service", timeout=60)
            assert result.returncode == 0, (name, result.stderr, sd.status(f"dump-{name}.service"))
        read = {name: json.loads((root / f"{name}.json").read_text()) for name in files}
    finally:
        sd.stop()
    return lambda name: (read[name], root / f"{name}.env")


@pytest.mark.parametrize("name", [n for n, _ in AGREED])
def test_our_reader_gives_the_values_systemd_gives(systemd_reads: Callable[[str], tuple], name: str) -> None:
    environ, path = systemd_reads(name)
    ours = {key: value for key, (value, _) in parse_env_file(path).items()}
    assert ours, name
    assert {k: environ.get(k) for k in ours} == ours


@pytest.mark.parametrize(("name", "dropped"), [(n, k) for n, _, k in REFUSED])
def test_what_we_refuse_systemd_drops_silently(systemd_reads: Callable[[str], tuple], name: str,
                                               dropped: str) -> None:
    environ, path = systemd_reads(name)
    assert environ.get("GOOD") == "1" and dropped not in environ
    with pytest.raises(ConfigError, match=r"line 2: "):
        parse_env_file(path)
