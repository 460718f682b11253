"""A released migration is never edited: sql/released.sha256 records every numbered migration as released
(`sha256sum` format, so `cd sql && sha256sum -c released.sha256` checks it too), and this test fails when a
recorded one changes or disappears, or when a new one is not recorded yet. 001, 003 and 006 were rewritten
and 002, 007, 008 and 009 deleted after release, which `SUPERSEDED_CHECKSUMS` in pipeline/core/db.py still
accepts for databases migrated by 0.1; that list may shrink, never grow."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from conftest import REPO

from pipeline.core.db import SUPERSEDED_CHECKSUMS, discover_migrations

SQL = REPO / "sql"
RECORD_NAME = "released.sha256"
LINE = re.compile(r"^([0-9a-f]{64}) [ *](\S+\.sql)$")


def recorded_migrations(record: Path) -> dict[str, str]:
    """File name -> sha256, from a `sha256sum` listing."""
    recorded: dict[str, str] = {}
    for number, line in enumerate(record.read_text(encoding="utf-8").splitlines(), 1):
        match = LINE.match(line)
        if not match:
            raise ValueError(f"{record.name} line {number} is not `SHA256  NNN_name.sql`: {line!r}")
        if match.group(2) in recorded:
            raise ValueError(f"{match.group(2)} is recorded twice in {record.name}")
        recorded[match.group(2)] = match.group(1)
    return recorded


def release_problems(sql: Path) -> list[str]:
    """What breaks the rule in ``sql``: a recorded migration edited or deleted, a new one not recorded, or
    numbered at or below the last released one (a deleted number may be recorded as applied in old databases)."""
    recorded = recorded_migrations(sql / RECORD_NAME)
    if not recorded:
        return [f"{sql / RECORD_NAME} records no migration"]
    present = {m.path.name: m for m in discover_migrations(sql)}  # Migration.checksum: the migrator's sha256
    top = max(int(name.split("_", 1)[0]) for name in recorded)
    instead = (f"a released migration is never edited or deleted: restore it and add a new numbered migration "
               f"(sql/NNN_name.sql, numbered above {top:03d}) that makes the change")
    problems = [f"released migration {name} deleted; {instead}" for name in sorted(set(recorded) - set(present))]
    problems += [f"released migration {name} edited; {instead}"
                 for name in sorted(set(recorded) & set(present)) if present[name].checksum != recorded[name]]
    for name in sorted(set(present) - set(recorded)):
        if present[name].version <= top:
            problems.append(f"{name} is numbered at or below the last released migration ({top:03d}): number it above")
        else:
            problems.append(f"migration {name} is not recorded as released: once final, record it in the change "
                            f"that adds it with `cd sql && sha256sum {name} >> {RECORD_NAME}`")
    return problems


def test_released_migrations_are_unchanged_present_and_recorded():
    assert release_problems(SQL) == []


def test_each_breach_of_the_rule_is_named(tmp_path):
    """The check on a copy of sql/: an edited, a deleted, an unrecorded and a reused-number migration."""
    sql = tmp_path / "sql"
    shutil.copytree(SQL, sql)
    first, second = sorted(recorded_migrations(sql / RECORD_NAME))[:2]
    with (sql / first).open("a", encoding="utf-8") as f:
        f.write("\n-- an edit after release\n")
    (sql / second).unlink()
    top = max(m.version for m in discover_migrations(sql))
    (sql / f"{top + 1:03d}_new_table.sql").write_text("create table t (x int);\n", encoding="utf-8")
    problems = release_problems(sql)
    assert len(problems) == 3, problems
    assert problems[0].startswith(f"released migration {second} deleted;") and "add a new numbered migration" in problems[0]
    assert problems[1].startswith(f"released migration {first} edited;") and "add a new numbered migration" in problems[1]
    assert f"{top + 1:03d}_new_table.sql is not recorded as released" in problems[2] and "sha256sum" in problems[2]
    (sql / f"{top + 1:03d}_new_table.sql").rename(sql / "002_reused.sql")
    assert any(p.startswith("002_reused.sql is numbered at or below") for p in release_problems(sql))


def test_no_new_superseded_checksum():
    """Editing a migration and accepting its old checksum is how 001, 003 and 006 were papered over."""
    assert set(SUPERSEDED_CHECKSUMS) <= {1, 3, 6}, (
        f"SUPERSEDED_CHECKSUMS grew to {sorted(SUPERSEDED_CHECKSUMS)}: add a new numbered migration instead")
