"""structlog set-up: JSON lines to stderr (journald) and to a reopenable log file."""

from __future__ import annotations

import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any

import structlog

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR,
          "critical": logging.CRITICAL}
LOG_FILE_MODE = 0o640


class TeeWriter:
    """stderr plus an optional file; the file is reopened on SIGHUP so logrotate can move it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fd: int | None = None
        self.path: Path | None = None
        self.error = ""

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
                self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, LOG_FILE_MODE)
            except OSError as exc:
                # A log file we cannot write must not stop carbon accounting: stderr still reaches journald.
                self.error = f"cannot open log file {path}: {exc.strerror}"

    def write(self, line: str) -> None:
        data = (line + "\n").encode("utf-8", "replace")
        try:
            sys.stderr.buffer.write(data)
            sys.stderr.buffer.flush()
        except (OSError, ValueError):
            pass
        with self._lock:
            if self._fd is not None:
                try:
                    os.write(self._fd, data)
                except OSError as exc:
                    self.error = f"cannot write log file {self.path}: {exc.strerror}"


class _TeeLogger:
    def __init__(self, tee: TeeWriter) -> None:
        self._tee = tee

    def msg(self, message: str) -> None:
        self._tee.write(message)

    log = debug = info = warning = warn = error = critical = exception = fatal = msg


TEE = TeeWriter()


def configure(level: str, log_file: Path | None) -> None:
    TEE.reopen(log_file)
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
            structlog.get_logger(record.name).log(record.levelno, record.getMessage(), logger=record.name)
        except Exception:
            pass


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
