"""Dashboard views (sql/views/dashboards.sql) after real audits, and the read-only role.

One database for the module: a nightly-style run with an as-of time and an ad-hoc run of the demo
export, audited with the real pipeline, then the views are checked against the tables they summarise.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter

import psycopg2.errors
import pytest
import sqlalchemy as sa
from conftest import REPO

pytestmark = pytest.mark.slow  # two full audits of the demo export

VIEWS = ("dashboard_account_risk", "dashboard_cluster_summary", "dashboard_daily_audit", "dashboard_flag_queue",
         "dashboard_ingest_ledger")
NIGHTLY = "nightly:2026-03-04"
ADHOC = "dash-adhoc"


@pytest.fixture(scope="module")
def audited(server_url, demo_data, tmp_path_factory):
    from pipeline.audit import audit_export
    from pipeline.config import load_settings
    from pipeline.core.db import dispose_engines
    from pipeline.flags.rules import list_flags, set_flag_status

    name = "t_" + uuid.uuid4().hex[:12]
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'create database "{name}"'))
    admin.dispose()
    url = sa.engine.make_url(server_url).set(database=name).render_as_string(hide_password=False)
    settings = load_settings(env={}, shipped_detector=False, home=tmp_path_factory.mktemp("dash-home"), database_url=url)
    detector = str(demo_data["detector"])
    audit_export(settings, demo_data["export"], run_key=NIGHTLY, detector=detector, as_of="2026-03-05T00:00:00+00:00")
    audit_export(settings, demo_data["export"], run_key=ADHOC, detector=detector)
    escalated = list_flags(settings, run_key=ADHOC)[-1]  # the lowest-scored flag, so priority must reorder
    set_flag_status(settings, escalated["flag_id"], "escalated", note="send to policy")
    yield {"settings": settings, "url": url, "escalated": escalated["flag_id"]}
    dispose_engines()


def _rows(settings, sql: str, **params) -> list[dict]:
    from pipeline.core.db import transaction

    with transaction(settings) as conn:
        return [dict(r) for r in conn.execute(sa.text(sql), params).mappings()]


def test_account_risk_view_matches_signals_and_flags(audited):
    from pipeline.flags.rules import list_flags

    settings = audited["settings"]
    for run_key in (NIGHTLY, ADHOC):
        view = {r["account_key"]: r for r in _rows(settings, "select * from dashboard_account_risk where run_key = :k", k=run_key)}
        signals = {r["account_key"]: r for r in _rows(settings, "select * from account_signals where run_key = :k", k=run_key)}
        assert set(view) == set(signals) and len(view) == 341
        assert all(view[k]["risk"] == signals[k]["risk"] and view[k]["avatar_synthetic"] == signals[k]["avatar_label"]
                   for k in view)
        for column in ("avatar_probability_max", "near_duplicate_count", "avatar_changes", "handle_entropy",
                       "bio_default", "link_domain", "posts_per_day", "contributions"):  # 009: the signals of 006
            assert all(view[k][column] == signals[k][column] for k in view), column
        assert any(r["near_duplicate_count"] for r in view.values())  # the demo's near-duplicate ring shows
        flagged = {f"{m['platform']}:{m['account_id']}": f["flag_id"] for f in list_flags(settings, run_key=run_key)
                   for m in f["members"]}
        assert {k: r["flag_id"] for k, r in view.items() if r["flag_id"]} == flagged
        assert flagged, "the demo export's planted networks raise flags"
        clustered = {r["account_key"] for r in _rows(settings, "select account_key from cluster_members where run_key = :k",
                                                      k=run_key)}
        assert {k for k, r in view.items() if r["cluster_id"]} == clustered


def test_cluster_summary_view_has_every_cluster_and_its_flag(audited):
    settings = audited["settings"]
    view = {r["cluster_id"]: r for r in _rows(settings, "select * from dashboard_cluster_summary where run_key = :k", k=ADHOC)}
    clusters = {r["cluster_id"]: r for r in _rows(settings, "select * from clusters where run_key = :k", k=ADHOC)}
    assert set(view) == set(clusters)
    for cid, row in view.items():
        assert row["size"] == clusters[cid]["size"]
        assert row["synthetic_share"] == clusters[cid]["features"]["synthetic_share"]
        assert row["burst_share"] == clusters[cid]["features"]["burst_share"]
    flags = {r["cluster_id"]: r["flag_id"] for r in _rows(settings, "select * from flags where run_key = :k", k=ADHOC)}
    assert {cid: r["flag_id"] for cid, r in view.items() if r["flagged"]} == flags
    assert all(r["flag_id"] is None for r in view.values() if not r["flagged"])


def test_daily_audit_view_counts_per_day_kind_and_platform(audited):
    settings = audited["settings"]
    rows = _rows(settings, "select * from dashboard_daily_audit order by audit_date, run_kind")
    nightly = [r for r in rows if r["run_kind"] == "nightly"]
    adhoc = [r for r in rows if r["run_kind"] == "adhoc"]
    assert len(nightly) == 1 and len(adhoc) == 1
    # a nightly run counts on its data interval's day, not on the day it ran
    assert str(nightly[0]["audit_date"]) == "2026-03-04"
    started = _rows(settings, "select (started_at at time zone 'UTC')::date as d from runs where run_key = :k", k=ADHOC)[0]["d"]
    assert adhoc[0]["audit_date"] == started
    for row, run_key in ((nightly[0], NIGHTLY), (adhoc[0], ADHOC)):
        signals = _rows(settings, "select * from account_signals where run_key = :k", k=run_key)
        synthetic = sum(1 for s in signals if s["avatar_label"])
        scored = sum(1 for s in signals if s["avatar_probability"] is not None)
        assert row["platform"] == "demo" and row["runs"] == 1
        assert row["accounts"] == len(signals) == 341
        assert row["avatars_scored"] == scored and row["synthetic_avatars"] == synthetic
        assert float(row["synthetic_rate"]) == pytest.approx(round(synthetic / scored, 4))
        flagged = _rows(settings, "select count(distinct m.account_key) as n from flags f join cluster_members m"
                                  " on m.run_key = f.run_key and m.cluster_id = f.cluster_id where f.run_key = :k",
                        k=run_key)[0]["n"]
        assert flagged > 0 and row["flagged_accounts"] == flagged
        assert float(row["flagged_rate"]) == pytest.approx(round(flagged / 341, 4))
        assert row["high_risk_accounts"] == sum(1 for s in signals if s["risk"] >= 0.5)


def test_ingest_ledger_view_matches_the_tables_per_file(audited):
    """One row per run and export file; the counts are the tables' own (snapshots and posts naming the file,
    its quarantine rows), and the demo's bad row shows as a quarantined unit of a balanced file."""
    settings = audited["settings"]
    for run_key in (NIGHTLY, ADHOC):
        rows = _rows(settings, "select * from dashboard_ingest_ledger where run_key = :k", k=run_key)
        assert rows and all(r["balanced"] and not r["gave_nothing"] for r in rows)
        for r in rows:
            stored = _rows(settings, "select (select count(*) from account_snapshots where run_key = :k and source_file = :f)"
                                     " + (select count(*) from posts where run_key = :k and source_file = :f) as n",
                           k=run_key, f=r["source_file"])[0]["n"]
            quarantined = _rows(settings, "select count(*) as n from quarantine where run_key = :k and stage = 'ingest'"
                                          " and source_file = :f", k=run_key, f=r["source_file"])[0]["n"]
            assert (r["stored"], r["quarantined"]) == (stored, quarantined)
            assert r["seen"] + r["inferred"] == r["stored"] + r["quarantined"] + r["ignored"]
        total = _rows(settings, "select count(*) as n from quarantine where run_key = :k and stage = 'ingest'",
                      k=run_key)[0]["n"]
        assert sum(r["quarantined"] for r in rows) == total > 0  # the demo export's bad row, in its file's row


