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
    def __init__(self, state_dir: Path, records_dir: Path | None = None) -> None:
        self.path = state_dir / STATE_FILE
        # The NDJSON records carry cumulative totals too: with them a damaged state file is
        # rebuilt instead of restarting from zero, and a record whose state save was cut
        # short by a crash is not counted twice.
        self.records_dir = records_dir

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
            totals = Totals.from_dict(data["totals"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            kept = self.path.with_name(f"{STATE_FILE}.corrupt-{int(time.time())}")
            os.replace(self.path, kept)
            damaged = f"state file {self.path} is damaged ({exc}); kept as {kept.name}"
            found = self._latest_record(all_files=True)
            if found is None:
                return Totals(), f"{damaged}; no readable records; totals start at zero"
            rebuilt, where = found
            return rebuilt, f"{damaged}; totals rebuilt from the record with the highest seq ({rebuilt.seq}, {where})"
        found = self._latest_record(all_files=False)
        if found is not None:
            newer, where = found
            # Killed between appending record N and saving state N: the record is the truth.
            if newer.seq == totals.seq + 1 and all(
                newer.energy_j[c] >= totals.energy_j[c] for c in totals.energy_j
            ):
                return newer, f"totals continue from {where} (seq {newer.seq}; state file was one record behind)"
        return totals, f"totals continue from {self.path} (seq {totals.seq})"

    def _latest_record(self, *, all_files: bool) -> tuple[Totals, str] | None:
        """Cumulative totals of the record with the highest seq (the newest file only, or all)."""
        if self.records_dir is None:
            return None
        from src.components.carbon.report import iter_files, read_lines

        try:
            files = iter_files(self.records_dir)
        except OSError:
            return None
        if not all_files:
            files = [p for p in files if p.name.endswith(".json")][-1:]
        best: tuple[Totals, str] | None = None
        for path in files:
            try:
                lines = read_lines(path)
            except (OSError, EOFError):
                continue
            for raw in lines:
                try:
                    rec = json.loads(raw)
                    t = rec["totals"]
                    totals = Totals.from_dict({"seq": rec["seq"], "energy_j": t["energy_j"],
                                               "emissions_g": t["emissions_g"]})
                except (ValueError, KeyError, TypeError, AttributeError):
                    continue
                if best is None or totals.seq >= best[0].seq:
                    best = totals, path.name
        return best

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
