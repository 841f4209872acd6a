"""`tta-carbon prune`: retention for the NDJSON files. A dry run unless ``--apply``.

Only ``emissions_*`` files directly in the output directory are considered: exactly the
names ``tta-carbon report`` reads (``emissions_YYYY-MM-DD.json`` and logrotate's ``.1``,
``.2.gz``, ``-YYYYMMDD`` copies). Symbolic links are never followed, deleted or archived,
and nothing else in the directory is touched.

Age: a file named for day D holds only records whose interval ended on D (UTC), so it is
older than N when D+1 00:00 UTC lies more than N before now. A rotated or compressed copy
must also have an mtime older than that: the mtime is the last time anything wrote to it.
"""

from __future__ import annotations

import argparse
import os
import re
import stat
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

from src.components.carbon import ndjson_files
from src.service.exit_codes import EX_FAILURE, EX_OK

_AGE = re.compile(r"^([0-9]+)([dw])$")


def parse_age(text: str) -> timedelta:
    """``30d`` or ``12w``; at least one day, so the file being written is never a candidate."""
    m = _AGE.fullmatch(text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number of days or weeks, such as 30d or 12w")
    age = timedelta(days=int(m.group(1)) * (7 if m.group(2) == "w" else 1))
    if age < timedelta(days=1):
        raise argparse.ArgumentTypeError(f"{text!r}: must be at least 1d")
    return age


@dataclass(frozen=True)
class Candidate:
    name: str
    day: date
    size: int
    inode: int


@dataclass
class Plan:
    directory: Path
    cutoff: datetime
    delete: list[Candidate]
    skipped: list[str]  # "name: why", for names that look like ours but are not plain files

    @property
    def total_bytes(self) -> int:
        return sum(c.size for c in self.delete)


def make_plan(directory: Path, older_than: timedelta, now: datetime | None = None) -> Plan:
    cutoff = (now or datetime.now(UTC)) - older_than
    plan = Plan(directory, cutoff, [], [])
    with os.scandir(directory) as entries:
        for entry in entries:
            if not ndjson_files.is_records_file(entry.name):  # exactly the names `report` reads
                continue
            if entry.is_symlink():
                plan.skipped.append(f"{entry.name}: symbolic link, never followed")
                continue
            st = entry.stat(follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode):
                plan.skipped.append(f"{entry.name}: not a regular file")
                continue
            day = ndjson_files.day_of(entry.name)
            if day is None:
                plan.skipped.append(f"{entry.name}: no valid date in the name")
                continue
            newest_record = datetime.combine(day + timedelta(days=1), time(0), UTC)
            rotated = not ndjson_files.is_live(entry.name)
            if newest_record <= cutoff and (not rotated or st.st_mtime <= cutoff.timestamp()):
                plan.delete.append(Candidate(entry.name, day, st.st_size, st.st_ino))
    plan.delete.sort(key=lambda c: (c.day, c.name))
    plan.skipped.sort()
    return plan


def write_archive(dir_fd: int, plan: Plan, archive: Path) -> None:
    """tar.gz of the planned files, read through O_NOFOLLOW descriptors; complete and verified
    before it appears under its name, and never replacing an existing file."""
    archive = archive.absolute()
    fd, tmp = tempfile.mkstemp(dir=archive.parent, prefix=f".{archive.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as raw:
            with tarfile.open(fileobj=raw, mode="w:gz") as tar:
                for c in plan.delete:
                    src = os.open(c.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
                    with os.fdopen(src, "rb") as fh:
                        st = os.fstat(fh.fileno())
                        info = tarfile.TarInfo(c.name)
                        info.size, info.mtime, info.mode = st.st_size, int(st.st_mtime), stat.S_IMODE(st.st_mode)
                        tar.addfile(info, fh)
            raw.flush()
            os.fsync(raw.fileno())
        with tarfile.open(tmp, "r:gz") as tar:
            members = {m.name: m.size for m in tar.getmembers()}
        if members != {c.name: c.size for c in plan.delete}:
            raise OSError(f"archive check failed: {tmp} does not hold the planned files")
        os.link(tmp, archive)  # fails if the archive exists: never overwrite an earlier one
    finally:
        os.unlink(tmp)


def apply_plan(plan: Plan, archive: Path | None) -> int:
    """Archive (if asked) then delete; a file that changed since it was listed is left alone."""
    dir_fd = os.open(plan.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if archive is not None and plan.delete:
            try:
                write_archive(dir_fd, plan, archive)
            except OSError as exc:
                _error(f"cannot archive to {archive}: {exc.strerror or exc}; nothing deleted")
                return EX_FAILURE
            print(f"archived {len(plan.delete)} file(s) to {archive}")
        failed = 0
        for c in plan.delete:
            try:
                st = os.stat(c.name, dir_fd=dir_fd, follow_symlinks=False)
                if not stat.S_ISREG(st.st_mode) or (st.st_ino, st.st_size) != (c.inode, c.size):
                    print(f"kept {c.name}: changed since it was listed")
                    continue
                os.unlink(c.name, dir_fd=dir_fd)
                print(f"deleted {c.name}")
            except OSError as exc:
                failed += 1
                _error(f"cannot delete {c.name}: {exc.strerror}")
        return EX_FAILURE if failed else EX_OK
    finally:
        os.close(dir_fd)


def run_prune(directory: Path, older_than: timedelta, *, apply: bool, archive: Path | None,
              now: datetime | None = None) -> int:
    label = f"{older_than.days}d"
    if not directory.is_dir():
        _error(f"output directory {directory} does not exist or is not a directory")
        return EX_FAILURE
    if archive is not None and not archive.name.endswith((".tar.gz", ".tgz")):
        _error(f"--archive {archive}: the name must end in .tar.gz")
        return EX_FAILURE
    if archive is not None and (archive.exists() or archive.is_symlink()):
        _error(f"--archive {archive} already exists; not overwriting it")
        return EX_FAILURE
    plan = make_plan(directory, older_than, now)
    for why in plan.skipped:
        print(f"skipped {why}")
    summary = (f"{len(plan.delete)} file(s), {plan.total_bytes} bytes, older than {label} "
               f"(records before {plan.cutoff:%Y-%m-%dT%H:%M:%SZ}) in {directory}")
    if not plan.delete:
        print(f"nothing older than {label} in {directory}")
        return EX_OK
    if not apply:
        for c in plan.delete:
            print(f"would delete {c.name} ({c.size} bytes)")
        then = f"archive them to {archive} and delete them" if archive else "delete them"
        print(f"dry run: {summary}; run again with --apply to {then}")
        return EX_OK
    rc = apply_plan(plan, archive)
    print(("pruned " if rc == 0 else "pruned with errors: ") + summary)
    return rc


def _error(message: str) -> None:
    print(f"tta-carbon: error: {message}", file=sys.stderr)
