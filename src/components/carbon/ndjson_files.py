"""The NDJSON file format on disk: names, rotated copies, listing and reading.

One owner for what every reader and writer must agree on. The daemon appends to
``emissions_YYYY-MM-DD.json`` (the UTC day the interval ended); logrotate leaves
copies named ``.1``, ``.2.gz``, ``-YYYYMMDD`` or ``.gz`` next to it. The sink, the
ledger, ``report``, ``prune`` and the health check all go through this module.
"""

from __future__ import annotations

import gzip
import os
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

PREFIX = "emissions_"
SUFFIX = ".json"
# emissions_2026-11-28.json, plus logrotate's .1 / .2.gz / -20261128 / .gz suffixes.
FILE_PATTERN = re.compile(r"^emissions_\d{4}-\d{2}-\d{2}\.json(?:[.-][0-9]+)?(?:\.gz)?$")
LIVE_NAME_LEN = len("emissions_YYYY-MM-DD.json")
_DATE = slice(len(PREFIX), len("emissions_YYYY-MM-DD"))


def file_name(day: str) -> str:
    """The live file for a UTC day given as ``YYYY-MM-DD`` (a record's ``interval_end[:10]``)."""
    return f"{PREFIX}{day}{SUFFIX}"


def file_name_at(epoch_s: float) -> str:
    """The live file that a record ending at ``epoch_s`` goes to."""
    return file_name(f"{datetime.fromtimestamp(epoch_s, UTC):%Y-%m-%d}")


def is_records_file(name: str) -> bool:
    """A live or rotated records file name (what report reads and prune may delete)."""
    return FILE_PATTERN.match(name) is not None


def is_live(name: str) -> bool:
    """The file the daemon appends to, not a rotated or compressed copy."""
    return is_records_file(name) and len(name) == LIVE_NAME_LEN


def day_of(name: str) -> date | None:
    """The UTC day a records file is named for; None when the name holds no valid date."""
    try:
        return date.fromisoformat(name[_DATE])
    except ValueError:
        return None


def list_files(directory: Path) -> list[Path]:
    """Records files directly in ``directory`` (live and rotated), sorted by name. Raises OSError."""
    return sorted(p for p in directory.iterdir() if is_records_file(p.name) and p.is_file())


def newest_live_file(directory: Path) -> Path | None:
    """The most recent live file: where the newest records are."""
    live = [p for p in list_files(directory) if is_live(p.name)]
    return live[-1] if live else None


def iter_lines(path: Path) -> Iterator[bytes]:
    """The file's lines one at a time (gunzipped for ``.gz``), so memory does not grow with the file.

    Raises OSError (``gzip.BadGzipFile`` is one), EOFError (a truncated ``.gz``) or
    ``zlib.error`` part-way: the lines yielded before it are good.
    """
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as fh:
        for line in fh:
            yield line.rstrip(b"\n")


def read_lines(path: Path) -> list[bytes]:
    """The file's lines as bytes, gunzipped for ``.gz``. Raises OSError or EOFError."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as fh:
        return fh.read().split(b"\n")


def tail_lines(path: Path, max_bytes: int = 1 << 20) -> list[bytes]:
    """The whole lines among the last ``max_bytes`` of a live (uncompressed) file, oldest first.

    Start-up needs only the newest record: reading a 600 MB day file whole took 10 s and
    1.3 GB. The first line of the window is dropped unless it starts the file (it may be cut).
    Raises OSError.
    """
    with open(path, "rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        start = max(0, size - max_bytes)
        fh.seek(start)
        data = fh.read(size - start)
    lines = data.split(b"\n")
    return lines[1:] if start > 0 else lines


def total_bytes(directory: Path) -> int:
    """Bytes of every records file in ``directory`` (0 when it cannot be read); symlinks not followed."""
    total = 0
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name.startswith(PREFIX) and entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
    except OSError:
        pass
    return total
