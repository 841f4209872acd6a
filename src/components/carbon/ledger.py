"""Totals that survive restarts: one small JSON state file, replaced atomically."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, replace
from datetime import datetime
from enum import Enum
from pathlib import Path

from src.components.carbon import ndjson_files
from src.components.carbon.files import NotARegularFile, read_small_file
from src.components.carbon.record import EmissionsRecord, Totals

STATE_FILE = "carbon_state.json"
STATE_VERSION = 1
# A gap between runs longer than this many intervals is named in the start-up log (every gap is
# counted in Totals.unmeasured_s, a clean restart's few seconds included).
NOTABLE_GAP_INTERVALS = 1.5


class LedgerOrigin(Enum):
    """Where the totals at start-up came from."""

    FRESH = "fresh"  # no state file and no records: zero
    STATE = "state"  # the state file
    RECORD_AHEAD = "record_ahead"  # the newest record, ahead of the state file (killed, or saves failed)
    RECORDS_ONLY = "records_only"  # no state file: the record with the highest seq
    REBUILT = "rebuilt"  # state file damaged: the record with the highest seq
    ZERO_AFTER_DAMAGE = "zero_after_damage"  # state file damaged and no readable record


@dataclass(frozen=True, slots=True)
class LastRecord:
    """The newest record the totals include: when it ended, and whether its run stopped cleanly."""

    interval_end: str  # RFC 3339 UTC, as in the record
    final: bool  # the run's final record (SIGTERM/SIGINT); False: the run was killed or lost power after it

    @property
    def end_epoch(self) -> float | None:
        try:
            return datetime.fromisoformat(self.interval_end).timestamp()
        except (TypeError, ValueError):
            return None

    def to_dict(self) -> dict[str, object]:
        return {"interval_end": self.interval_end, "final": self.final}

    @classmethod
    def from_record(cls, rec: object) -> LastRecord | None:
        """From a record's (or the state file's) ``interval_end`` and ``final``; None when unusable."""
        if not isinstance(rec, dict) or not isinstance(rec.get("interval_end"), str):
            return None
        last = cls(rec["interval_end"], rec.get("final") is True)
        return last if last.end_epoch is not None else None


@dataclass(frozen=True, slots=True)
class LedgerLoad:
    totals: Totals
    origin: LedgerOrigin
    where: str  # the file the totals came from ("" for FRESH and ZERO_AFTER_DAMAGE)
    damage: str = ""  # "state file X is damaged (why); kept as Y" when the state file was unreadable
    last: LastRecord | None = None  # the newest record the totals include; None: none, or unknown (old state file)
    gap_s: float | None = None  # unmeasured seconds from ``last`` to this run's first interval (``with_gap``)
    gap_notable: bool = False  # the start-up log names the gap (long, or the previous run was killed)
    behind: int = 0  # RECORD_AHEAD: how many records the state file had missed

    @property
    def damaged(self) -> bool:
        return bool(self.damage)

    def with_gap(self, first_interval_start: float, interval_s: float) -> LedgerLoad:
        """This load, knowing when this run's first interval began (wall clock, epoch seconds).

        The gap since the last record is unmeasured: the previous run's restart delay after a
        clean stop, or the time it was dead after a kill. A clock stepped back counts as 0.
        """
        last = self.last
        end = last.end_epoch if last is not None else None
        if last is None or end is None:
            return self
        gap = max(0.0, first_interval_start - end)
        notable = gap > NOTABLE_GAP_INTERVALS * interval_s or not last.final
        return replace(self, gap_s=gap, gap_notable=notable)

    @property
    def note(self) -> str:
        """One line for the start-up log."""
        return self._origin_note() + self._gap_note()

    def _origin_note(self) -> str:
        seq = self.totals.seq
        match self.origin:
            case LedgerOrigin.FRESH:
                return "no state file; totals start at zero"
            case LedgerOrigin.STATE:
                return f"totals continue from {self.where} (seq {seq})"
            case LedgerOrigin.RECORD_AHEAD:
                missed = "one record" if self.behind == 1 else f"{self.behind} records"
                return f"totals continue from {self.where} (seq {seq}; state file was {missed} behind)"
            case LedgerOrigin.RECORDS_ONLY:
                return f"no state file; totals continue from the record with the highest seq ({seq}, {self.where})"
            case LedgerOrigin.REBUILT:
                return f"{self.damage}; totals rebuilt from the record with the highest seq ({seq}, {self.where})"
            case LedgerOrigin.ZERO_AFTER_DAMAGE:
                return f"{self.damage}; no readable records; totals start at zero"

    def _gap_note(self) -> str:
        if not self.gap_notable or self.gap_s is None or self.last is None:
            return ""
        how = ("the previous run stopped cleanly (final record)" if self.last.final else
               "the previous run ended without a final record (killed: watchdog, SIGKILL, power loss)")
        return (f"; {self.gap_s:.1f}s unmeasured since the last record ({self.last.interval_end}): {how}; "
                f"unmeasured_s now {self.totals.unmeasured_s + self.gap_s:.1f}")


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
            raw = read_small_file(self.path)
        except FileNotFoundError:
            # Records outlive a lost state file: continue from them, never reissue their seq.
            found = self._latest_record()
            if found is None:
                return LedgerLoad(Totals(), LedgerOrigin.FRESH, "")
            rebuilt, where, last = found
            return LedgerLoad(rebuilt, LedgerOrigin.RECORDS_ONLY, where, last=last)
        except NotARegularFile as exc:  # a FIFO or a device in its place: reading it would hang or never end
            return self._set_aside(exc.strerror)
        except ValueError as exc:  # far larger than any state file
            return self._set_aside(str(exc))
        try:
            data = json.loads(raw)
            if data.get("version") != STATE_VERSION:
                raise ValueError(f"unsupported state version {data.get('version')!r}")
            totals = Totals.from_dict(data["totals"])
        except (ValueError, KeyError, TypeError, AttributeError, OverflowError) as exc:
            return self._set_aside(str(exc))
        # Written by this version with each save; absent from older state files.
        saved_last = LastRecord.from_record(data.get("last"))
        found = self._latest_record()
        if found is not None:
            newer, where, last = found
            # Records are appended before the state is saved, so a newer record is the truth:
            # killed between the two (one behind), or saves refused while appends went on (many).
            # Taking the state file then would reissue the records' seq numbers and lose their energy.
            if newer.seq > totals.seq:
                if last is None or (saved_last is not None and (saved_last.end_epoch or 0.0) > (last.end_epoch or 0.0)):
                    last = saved_last  # the gap runs from the later of the two measured moments
                return LedgerLoad(newer, LedgerOrigin.RECORD_AHEAD, where, last=last,
                                  behind=newer.seq - totals.seq)
            # The last measured moment is the later of the state file's and the newest record's: an older
            # state file has no "last", one left behind by failing saves an old one; records left over
            # from before the state file was reset are older than its "last", and lose.
            if newer.seq >= totals.seq and last is not None and (
                    saved_last is None or (last.end_epoch or 0.0) > (saved_last.end_epoch or 0.0)):
                saved_last = last
        return LedgerLoad(totals, LedgerOrigin.STATE, str(self.path), last=saved_last)

    def _set_aside(self, why: str) -> LedgerLoad:
        """A damaged state file: keep it aside (never deleted), rebuild from the newest record."""
        stamp = int(time.time())
        kept = self.path.with_name(f"{STATE_FILE}.corrupt-{stamp}")
        n = 1
        while kept.exists() or kept.is_symlink():  # a second damage within the same second keeps both
            kept = self.path.with_name(f"{STATE_FILE}.corrupt-{stamp}.{n}")
            n += 1
        os.replace(self.path, kept)  # the state dir is ours alone (DirectoryLock): no race here
        damage = f"state file {self.path} is damaged ({why}); kept as {kept.name}"
        found = self._latest_record()
        if found is None:
            return LedgerLoad(Totals(), LedgerOrigin.ZERO_AFTER_DAMAGE, "", damage)
        rebuilt, where, last = found
        return LedgerLoad(rebuilt, LedgerOrigin.REBUILT, where, damage, last)

    def _latest_record(self) -> tuple[Totals, str, LastRecord | None] | None:
        """Cumulative totals of the record with the highest seq, from the tail of every plain file.

        Each file is appended in seq order, so its last whole record is its newest; every file
        is looked at because a clock stepped back can put newer records under an older date, and
        a copy logrotate just renamed holds the newest record until the next one is written.
        Compressed copies are read whole, and only when no plain file has a record.
        """
        if self.records_dir is None:
            return None
        try:
            files = ndjson_files.list_files(self.records_dir)
        except OSError:
            return None
        plain = [p for p in files if not p.name.endswith(".gz")]
        best = self._best_of(plain, tail=True)
        if best is None:
            best = self._best_of([p for p in files if p.name.endswith(".gz")], tail=False)
        return best

    @staticmethod
    def _best_of(files: list[Path], *, tail: bool) -> tuple[Totals, str, LastRecord | None] | None:
        best: tuple[Totals, str, LastRecord | None] | None = None
        for path in files:
            try:
                lines = ndjson_files.tail_lines(path) if tail else ndjson_files.read_lines(path)
            except (OSError, EOFError, ValueError):  # ValueError: zlib/gzip data that is not gzip
                continue
            for raw in reversed(lines) if tail else lines:
                try:
                    rec = json.loads(raw)
                    t = rec["totals"]
                    totals = Totals.from_dict({"seq": rec["seq"], "energy_j": t["energy_j"],
                                               "emissions_g": t["emissions_g"],
                                               "unmeasured_s": t.get("unmeasured_s", 0.0),
                                               "measured_s": t.get("measured_s", 0.0)})
                except (ValueError, KeyError, TypeError, AttributeError, OverflowError):
                    continue
                if best is None or totals.seq >= best[0].seq:
                    best = totals, path.name, LastRecord.from_record(rec)
                if tail:
                    break  # the file's last whole record is its newest
        return best

    def save(self, totals: Totals, record: EmissionsRecord | None = None) -> bool:
        """temp + fsync + rename: a crash leaves either the old or the new file, never half of one.

        ``record``: the record these totals end with; its ``interval_end`` and ``final`` are kept so
        the next start can count the gap to its first interval. Returns whether it worked; a
        failure is counted in ``stats`` (the records still have the totals).
        """
        try:
            self._write(totals, LastRecord(record.interval_end, record.final) if record is not None else None)
        except OSError as exc:
            self.stats = SaveStats(self.stats.errors + 1, f"state file {self.path}: {exc.strerror}")
            return False
        if self.stats.last_error:
            self.stats = SaveStats(self.stats.errors, "")
        return True

    def _write(self, totals: Totals, last: LastRecord | None = None) -> None:
        tmp = self.path.with_name(f".{STATE_FILE}.{os.getpid()}.tmp")
        state: dict[str, object] = {"version": STATE_VERSION, "totals": totals.to_dict()}
        if last is not None:
            state["last"] = last.to_dict()
        payload = json.dumps(state, separators=(",", ":")).encode()
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
