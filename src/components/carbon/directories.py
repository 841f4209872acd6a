"""The output and state directories: created if missing, and proved writable before the first record."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from pathlib import Path


class OutputDirUnwritable(Exception):
    """The output directory cannot take records; the message names it and why."""


def probe_writable(directory: Path) -> None:
    """Exclusive-create a uniquely named file: a planted symlink can never redirect the probe."""
    probe = directory / f".write-probe-{os.getpid()}-{uuid.uuid4().hex}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputDirUnwritable(f"cannot write to {directory}: {exc.strerror}") from None


def prepare(directories: Iterable[Path]) -> None:
    """Create each directory and prove it writable; raises OutputDirUnwritable or OSError."""
    directories = list(directories)
    for directory in directories:
        directory.mkdir(parents=True, exist_ok=True)
    for directory in directories:
        probe_writable(directory)
