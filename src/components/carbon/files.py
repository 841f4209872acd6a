"""The one policy for files the daemon reads or appends to: regular files only, bounded, never blocking.

Anything at a configured path may be something else: a FIFO (opening it for reading blocks
until a writer comes; a read-write open of one accepts writes until its buffer fills, then
blocks for good), ``/dev/zero`` (an endless read: MemoryError), a socket, a directory, or a
symlink planted in a writable directory. Every open here is non-blocking, and ``fstat`` on
the open descriptor (not a ``stat`` of the name first, which a swap could race) decides.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

MAX_SMALL_FILE_BYTES = 1 << 20  # settings, profiles, web configs, the state file: a few KB at most


class NotARegularFile(OSError):
    """``strerror`` says what the path is instead (a FIFO, a device, ...)."""


def kind_of(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a directory"
    return "not a regular file"


def _refuse_unless_regular(fd: int) -> None:
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise NotARegularFile(errno.EINVAL, f"is {kind_of(mode)}, not a regular file")


def read_small_file(path: Path, max_bytes: int = MAX_SMALL_FILE_BYTES) -> bytes:
    """The whole file, if it is a regular file (or a character device: ``/dev/null`` is the usual
    "no config") of at most ``max_bytes``; the bound is what stops ``/dev/zero``.

    Raises NotARegularFile, OSError (``strerror`` says why), or ValueError (too large).
    Symlinks are followed: operators link configuration files on purpose.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISCHR(os.fstat(fd).st_mode):
        _refuse_unless_regular(fd)
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"larger than {max_bytes // 1024} KiB; is it the right file?")
    return data


def open_append(path: Path, mode: int, *, follow_symlinks: bool = True) -> int:
    """A descriptor for appending to ``path`` (created with ``mode`` if missing), a regular file.

    ``follow_symlinks=False`` refuses a symlink at the name itself (files in directories
    others may write: the day's records file). Raises NotARegularFile or OSError.
    """
    flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NONBLOCK
    if not follow_symlinks:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, flags, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_symlinks:
            raise NotARegularFile(errno.ELOOP, "is a symbolic link, not a regular file") from None
        raise
    _refuse_unless_regular(fd)
    return fd
