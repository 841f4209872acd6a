"""Totals that survive restarts: one small JSON state file, replaced atomically."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from src.components.carbon.record import Totals

STATE_FILE = "carbon_state.json"
STATE_VERSION = 1


class Ledger:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / STATE_FILE

    def load(self) -> tuple[Totals, str]:
        """Return saved totals and a one-line account of where they came from.

        A damaged file is kept aside (never deleted) so an operator can inspect it.
        """
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return Totals(), "no state file; totals start at zero"
        try:
            data = json.loads(raw)
            if data.get("version") != STATE_VERSION:
                raise ValueError(f"unsupported state version {data.get('version')!r}")
            return Totals.from_dict(data["totals"]), f"totals continue from {self.path} (seq {data['totals']['seq']})"
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            kept = self.path.with_name(f"{STATE_FILE}.corrupt-{int(time.time())}")
            os.replace(self.path, kept)
            return Totals(), f"state file {self.path} is damaged ({exc}); kept as {kept.name}; totals start at zero"

    def save(self, totals: Totals) -> None:
        """temp + fsync + rename: a crash leaves either the old or the new file, never half of one."""
        tmp = self.path.with_name(f".{STATE_FILE}.{os.getpid()}.tmp")
        payload = json.dumps({"version": STATE_VERSION, "totals": totals.to_dict()}, separators=(",", ":")).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            os.write(fd, payload)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        # The rename itself is only durable once the directory entry is on disk.
        dir_fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
