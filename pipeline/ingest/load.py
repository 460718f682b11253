"""Stage `ingest`: an export becomes accounts, per-run snapshots, posts and quarantine rows.

Readers stream records; they are loaded with COPY, in batches, into temporary staging tables, and
moved into place by set-based SQL at the end. Memory stays bounded by one batch whatever the
file size, and duplicate detection (the same account or post twice in one export) happens in the
database, where the first occurrence wins and the others are quarantined naming both places.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator

import sqlalchemy as sa

from pipeline.config import Settings
from pipeline.core.bulk import copy_rows
from pipeline.core.db import transaction
from pipeline.core.progress import progress
from pipeline.errors import UserError
from pipeline.ingest import quarantine
from pipeline.ingest.archives import UnsafeMember
from pipeline.ingest.exports import ExportSpec, combined_format, tag_ref
from pipeline.ingest.ledger import IngestLedger, counting
from pipeline.ingest.readers import AccountRecord, ExportDate, ExportReader, PostRecord, Rejection, resolve_reader
from pipeline.ingest.readers.base import Ignored
from pipeline.ingest.readers.base import APPROXIMATE_ID, FieldError
from pipeline.ingest.readers.files import ExportFiles

SNAPSHOT_COLUMNS = (
    "handle", "display_name", "bio", "url", "location", "created_at", "followers", "following", "posts",
    "language", "avatar_ref", "source_file", "source_locator",
)
POST_COLUMNS = ("post_id", "posted_at", "reposted_id", "quoted_id", "replied_id", "urls", "hashtags", "text",
                "source_file", "source_locator")
_STAGE_ACCOUNTS = ("seq", "account_key", "platform", "account_id", *SNAPSHOT_COLUMNS)
_STAGE_POSTS = ("seq", "account_key", *POST_COLUMNS)


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestResult:
    export_format: str
    accounts: int
    rejected: int
    posts: int = 0
    warnings: tuple[str, ...] = ()  # the ledger's: files that do not balance, or that yielded nothing


def ingest_export(settings: Settings, run_key: str, export_path: Path, fmt: str = "auto",
                  batch_size: int = 5000) -> IngestResult:
    """Stream one export into this run's snapshots and posts (`ingest_exports` with one export)."""
    reader = resolve_reader(export_path, fmt)
    return ingest_exports(settings, run_key, [ExportSpec(export_path, reader.name)], batch_size)


def _relabelled(item: Any, label: str) -> Any:
    """A record of one export among several: its file named under the export's label (the ledger and the
    quarantine keep each export's files apart), its local avatar reference tagged with the export."""
    if not label or isinstance(item, ExportDate):
        return item
    changes: dict[str, Any] = {"source_file": f"{label}/{item.source_file}"}
    if isinstance(item, AccountRecord) and item.avatar_ref:
        changes["avatar_ref"] = tag_ref(label, item.avatar_ref)
    return replace(item, **changes)


