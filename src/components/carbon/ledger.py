"""Totals that survive restarts: one small JSON state file, replaced atomically."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from src.components.carbon import ndjson_files
from src.components.carbon.record import Totals

STATE_FILE = "carbon_state.json"
STATE_VERSION = 1


class LedgerOrigin(Enum):
    """Where the totals at start-up came from."""

    FRESH = "fresh"  # no state file: zero
    STATE = "state"  # the state file
    RECORD_AHEAD = "record_ahead"  # the newest record, one ahead of the state file (killed between the two)
    REBUILT = "rebuilt"  # state file damaged: the record with the highest seq
    ZERO_AFTER_DAMAGE = "zero_after_damage"  # state file damaged and no readable record


@dataclass(frozen=True, slots=True)
class LedgerLoad:
    totals: Totals
    origin: LedgerOrigin
    where: str  # the file the totals came from ("" for FRESH and ZERO_AFTER_DAMAGE)
    damage: str = ""  # "state file X is damaged (why); kept as Y" when the state file was unreadable

    @property
    def damaged(self) -> bool:
        return bool(self.damage)

    @property
    def note(self) -> str:
        """One line for the start-up log."""
        seq = self.totals.seq
        match self.origin:
            case LedgerOrigin.FRESH:
                return "no state file; totals start at zero"
            case LedgerOrigin.STATE:
                return f"totals continue from {self.where} (seq {seq})"
            case LedgerOrigin.RECORD_AHEAD:
                return f"totals continue from {self.where} (seq {seq}; state file was one record behind)"
            case LedgerOrigin.REBUILT:
                return f"{self.damage}; totals rebuilt from the record with the highest seq ({seq}, {self.where})"
            case LedgerOrigin.ZERO_AFTER_DAMAGE:
                return f"{self.damage}; no readable records; totals start at zero"


@dataclass(frozen=True, slots=True)
class SaveStats:
    errors: int = 0
    last_error: str = ""  # "" once a save succeeds again


class Ledger:
    def __init__(self, state_dir: Path, records_dir: Path | None = None) -> None:
        self.path = state_dir / STATE_FILE
        # The NDJSON records carry cumulative totals too: with them a damaged state file is
        # rebuilt instead of restarting from zero, and a record whose state save was cut
        # short by a crash is not counted twice.
        self.records_dir = records_dir
        self.stats = SaveStats()

    def load(self) -> LedgerLoad:
        """Saved totals and where they came from.

        A damaged file is kept aside (never deleted) so an operator can inspect it.
        """
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return LedgerLoad(Totals(), LedgerOrigin.FRESH, "")
        try:
            data = json.loads(raw)
            if data.get("version") != STATE_VERSION:
                raise ValueError(f"unsupported state version {data.get('version')!r}")
            totals = Totals.from_dict(data["totals"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            kept = self.path.with_name(f"{STATE_FILE}.corrupt-{int(time.time())}")
            os.replace(self.path, kept)
            damage = f"state file {self.path} is damaged ({exc}); kept as {kept.name}"
            found = self._latest_record(all_files=True)
            if found is None:
                return LedgerLoad(Totals(), LedgerOrigin.ZERO_AFTER_DAMAGE, "", damage)
            rebuilt, where = found
            return LedgerLoad(rebuilt, LedgerOrigin.REBUILT, where, damage)
        found = self._latest_record(all_files=False)
        if found is not None:
            newer, where = found
            # Killed between appending record N and saving state N: the record is the truth.
            if newer.seq == totals.seq + 1 and all(
                newer.energy_j[c] >= totals.energy_j[c] for c in totals.energy_j
            ):
                return LedgerLoad(newer, LedgerOrigin.RECORD_AHEAD, where)
        return LedgerLoad(totals, LedgerOrigin.STATE, str(self.path))

    def _latest_record(self, *, all_files: bool) -> tuple[Totals, str] | None:
        """Cumulative totals of the record with the highest seq (the newest live file only, or all)."""
        if self.records_dir is None:
            return None
        try:
            if all_files:
                files = ndjson_files.list_files(self.records_dir)
            else:
                newest = ndjson_files.newest_live_file(self.records_dir)
                files = [newest] if newest is not None else []
        except OSError:
            return None
        best: tuple[Totals, str] | None = None
        for path in files:
            try:
                lines = ndjson_files.read_lines(path)
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

    def save(self, totals: Totals) -> bool:
        """temp + fsync + rename: a crash leaves either the old or the new file, never half of one.

        Returns whether it worked; a failure is counted in ``stats`` (the records still have the totals).
        """
        try:
            self._write(totals)
        except OSError as exc:
            self.stats = SaveStats(self.stats.errors + 1, f"state file {self.path}: {exc.strerror}")
            return False
        if self.stats.last_error:
            self.stats = SaveStats(self.stats.errors, "")
        return True

    def _write(self, totals: Totals) -> None:
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
