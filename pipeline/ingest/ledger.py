"""The ingest ledger: every unit of an export (a record, a line, an activity) is accounted for, per file.

A reader's shared plumbing counts what it *saw* (`saw`: `json_records` counts array elements and JSON
lines, `csv_rows` counts CSV records, the CAR walker counts tree entries), independently of what the
reader then makes of each unit. Ingest counts what came out: records stored, rejections quarantined,
units ignored by reason (`Ignored`: what the format defines as neither an account nor a post), and
reconciles, per file::

    seen + inferred = stored + quarantined + ignored

``inferred`` are accounts known only as the author of posts (no unit of their own). A file whose
ledger does not balance lost something in silence; a file the reader opened that yields nothing
stored is most likely a file it misread. Both are warnings, naming the file and the gap.

The active ledger is a context variable, so the readers' plumbing counts into whichever ingest (or
test) is iterating them, and counts nowhere when none is: readers stay plain generators.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

_ACTIVE: ContextVar["IngestLedger | None"] = ContextVar("ingest_ledger", default=None)


@dataclass
class FileLedger:
    """One file's units: what the reader saw and what became of each."""

    seen: int = 0
    inferred: int = 0
    records: int = 0  # accounts and posts the reader made (before the database's duplicate checks)
    rejected: int = 0  # rejections the reader made
    ignored: Counter = field(default_factory=Counter)  # reason -> units
    repaired: int = 0  # records stored with text repaired (invalid UTF-8 replaced, NUL removed)
    notes: list[str] = field(default_factory=list)  # what the reader found odd about the file (shown as warnings)
    stored: int | None = None  # rows in account_snapshots and posts naming the file (after publish)
    quarantined: int | None = None  # quarantine rows naming the file: the reader's and the database's

    @property
    def ignored_total(self) -> int:
        return sum(self.ignored.values())

    def gap(self) -> int:
        """Units unaccounted for (positive: lost; negative: counted twice); 0 when it balances.
        Before publish, the reader's own outcomes stand in for stored and quarantined."""
        stored = self.records if self.stored is None else self.stored
        quarantined = self.rejected if self.quarantined is None else self.quarantined
        return self.seen + self.inferred - stored - quarantined - self.ignored_total

    def as_dict(self) -> dict[str, Any]:
        return {"seen": self.seen, "inferred": self.inferred, "stored": self.stored, "quarantined": self.quarantined,
                "ignored": dict(sorted(self.ignored.items())), "repaired": self.repaired, "notes": list(self.notes),
                "balanced": self.gap() == 0}


class IngestLedger:
    """Per-file counts for one ingest; `take` each item a reader yields, `settle` with the database's rows."""

    def __init__(self) -> None:
        self.files: dict[str, FileLedger] = {}

    def file(self, source_file: str) -> FileLedger:
        entry = self.files.get(source_file)
        if entry is None:
            entry = self.files[source_file] = FileLedger()
        return entry

    def take(self, item: Any) -> None:
        """Count one reader output: an account or post record, a Rejection or an Ignored."""
        from pipeline.ingest.readers.base import AccountRecord, Ignored, PostRecord, Rejection

        if isinstance(item, AccountRecord):
            entry = self.file(item.source_file)
            entry.records += 1
            entry.inferred += item.inferred
        elif isinstance(item, PostRecord):
            self.file(item.source_file).records += 1
        elif isinstance(item, Rejection):
            self.file(item.source_file).rejected += 1
        elif isinstance(item, Ignored):
            self.file(item.source_file).ignored[item.reason] += 1

    def settle(self, stored: dict[str, int], quarantined: dict[str, int]) -> None:
        """The database's counts per file, after duplicates and orphan posts were quarantined."""
        for name in set(stored) | set(quarantined):
            self.file(name)
        for name, entry in self.files.items():
            entry.stored = stored.get(name, 0)
            entry.quarantined = quarantined.get(name, 0)

    def warnings(self, run_key: str = "KEY") -> list[str]:
        return ledger_warnings({name: entry.as_dict() for name, entry in self.files.items()}, run_key)

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return {name: self.files[name].as_dict() for name in sorted(self.files)}


def ledger_warnings(files: dict[str, dict[str, Any]], run_key: str = "KEY") -> list[str]:
    """One line per file that lost units in silence, or that the reader opened and got nothing stored from."""
    lines: list[str] = []
    for name, row in sorted(files.items()):
        lines.extend(f"{name}: {note}" for note in row.get("notes") or ())
        ignored = sum(row["ignored"].values())
        accounted = (row["stored"] or 0) + (row["quarantined"] or 0) + ignored
        expected = row["seen"] + row["inferred"]
        inferred = f" + {row['inferred']} inferred" if row["inferred"] else ""
        if accounted != expected:
            lines.append(f"ingest ledger of {name} does not balance: {row['seen']} seen"
                         f"{inferred}, but "
                         f"{row['stored'] or 0} stored + {row['quarantined'] or 0} quarantined + {ignored} ignored"
                         f" = {accounted} ({expected - accounted:+d} unaccounted for); please report it with the file")
        elif not row["stored"] and not ignored:
            what = (f"all {row['quarantined']} of its units were quarantined (`profile-audit quarantine --run-key "
                    f"{run_key}` lists them)" if row["quarantined"] else "it held no record")
            lines.append(f"{name} was read but nothing was stored from it: {what}; is it the file you meant?")
    return lines


@contextmanager
def counting() -> Iterator[IngestLedger]:
    """Make a fresh ledger the active one for the readers iterated inside the block."""
    ledger = IngestLedger()
    token = _ACTIVE.set(ledger)
    try:
        yield ledger
    finally:
        _ACTIVE.reset(token)


def saw(source_file: str, units: int = 1) -> None:
    """A reader's plumbing saw ``units`` units of ``source_file`` (0 registers a file that it opened)."""
    ledger = _ACTIVE.get()
    if ledger is not None:
        ledger.file(source_file).seen += units


def note(source_file: str, text: str) -> None:
    """Something a reader found odd about a file that loses nothing but a person should know (a stated
    item count that disagrees with the items read; an archive part missing). Logged, and a warning of
    the run when a ledger is active."""
    import logging

    logging.getLogger("pipeline.ingest").warning("%s: %s", source_file, text)
    ledger = _ACTIVE.get()
    if ledger is not None:
        entry = ledger.file(source_file)
        if len(entry.notes) < MAX_NOTES and text not in entry.notes:
            entry.notes.append(text)


MAX_NOTES = 20  # per file: a note is about the file, not a record (those are quarantine rows)


def repaired(source_file: str) -> None:
    ledger = _ACTIVE.get()
    if ledger is not None:
        ledger.file(source_file).repaired += 1