def ingest_exports(settings: Settings, run_key: str, exports: list[ExportSpec],
                   batch_size: int = 5000) -> IngestResult:
    """Stream the run's exports, in their pinned (sorted) order, into this run's snapshots and posts,
    replacing the run's previous ones.

    One transaction: a reader that fails outright leaves the previous rows of the run intact.
    Accounts are created on first sight; ``first_seen_run`` is the smallest run key that saw them, so it
    does not depend on the order a backfill ran its days in. With several exports each keeps its own
    ledger rows (``pipeline.ingest.exports``); an account in two of them is kept from the first.
    """
    readers = [(spec, resolve_reader(spec.path, spec.format)) for spec in exports]
    with transaction(settings) as conn, counting() as ledger:
        conn.execute(sa.text("set local work_mem = '128MB'"))  # the distinct-on sort of the accounts stays in memory
        posts_stage = _create_staging(conn, run_key)
        quarantine.clear_stage(conn, run_key, "ingest")
        accounts: list[tuple] = []
        posts: list[tuple] = []
        rejected: list[Rejection] = []
        stated: ExportDate | None = None
        seq = 0
        for spec, reader in readers:
            with counting() as own:  # the readers count their files under their own names
                for item in progress(_read_or_explain(reader, spec.path), desc="ingest", unit="rec"):
                    own.take(item)
                    item = _relabelled(item, spec.label)
                    seq += 1
                    if isinstance(item, Ignored):
                        continue
                    if isinstance(item, ExportDate):
                        stated = item if stated is None or item.at > stated.at else stated
                    elif isinstance(item, AccountRecord):
                        accounts.append((seq, item.account_key, item.platform, item.account_id,
                                         *(getattr(item, c) for c in SNAPSHOT_COLUMNS)))
                        if len(accounts) >= batch_size:
                            copy_rows(conn, "_stage_accounts", _STAGE_ACCOUNTS, accounts)
                            accounts = []
                    elif isinstance(item, PostRecord):
                        posts.append((seq, item.account_key, *(getattr(item, c) for c in POST_COLUMNS)))
                        if len(posts) >= batch_size:
                            copy_rows(conn, posts_stage, _STAGE_POSTS, posts)
                            posts = []
                    else:
                        rejected.append(item)
                        if len(rejected) >= batch_size:
                            quarantine.add_rejections(conn, run_key, "ingest", rejected)
                            rejected = []
            for name, entry in own.files.items():
                ledger.files[f"{spec.label}/{name}" if spec.label else name] = entry
        copy_rows(conn, "_stage_accounts", _STAGE_ACCOUNTS, accounts)
        copy_rows(conn, posts_stage, _STAGE_POSTS, posts)
        quarantine.add_rejections(conn, run_key, "ingest", rejected)
        _resolve_approximate_ids(conn, posts_stage)
        n_accounts, n_posts = _publish(conn, run_key, posts_stage)
        _record_export_date(conn, run_key, exports[0].path, stated, n_accounts)
        n_rejected = quarantine.count_stage(conn, run_key, "ingest")
        warnings = _record_ledger(conn, run_key, ledger)
    for line in warnings:
        log.warning("%s", line)
    return IngestResult(combined_format(exports), n_accounts, n_rejected, n_posts, tuple(warnings))


def _record_ledger(conn: sa.Connection, run_key: str, ledger: IngestLedger) -> list[str]:
    """Settle the ledger with the rows the database kept per file, store it (replacing the run's previous
    one) and return its warnings."""
    k = {"k": run_key}
    stored: dict[str, int] = {}
    for sql in ("select source_file, count(*) from account_snapshots where run_key = :k group by 1",
                "select source_file, count(*) from posts where run_key = :k group by 1"):
        for name, n in conn.execute(sa.text(sql), k):
            stored[name] = stored.get(name, 0) + n
    quarantined = dict(conn.execute(sa.text(
        "select source_file, count(*) from quarantine where run_key = :k and stage = 'ingest' group by 1"), k).all())
    ledger.settle(stored, quarantined)
    conn.execute(sa.text("delete from ingest_ledger where run_key = :k"), k)
    rows = [{"k": run_key, "f": name, "seen": e.seen, "inferred": e.inferred, "stored": e.stored,
             "quarantined": e.quarantined, "ignored": json.dumps(dict(sorted(e.ignored.items()))),
             "repaired": e.repaired, "notes": e.notes, "balanced": e.gap() == 0}
            for name, e in sorted(ledger.files.items())]
    if rows:
        conn.execute(sa.text(
            "insert into ingest_ledger (run_key, source_file, seen, inferred, stored, quarantined, ignored, repaired,"
            " notes, balanced) values (:k, :f, :seen, :inferred, :stored, :quarantined, cast(:ignored as jsonb),"
            " :repaired, :notes, :balanced)"), rows)
    return ledger.warnings(run_key)


def load_ledger(conn: sa.Connection, run_key: str) -> dict[str, dict]:
    """The run's ingest ledger, file -> counts, as the summary and the report show it."""
    rows = conn.execute(sa.text(
        "select source_file, seen, inferred, stored, quarantined, ignored, repaired, notes, balanced from ingest_ledger"
        " where run_key = :k order by source_file"), {"k": run_key})
    return {r.source_file: {"seen": r.seen, "inferred": r.inferred, "stored": r.stored, "quarantined": r.quarantined,
                            "ignored": dict(r.ignored or {}), "repaired": r.repaired, "notes": list(r.notes or []),
                            "balanced": r.balanced}
            for r in rows}