def test_flag_queue_puts_escalated_first_and_keeps_sizes(audited):
    settings = audited["settings"]
    queue = _rows(settings, "select * from dashboard_flag_queue where run_key = :k order by priority, score desc", k=ADHOC)
    flags = _rows(settings, "select * from flags where run_key = :k", k=ADHOC)
    assert len(queue) == len(flags) >= 1
    assert queue[0]["flag_id"] == audited["escalated"] and queue[0]["status"] == "escalated"
    assert queue[0]["status_note"] == "send to policy" and queue[0]["priority"] == 1
    assert all(r["status"] == "new" and r["priority"] == 2 for r in queue[1:])
    sizes = Counter(r["cluster_id"] for r in _rows(settings, "select cluster_id from cluster_members where run_key = :k",
                                                    k=ADHOC))
    assert {r["cluster_id"]: r["size"] for r in queue} == {f["cluster_id"]: sizes[f["cluster_id"]] for f in flags}
    assert all(set(r["rules"]) == set(r["rule_reasons"]) for r in queue)


@pytest.fixture
def reader(audited):
    """A psycopg2 connection acting as profile_audit_reader (autocommit: each statement stands alone)."""
    engine = sa.create_engine(audited["url"], poolclass=sa.pool.NullPool)
    proxy = engine.raw_connection()  # keep the pool's proxy alive, or it closes the connection
    conn = proxy.driver_connection
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("set role profile_audit_reader")
    yield conn
    proxy.close()
    engine.dispose()


