"""structlog set-up: JSON lines to stderr (journald) and to a reopenable log file.

Under systemd each line on stderr starts with its syslog priority, ``<N>`` (systemd's
``SyslogLevelPrefix=``, on by default), so ``journalctl -p warning`` / ``-p err`` select by
level. The prefix goes only to a stderr that *is* the journal (``$JOURNAL_STREAM`` names
its device:inode), never to the log file, a terminal or a pipe.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any

from src.components.carbon.files import open_append
from src.components.carbon.secret import Secret


def _import_structlog_without_rich() -> Any:
    """structlog, imported with ``rich`` hidden from it.

    structlog's ``dev`` module (always imported) loads rich and pygments, when installed, for its
    coloured console renderer; codecarbon installs rich for its CLI. We render JSON only, so that
    is ~5 MB of RSS the daemon would carry for nothing. Hidden only while structlog imports:
    anything that imports rich later gets it.
    """
    hidden = "rich" not in sys.modules
    if hidden:
        sys.modules["rich"] = None  # type: ignore[assignment]  (None: "import rich" raises ImportError)
    try:
        import structlog as module
    finally:
        if hidden:
            del sys.modules["rich"]
    return module


structlog = _import_structlog_without_rich()

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR,
          "critical": logging.CRITICAL}
LOG_FILE_MODE = 0o640
# syslog priorities (sd-daemon.h SD_ERR ...), by structlog method name.
PRIORITY = {"debug": 7, "info": 6, "warning": 4, "warn": 4, "error": 3, "exception": 3, "critical": 2, "fatal": 2}
PRIORITY_INFO = 6


def stream_is_journal(stream: Any) -> bool:
    """True when ``stream`` is the journal stream systemd connected (sd_journal_stream_fd).

    systemd sets ``JOURNAL_STREAM=<st_dev>:<st_ino>`` of that stream; a process whose
    stderr was redirected (or that merely inherited the variable) has a different fd there.
    """
    dev, sep, ino = os.environ.get("JOURNAL_STREAM", "").partition(":")
    if not sep:
        return False
    try:
        st = os.fstat(stream.fileno())
        return (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (OSError, ValueError, AttributeError):
        return False


def console(message: str, priority: int = PRIORITY["error"], stream: Any = None) -> None:
    """One line for a person (``tta-carbon: error: ...``), at ``priority`` when it lands in the journal."""
    stream = sys.stderr if stream is None else stream
    if stream_is_journal(stream):  # journald takes the prefix per line: give every line one
        message = "\n".join(f"<{priority}>{line}" for line in message.split("\n"))
    print(message, file=stream, flush=True)


class TeeWriter:
    """stderr plus an optional file; the file is reopened on SIGHUP so logrotate can move it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fd: int | None = None
        self.path: Path | None = None
        self.error = ""
        self.journal = False  # stderr is the journal: prefix each line there with <priority>
        self.secrets: tuple[Secret, ...] = ()  # scrubbed from every line, whatever quoted them

    def reopen(self, path: Path | None) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            self.path = path
            self.error = ""
            if path is None:
                return
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = open_append(path, LOG_FILE_MODE)  # a FIFO in its place is refused, not blocked on
            except OSError as exc:
                # A log file we cannot write must not stop carbon accounting: stderr still reaches journald.
                self.error = f"cannot open log file {path}: {exc.strerror}"

    def write(self, line: str, priority: int = PRIORITY_INFO) -> None:
        for secret in self.secrets:
            line = secret.scrub(line)
        data = (line + "\n").encode("utf-8", "replace")
        try:
            sys.stderr.buffer.write(b"<%d>" % priority + data if self.journal else data)
            sys.stderr.buffer.flush()
        except (OSError, ValueError):
            pass
        with self._lock:
            if self._fd is not None:
                try:
                    os.write(self._fd, data)
                except OSError as exc:
                    self.error = f"cannot write log file {self.path}: {exc.strerror}"


def _at(priority: int) -> Any:
    def method(self: _TeeLogger, message: str) -> None:
        self._tee.write(message, priority)

    return method


class _TeeLogger:
    """What structlog calls: the method name is the level (``log.warning`` -> ``.warning``)."""

    def __init__(self, tee: TeeWriter) -> None:
        self._tee = tee

    msg = log = _at(PRIORITY_INFO)
    debug, info = _at(PRIORITY["debug"]), _at(PRIORITY["info"])
    warning = warn = _at(PRIORITY["warning"])
    error = exception = _at(PRIORITY["error"])
    critical = fatal = _at(PRIORITY["critical"])


TEE = TeeWriter()


def configure(level: str, log_file: Path | None, secrets: tuple[Secret, ...] = ()) -> None:
    """Log at ``level`` to stderr and ``log_file``; ``secrets`` never appear in a line, in any rendering."""
    TEE.reopen(log_file)
    TEE.journal = stream_is_journal(sys.stderr)
    TEE.secrets = secrets
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=lambda *_: _TeeLogger(TEE),
        cache_logger_on_first_use=False,
    )
    _bridge_stdlib(level)


class _StdlibBridge(logging.Handler):
    """Library loggers (codecarbon) go through the same JSON stream, once."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            # structlog knows the five standard levels only: a custom one (25, 35) counts as the one below.
            level = max([lvl for lvl in _STANDARD if lvl <= record.levelno], default=logging.DEBUG)
            structlog.get_logger(record.name).log(level, record.getMessage(), logger=record.name)
        except Exception:
            pass


_STANDARD = (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL)


def _bridge_stdlib(level: str) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(_StdlibBridge())
    root.setLevel(max(LEVELS[level], logging.WARNING))


def get_logger(**bindings: Any) -> Any:
    # A lazy proxy: it re-reads the configuration on every call, so a level changed
    # by SIGHUP applies to loggers created before the reload (bind() would freeze it).
    return structlog.get_logger(**bindings)