def _read_or_explain(reader: ExportReader, export_path: Path) -> Iterator[AccountRecord | PostRecord | Rejection]:
    """A file the reader cannot read at all (no header, not a zip) is the user's to fix: say so."""
    try:
        yield from reader.read(export_path)
    except (FieldError, UnsafeMember, OSError, UnicodeError, zipfile.BadZipFile) as exc:
        raise UserError(f"cannot read {export_path} as {reader.name}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a reader bug: one line here, the traceback in the log
        log.warning("reader %s failed on %s", reader.name, export_path, exc_info=True)
        raise UserError(f"cannot read {export_path} as {reader.name}: unexpected {type(exc).__name__}: "
                        f"{str(exc)[:200]} (a reader bug: the traceback is in the log; please report it with "
                        "the file)") from None


def _resolve_approximate_ids(conn: sa.Connection, posts_stage: str) -> None:
    """Ids a reader marked approximate (``~N``: written as a float by the export) become the export's
    post id that rounds to the same double, when exactly one does; else the float's integer N."""
    if conn.execute(sa.text(
            f"select not exists (select 1 from {posts_stage} where left(reposted_id, 1) = :m"
            " or left(quoted_id, 1) = :m or left(replied_id, 1) = :m)"), {"m": APPROXIMATE_ID}).scalar_one():
        return
    conn.execute(sa.text(
        "create temporary table _post_doubles on commit drop as"
        f" select post_id::float8 as d, min(post_id) as post_id, count(distinct post_id) as n from {posts_stage}"
        " where post_id ~ '^[0-9]{1,25}$' group by 1"))
    conn.execute(sa.text("create index on _post_doubles (d)"))
    for column in ("reposted_id", "quoted_id", "replied_id"):
        conn.execute(sa.text(
            f"update {posts_stage} p set {column} = coalesce("
            f"  (select d.post_id from _post_doubles d where d.d = substr(p.{column}, 2)::float8 and d.n = 1),"
            f"  substr(p.{column}, 2))"
            f" where left(p.{column}, 1) = :m and substr(p.{column}, 2) ~ '^[0-9]{{1,25}}$'"), {"m": APPROXIMATE_ID})


def _record_export_date(conn: sa.Connection, run_key: str, export_path: Path, stated: ExportDate | None,
                        n_accounts: int) -> None:
    """The as-of of account ages: the date the export states; for a single-account export without one,
    its newest post, else its file time; none otherwise (ages then count from the newest account)."""
    at, source = (stated.at, stated.source) if stated else (None, None)
    if at is None and n_accounts == 1:
        at = conn.execute(sa.text("select max(posted_at) from posts where run_key = :k"), {"k": run_key}).scalar_one()
        source = "newest post"
        if at is None:
            with ExportFiles(export_path) as files:
                at, source = files.modified(), "export file time"
    conn.execute(sa.text("update runs set export_as_of = :at, export_as_of_source = :src where run_key = :k"),
                 {"at": at, "src": source if at else None, "k": run_key})


def _create_staging(conn: sa.Connection, run_key: str) -> str:
    """Temporary staging for accounts; for posts, the table that becomes the run's partition of
    ``posts`` (returned: its name is this session's). Posts are copied once, into their final table:
    the checks that keep the first occurrence and quarantine the rest run on it, in place."""
    conn.execute(sa.text(
        "create temporary table _stage_accounts (seq bigint not null, account_key text not null, platform text not null,"
        " account_id text not null, handle text, display_name text, bio text, url text, location text,"
        " created_at timestamptz, followers bigint, following bigint, posts bigint, language text, avatar_ref text,"
        " source_file text not null, source_locator text not null) on commit drop"))
    stage = "posts_stage_" + str(conn.execute(sa.text("select pg_backend_pid()")).scalar_one())
    bound = _sql_literal(conn, run_key)
    conn.execute(sa.text(f"drop table if exists {stage}"))
    # run_key by default (readers do not repeat it); the check constraint is the partition's bound, so
    # ATTACH PARTITION need not scan the table to prove it
    run_key_column = f"run_key text not null default {bound} check (run_key = {bound})"
    columns = _POSTS_PARTITION_COLUMNS.replace("run_key text not null", run_key_column, 1)
    conn.execute(sa.text(f"create table {stage} ({columns}, seq bigint not null)"))
    return stage


def _sql_literal(conn: sa.Connection, value: str) -> str:
    """``value`` quoted by the server, for DDL that takes no bind parameters (a default, a partition bound)."""
    return conn.execute(sa.text("select quote_literal(:v)"), {"v": value}).scalar_one()


def _set_changed(table: str, columns: tuple[str, ...]) -> str:
    """The DO UPDATE clause of an upsert that rewrites a row only when one of its columns changed."""
    names = ", ".join(columns)
    new = ", ".join(f"excluded.{c}" for c in columns)
    old = ", ".join(f"{table}.{c}" for c in columns)
    return f"({names}) = ({new}) where ({old}) is distinct from ({new})"


PUBLISH_LOCK_NAMESPACE = 7_311_904  # pg_advisory_xact_lock(ns, 1): ingests publish one at a time


def _publish(conn: sa.Connection, run_key: str, posts_stage: str,
             timings: dict[str, float] | None = None) -> tuple[int, int]:
    """Move staged rows into place: first occurrence wins, later duplicates and orphan posts are quarantined."""
    k = {"k": run_key}
    snap = ", ".join(SNAPSHOT_COLUMNS)
    # One publish at a time (to the end of the ingest's transaction): a run's upsert locks the accounts it
    # changes, and attaching its posts partition checks the foreign key by locking the accounts it
    # references, so two runs publishing at once (a concurrent backfill) could each wait on the other.
    conn.execute(sa.text("select pg_advisory_xact_lock(:ns, 1)"), {"ns": PUBLISH_LOCK_NAMESPACE})
    conn.execute(sa.text("analyze _stage_accounts"))
    conn.execute(sa.text(
        "insert into accounts (account_key, platform, account_id, first_seen_run)"
        " select distinct on (account_key) account_key, platform, account_id, :k from _stage_accounts"
        " order by account_key, seq on conflict (account_key) do update set first_seen_run = excluded.first_seen_run"
        # the smallest run key that saw it (for nightly keys: the earliest day), whatever order runs ran in
        " where excluded.first_seen_run < accounts.first_seen_run"), k)
    # Upsert that writes only changed rows, then drop the rows the export no longer has: re-ingesting an
    # identical export reads but does not rewrite (no dead tuples, no index churn).
    conn.execute(sa.text(
        f"insert into account_snapshots (run_key, account_key, {snap})"
        f" select distinct on (account_key) :k, account_key, {snap} from _stage_accounts order by account_key, seq"
        f" on conflict (run_key, account_key) do update set {_set_changed('account_snapshots', SNAPSHOT_COLUMNS)}"), k)
    conn.execute(sa.text(
        "delete from account_snapshots s where s.run_key = :k"
        " and not exists (select 1 from _stage_accounts t where t.account_key = s.account_key)"), k)
    accounts = conn.execute(sa.text("select count(*) from account_snapshots where run_key = :k"), k).scalar_one()
    quarantine.add_from_query(
        conn, run_key, "ingest",
        "select s.source_file, s.source_locator,"
        "   'duplicate account ' || s.account_key || ' (first at ' || f.source_file || ' ' || f.source_locator || ')',"
        "   json_build_object('account_key', s.account_key, 'handle', s.handle, 'display_name', s.display_name,"
        "        'bio', s.bio)::text"
        " from _stage_accounts s join account_snapshots f on f.run_key = :k and f.account_key = s.account_key"
        " where (s.source_file, s.source_locator) <> (f.source_file, f.source_locator)", k)
    posts = publish_posts(conn, run_key, posts_stage, timings)
    return accounts, posts


# The columns of a posts partition, as in sql/016_posts_by_run.sql: ATTACH PARTITION refuses a table whose
# columns differ, so a drift between the two fails every ingest test.
_POSTS_PARTITION_COLUMNS = (
    "run_key text not null, account_key text not null, post_id text not null, posted_at timestamptz,"
    " reposted_id text, quoted_id text, replied_id text, urls text[] not null default '{}',"
    " hashtags text[] not null default '{}', text text, source_file text not null, source_locator text not null")


def posts_partition_name(run_key: str) -> str:
    """The run's partition of ``posts`` is named after its key's md5, as migration 016 names them."""
    return "posts_" + hashlib.md5(run_key.encode()).hexdigest()[:16]


def posts_partition(conn: sa.Connection, run_key: str) -> str | None:
    """The name of the run's partition of ``posts``, if it has one."""
    return conn.execute(sa.text(
        "select c.relname from pg_inherits i join pg_class c on c.oid = i.inhrelid"
        " where i.inhparent = 'posts'::regclass and c.relname = :n"), {"n": posts_partition_name(run_key)}
    ).scalar_one_or_none()


def publish_posts(conn: sa.Connection, run_key: str, posts_stage: str,
                  timings: dict[str, float] | None = None) -> int:
    """Make the staged posts the run's partition of ``posts``, replacing its previous one; returns the
    run's post count. First occurrence (by seq) wins; later duplicates and posts of accounts the export
    does not have are quarantined and deleted from the stage.

    The stage is a plain table with no index and no foreign-key trigger while it is filled. Its primary
    key is then built by one sort, which also proves there are no duplicates (the common case: no
    second pass for them); orphans are found by one anti-join; ATTACH PARTITION then checks each
    foreign key with one query and takes the bound from the stage's check constraint. Rerunning with
    the same export gives the same rows (a new partition, the old one dropped: no dead tuples). Only
    the swap locks ``posts`` itself, to the end of the caller's transaction."""
    timings = {} if timings is None else timings
    k = {"k": run_key}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = timings.get(name, 0.0) + now - clock
        clock = now

    # without statistics the planner may take a large table for a small one and join it by nested
    # loop (a stall of tens of minutes, found by bench/ingest_throughput.py's CAR run)
    conn.execute(sa.text(f"analyze {posts_stage}"))
    lap("analyze_s")
    _quarantine_orphan_posts(conn, run_key, posts_stage)
    lap("orphans_s")
    conn.execute(sa.text("set local maintenance_work_mem = '256MB'"))  # the primary key's sort
    pkey = f"{posts_stage}_pkey"
    add_key = f"alter table {posts_stage} add constraint {pkey} primary key (run_key, account_key, post_id)"
    try:
        with conn.begin_nested():
            conn.execute(sa.text(add_key))
    except sa.exc.IntegrityError:  # a post twice in the export: keep the first, then build the key
        _quarantine_duplicate_posts(conn, run_key, posts_stage)
        conn.execute(sa.text(add_key))
    lap("primary_key_s")
    conn.execute(sa.text(f"alter table {posts_stage} drop column seq"))  # a partition has the parent's columns
    name = posts_partition_name(run_key)
    old = posts_partition(conn, run_key)
    if old is not None:
        conn.execute(sa.text("lock table posts in access exclusive mode"))  # detach needs it: take it once
        conn.execute(sa.text(f'alter table posts detach partition "{old}"'))
        conn.execute(sa.text(f'drop table "{old}"'))
    conn.execute(sa.text("delete from posts_default where run_key = :k"), k)  # rows written there directly
    conn.execute(sa.text(f'alter table {posts_stage} rename to "{name}"'))
    conn.execute(sa.text(f'alter index {pkey} rename to "{name}_pkey"'))
    conn.execute(sa.text(f'alter table posts attach partition "{name}" for values in ({_sql_literal(conn, run_key)})'))
    lap("attach_s")  # the existing key attached; each foreign key checked by one query
    return conn.execute(sa.text(f'select count(*) from "{name}"')).scalar_one()


def _quarantine_orphan_posts(conn: sa.Connection, run_key: str, posts_stage: str) -> None:
    """Posts by accounts the export does not have are quarantined and dropped.

    Counted, not tested with EXISTS: a LIMIT-1 plan probes an index once per post (6 s at 1M posts, where
    the whole hash anti-join takes 0.3 s); against the analysed accounts stage, not the snapshots just
    upserted, whose statistics do not know this run's rows yet."""
    orphans = (f"from {posts_stage} p where not exists (select 1 from _stage_accounts a"
               " where a.account_key = p.account_key)")
    if not conn.execute(sa.text(f"select count(*) {orphans}")).scalar_one():
        return
    quarantine.add_from_query(
        conn, run_key, "ingest",
        "select p.source_file, p.source_locator, 'post ' || p.post_id || ' by ' || p.account_key"
        f" || ', which is not among the export''s accounts', coalesce(p.text, '') {orphans}")
    conn.execute(sa.text(f"delete {orphans}"))


def _quarantine_duplicate_posts(conn: sa.Connection, run_key: str, posts_stage: str) -> None:
    """Every later occurrence of a post (same account and id) is quarantined, naming the first, and dropped."""
    conn.execute(sa.text(
        "create temporary table _later_posts on commit drop as"
        " select p.ctid as tid, f.source_file as first_file, f.source_locator as first_locator"
        f" from (select account_key, post_id, min(seq) as seq from {posts_stage} group by 1, 2"
        "       having count(*) > 1) d"
        f" join {posts_stage} f on (f.account_key, f.post_id, f.seq) = (d.account_key, d.post_id, d.seq)"
        f" join {posts_stage} p on (p.account_key, p.post_id) = (d.account_key, d.post_id) and p.seq > d.seq"))
    quarantine.add_from_query(
        conn, run_key, "ingest",
        "select p.source_file, p.source_locator,"
        "   'duplicate post ' || p.post_id || ' (first at ' || l.first_file || ' ' || l.first_locator || ')',"
        f"   coalesce(p.text, '') from {posts_stage} p join _later_posts l on p.ctid = l.tid")
    conn.execute(sa.text(f"delete from {posts_stage} p using _later_posts l where p.ctid = l.tid"))
    conn.execute(sa.text("drop table _later_posts"))