def _denied(conn, sql: str, also=()) -> bool:
    """True when the statement is refused: no privilege (or one of the `also` errors, e.g. a view not updatable)."""
    with conn.cursor() as cur:
        try:
            cur.execute(sql)
        except (psycopg2.errors.InsufficientPrivilege, *also):
            return True
    return False


def test_reader_role_selects_views_only_and_writes_nothing(audited, reader):
    with reader.cursor() as cur:
        cur.execute("select current_user")
        assert cur.fetchone()[0] == "profile_audit_reader"
        for view in VIEWS:
            cur.execute(f"select count(*) from {view}")
            assert cur.fetchone()[0] > 0, view
        cur.execute("select tablename from pg_tables where schemaname = 'public' order by 1")
        tables = [r[0] for r in cur.fetchall()]
    assert {"runs", "accounts", "account_snapshots", "account_signals", "edges", "flags", "images"} <= set(tables)
    for table in tables:
        assert _denied(reader, f'select * from "{table}" limit 1'), f"reader can read table {table}"
        assert _denied(reader, f'delete from "{table}"'), f"reader can delete from {table}"
    assert _denied(reader, "insert into runs (run_key, kind) values ('x', 'adhoc')")
    assert _denied(reader, "update flags set status = 'dismissed'")
    assert _denied(reader, "truncate flags")
    not_updatable = (psycopg2.errors.ObjectNotInPrerequisiteState,)
    for view in VIEWS:
        assert _denied(reader, f"delete from {view}", also=not_updatable), view
    assert _denied(reader, "update dashboard_flag_queue set status = 'dismissed'", also=not_updatable)
    assert _denied(reader, "create table public.reader_scratch (x int)")
    # the pipeline's functions run with the caller's rights: the reader cannot recompute (rewrite) signals
    from pipeline.config import Policy

    policy = json.dumps(Policy().signal_arguments()).replace("'", "''")
    assert _denied(reader, f"select compute_account_signals('{ADHOC}', '{policy}'::jsonb, null, null, array['{ADHOC}'])")
    assert _denied(reader, "select grant_dashboard_reader()")
    with reader.cursor() as cur:  # nothing the reader tried changed anything
        cur.execute("select count(*) from dashboard_flag_queue where status = 'dismissed'")
        assert cur.fetchone()[0] == 0


def test_reader_grants_are_idempotent_per_database(audited):
    """Every test database runs the migration while the cluster-wide role already exists."""
    settings = audited["settings"]
    assert _rows(settings, "select grant_dashboard_reader() as ok")[0]["ok"] is True
    grants = _rows(settings, "select table_name from information_schema.role_table_grants"
                             " where grantee = 'profile_audit_reader' order by 1")
    assert [g["table_name"] for g in grants] == sorted(VIEWS)


def test_documented_example_queries_run_as_the_reader(audited, reader):
    """docs/reporting.md's example queries (new flags per night, accounts by risk band, label rate per
    detector over time), read from the doc so they cannot drift, answer with the reader's rights."""
    import re

    doc = (REPO / "docs" / "reporting.md").read_text()
    section = doc.split("### Example queries", 1)[1].split("They are plain views", 1)[0]
    queries = re.findall(r"```sql\n(.*?)```", section, re.S)
    assert len(queries) == 3
    with reader.cursor() as cur:
        for sql in queries:
            cur.execute(sql)
            rows = cur.fetchall()
            assert rows, f"no rows for: {sql}"
        cur.execute(queries[1])
        bands = {(run, band): n for run, band, n in cur.fetchall()}
        cur.execute("select run_key, count(*) from dashboard_account_risk group by 1")
        assert {run: sum(n for (r, _), n in bands.items() if r == run) for run, _ in bands} == dict(cur.fetchall())
        cur.execute(queries[2])
        assert all(0 <= float(rate) <= 1 for _, _, _, rate in cur.fetchall() if rate is not None)


def test_every_grafana_panel_query_runs_as_the_reader(audited, reader):
    """The shipped dashboard (docker/grafana) works with the reader's rights against real audit data."""
    import re

    from test_docker import dashboard_queries

    queries = dashboard_queries()
    assert queries
    with reader.cursor() as cur:
        for sql in queries:
            # Grafana macros: the time filter becomes "any time", as if the range covered every audit
            cur.execute(re.sub(r"\$__timeFilter\([^()]*(?:\([^()]*\))?[^()]*\)", "true", sql))
            rows = cur.fetchall()
            assert rows, f"no rows for: {sql}"
            assert "$__" not in cur.query.decode()
