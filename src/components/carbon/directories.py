"""The output and state directories: created if missing, and proved writable before the first record."""

from __future__ import annotations

import fcntl
import os
import pwd
import uuid
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


class OutputDirUnwritable(Exception):
    """The output directory cannot take records; the message names it and why."""


class DirectoryInUse(Exception):
    """Another daemon holds the directory's lock; the message names the directory and its pid."""


LOCK_NAME = ".tta-carbon.lock"


class DirectoryLock:
    """An exclusive ``flock`` on ``<directory>/.tta-carbon.lock``, held while the daemon runs.

    Two daemons on one state directory would issue the same seq numbers and double every
    figure ``tta-carbon report`` adds up. The kernel drops the lock when its holder exits
    (``kill -9`` included), so a stale lock file never blocks a start; the file holds the
    holder's pid only so the refusal can name it.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._fd: int | None = None

    def acquire(self) -> DirectoryLock:
        """Take the lock; raises DirectoryInUse (naming the holder) or OSError."""
        path = self.directory / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise DirectoryInUse(f"{self.directory} is in use by another tta-carbon (pid {holder}); stop it, "
                                 "or give this one its own output_dir and state_dir") from None
        except OSError:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the descriptor releases the lock


def probe_writable(directory: Path) -> None:
    """Exclusive-create a uniquely named file: a planted symlink can never redirect the probe."""
    why = _probe(directory)
    if why is not None:
        raise OutputDirUnwritable(f"cannot write to {directory}: {why}")


def _probe(directory: Path) -> str | None:
    """None when a file could be created (and removed) in ``directory``; else why not (strerror)."""
    probe = directory / f".write-probe-{os.getpid()}-{uuid.uuid4().hex}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return None


@dataclass(frozen=True, slots=True)
class Account:
    """A user to prove a directory writable for: the identity the daemon runs under (systemd's User=)."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]  # supplementary groups, as initgroups() (and systemd) give them

    @classmethod
    def lookup(cls, name: str) -> Account | None:
        """The account from the user database; None when there is no such user."""
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            return None
        return cls(name, pw.pw_uid, pw.pw_gid, tuple(os.getgrouplist(name, pw.pw_gid)))


def probe_writable_as(directory: Path, account: Account | None) -> None:
    """``probe_writable`` with ``account``'s uid, gid and groups (None, or ourselves: in this process).

    Root passes every permission check, so a probe run as root says nothing about the
    service user. A forked child drops to the account (setgroups, setgid, setuid: for good,
    in the child only) and runs the same exclusive-create probe; this process keeps its
    identity. Needs root for any other account (PermissionError otherwise). Raises
    OutputDirUnwritable naming the directory, the account and why; OSError when the child
    could not switch identity or report.
    """
    if account is None or account.uid == os.geteuid():
        probe_writable(directory)
        return
    if os.geteuid() != 0:
        raise PermissionError(f"probing {directory} as {account.name} needs root")
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        # `tta-carbon check` is single-threaded here; in a threaded caller (tests) the child is still
        # safe: it takes no lock another thread could hold (no import, no logging), only syscalls.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: a few syscalls, then _exit; never returns into the caller's code
        status = 2
        try:
            os.close(read_end)
            try:
                os.setgroups(list(account.groups))
                os.setgid(account.gid)
                os.setuid(account.uid)
            except OSError as exc:
                report = f"error:cannot switch to {account.name}: {exc.strerror}"
            else:
                why = _probe(directory)
                report = "ok:" if why is None else f"unwritable:{why}"
            os.write(write_end, report.encode("utf-8", "replace")[:4096])
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    chunks = []
    try:
        while chunk := os.read(read_end, 4096):
            chunks.append(chunk)
    finally:
        os.close(read_end)
        _, wait_status = os.waitpid(pid, 0)
    kind, _, detail = b"".join(chunks).decode("utf-8", "replace").partition(":")
    if kind == "ok" and os.waitstatus_to_exitcode(wait_status) == 0:
        return
    if kind == "unwritable":
        raise OutputDirUnwritable(f"cannot write to {directory} as {account.name} (uid {account.uid}): {detail}")
    raise OSError(detail or f"the probe as {account.name} exited with status {os.waitstatus_to_exitcode(wait_status)}")


def prepare(directories: Iterable[Path]) -> None:
    """Create each directory and prove it writable; raises OutputDirUnwritable or OSError."""
    directories = list(directories)
    for directory in directories:
        directory.mkdir(parents=True, exist_ok=True)
    for directory in directories:
        probe_writable(directory)
