"""The NDJSON sink: appends each record as one whole line to its day's file (``ndjson_files`` names it)."""

from __future__ import annotations

import json
import os
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from src.components.carbon.files import open_append
from src.components.carbon.ndjson_files import file_name
from src.components.carbon.record import EmissionsRecord

FILE_MODE = 0o644
# Records kept in memory while the disk refuses them (full, read-only, deleted dir).
# At 15 s intervals this is 10 days of records: about 230 MB of RAM at the cap when each record
# carries its per-unit split (~4 KB), a few MB without attribution.
MAX_PENDING = 57_600


@dataclass
class WriteStats:
    written: int = 0
    write_errors: int = 0
    dropped: int = 0
    last_error: str = ""


class NdjsonSink:
    """Appends records; survives the file being renamed or deleted under it (logrotate)."""

    def __init__(self, output_dir: Path, max_pending: int = MAX_PENDING) -> None:
        self.output_dir = output_dir
        self.stats = WriteStats()
        self._pending: deque[tuple[str, bytes]] = deque()
        self._max_pending = max_pending
        self._fd: int | None = None
        self._fd_path: Path | None = None
        self._expected_size = 0  # the open file's size after our last append

    @property
    def pending(self) -> int:
        return len(self._pending)

    def write(self, record: EmissionsRecord) -> bool:
        """Queue the record and flush the queue in order; False if anything is still queued."""
        line = json.dumps(record.to_json_dict(), separators=(",", ":"), allow_nan=False) + "\n"
        self._pending.append((file_name(record.interval_end[:10]), line.encode()))
        if self.flush():
            return True
        while len(self._pending) > self._max_pending:
            self._pending.popleft()  # the bound is what keeps a months-long outage from eating RAM
            self.stats.dropped += 1
        return False

    def flush(self) -> bool:
        while self._pending:
            name, data = self._pending[0]
            try:
                self._append(self.output_dir / name, data)
            except OSError as exc:
                self.stats.write_errors += 1
                self.stats.last_error = f"{exc.strerror or exc} ({self.output_dir / name})"
                self._close()
                return False
            self._pending.popleft()
            self.stats.written += 1
        self.stats.last_error = ""
        return True

    def _append(self, path: Path, data: bytes) -> None:
        fd = self._open(path)
        start = os.fstat(fd).st_size
        if start != self._expected_size:
            # Someone else changed the file (truncated it in place, or appended): never glue a
            # record onto a cut line.
            self._repair_tail(fd)
            start = os.fstat(fd).st_size
        try:
            written = os.write(fd, data)
            if written != len(data):
                raise OSError(28, "short write (disk full?)")
        except OSError:
            # Never leave half a line behind: a reader must see whole records only.
            try:
                os.ftruncate(fd, start)
            except OSError:
                pass
            raise
        self._expected_size = start + written

    def _open(self, path: Path) -> int:
        if self._fd is not None and self._fd_path == path and self._still_linked(path):
            return self._fd
        self._close()
        if not self.output_dir.is_dir():
            # Someone removed the directory: recreate it rather than lose records.
            self.output_dir.mkdir(parents=True, exist_ok=True)
        fd = open_append(path, FILE_MODE, follow_symlinks=False)  # FIFOs, devices, symlinks refused
        try:
            self._repair_tail(fd)
            self._expected_size = os.fstat(fd).st_size
        except OSError:
            os.close(fd)
            raise
        self._fd = fd
        self._fd_path = path
        return self._fd

    def _repair_tail(self, fd: int) -> None:
        """Cut a torn last line left by a previous writer that was killed mid-write.

        A SIGKILL (or power loss) can end a write(2) at a page boundary, leaving part of a
        line with no newline; the next record would be glued onto it. Such a record never
        reached the state file either (it is saved after the line), so dropping it keeps
        records and totals consistent.
        """
        size = os.fstat(fd).st_size
        if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
            return
        end = size
        keep = 0
        while end > 0:
            start = max(0, end - 65536)
            chunk = os.pread(fd, end - start, start)
            nl = chunk.rfind(b"\n")
            if nl >= 0:
                keep = start + nl + 1
                break
            end = start
        os.ftruncate(fd, keep)

    def _still_linked(self, path: Path) -> bool:
        # logrotate renames the file: keep writing to the old inode and records vanish into the archive.
        try:
            on_disk = os.lstat(path)  # a symlink put in the file's place is not our file
        except OSError:
            return False
        mine = os.fstat(self._fd)  # type: ignore[arg-type]
        return (on_disk.st_dev, on_disk.st_ino) == (mine.st_dev, mine.st_ino)

    def _close(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
        self._fd = None
        self._fd_path = None

    def close(self) -> None:
        self._close()

