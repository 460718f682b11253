"""The one quarantine insert (pipeline/ingest/quarantine.py): rows from Python and from SQL, per stage, rerun-safe."""

from __future__ import annotations

from pipeline.core import runs
from pipeline.core.db import transaction
from pipeline.ingest import quarantine
from pipeline.ingest.readers.base import EXCERPT_CHARS, Rejection


def _rows(settings, run_key: str) -> list[tuple]:
    return [(r["stage"], r["source_file"], r["locator"], r["reason"], len(r["excerpt"]))
            for r in quarantine.list_quarantine(settings, run_key)]


def test_rejections_and_query_rows_replace_only_their_stage(settings):
    runs.start_run(settings, "q1")
    bad = [Rejection.of("a.csv", "line 3", "bad date", "x" * 2000), Rejection.of("a.csv", "line 3", "bad date", "dup")]
    with transaction(settings) as conn:
        assert quarantine.add_rejections(conn, "q1", "ingest", bad) == 2  # same place and reason: one row kept
        quarantine.add_from_query(conn, "q1", "images",
                                  "select 'b.csv', 'line ' || n, 'avatar ' || n || ' unreadable', repeat('y', 900)"
                                  " from generate_series(1, :n) as n", {"n": 2})
        assert quarantine.count_stage(conn, "q1", "ingest") == 1
    assert _rows(settings, "q1") == [
        ("images", "b.csv", "line 1", "avatar 1 unreadable", EXCERPT_CHARS),  # a query's excerpt is cut here
        ("images", "b.csv", "line 2", "avatar 2 unreadable", EXCERPT_CHARS),
        ("ingest", "a.csv", "line 3", "bad date", EXCERPT_CHARS),
    ]
    with transaction(settings) as conn:  # a rerun of the ingest stage replaces its rows, not the others
        quarantine.replace_stage_rows(conn, "q1", "ingest", [Rejection.of("a.csv", "line 9", "no id", "{}")])
    assert [r[:3] for r in _rows(settings, "q1")] == [
        ("images", "b.csv", "line 1"), ("images", "b.csv", "line 2"), ("ingest", "a.csv", "line 9")]
