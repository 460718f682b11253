"""Run bookkeeping: every stage works under a run key, and a rerun of a key replaces its rows.

Run keys: ``nightly:YYYY-MM-DD`` (Airflow data interval), ``investigation:<id>`` (ad-hoc DAG
runs), or ``export:<hash>`` (CLI audits without ``--run-key``: the same export gives the same key).

The run row is the run's single source of truth, pinned at `begin`: export path and format, the
resolved detector id, the network parameters, the shard count, the predecessor (whose cluster ids
and investigator statuses it inherits), the owner and, under Airflow, the dag/run id and try.
Stages read it (`load_context`), never the current configuration.

One owner at a time per run key. While a process works on a run (the whole CLI audit, or one
Airflow task) it holds a session advisory lock on the key (`RunLease`); a second process fails at
once with one line. Between Airflow tasks the lock is free, so the owner's liveness decides: a
`running` run whose lock is free and whose owner is gone is stale, and is marked `failed`.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from pipeline.config import Policy, Settings, complete_run_params
from pipeline.core.db import get_engine, transaction
from pipeline.errors import UserError

KINDS = ("nightly", "investigation", "adhoc")
RUN_LOCK_NAMESPACE = 7_311_902  # first key of pg_advisory_lock(int, int): the run-key locks
STALE_HEARTBEAT_S = 6 * 3600.0  # an Airflow-owned run silent this long is stale (longer than any task timeout)
PREDECESSOR_WAIT_S = float(os.environ.get("PROFILE_AUDIT_PREDECESSOR_WAIT_S", "10800"))
POLL_S = 1.0

OwnerAlive = Callable[[str], bool | None]  # True/False when it can tell, None when it cannot


def default_run_key(export_path: Path | list[Path]) -> str:
    """Hash of the export's file names, sizes and contents' hashes: same export, same key. Several exports
    (one run): each one's files in turn, in sorted path order, so the order they were given in does not
    change the key."""
    digest = hashlib.sha256()
    paths = sorted(set(export_path)) if isinstance(export_path, list) else [export_path]
    for n, root in enumerate(paths):
        if n:
            digest.update(b"\0export\0")
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            digest.update(str(path.relative_to(root.parent if root.is_file() else root)).encode())
            with path.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
    return f"export:{digest.hexdigest()[:16]}"


def kind_of(run_key: str) -> str:
    prefix = run_key.split(":", 1)[0]
    return prefix if prefix in KINDS else "adhoc"


def nightly_day(run_key: str) -> date | None:
    """The day of a ``nightly:YYYY-MM-DD`` key, else None."""
    if kind_of(run_key) != "nightly":
        return None
    try:
        return date.fromisoformat(run_key.split(":", 1)[1])
    except ValueError:
        raise UserError(f"run key {run_key!r}: a nightly key is nightly:YYYY-MM-DD") from None


def previous_nightly_key(run_key: str) -> str | None:
    day = nightly_day(run_key)
    return None if day is None else f"nightly:{day - timedelta(days=1):%Y-%m-%d}"


def cli_owner() -> str:
    """This process as a run owner: host, pid and a random token (pids are reused)."""
    return f"cli:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def lock_id(run_key: str) -> int:
    """The second key of the run's advisory lock: 31 bits of the key's hash."""
    return int.from_bytes(hashlib.sha256(run_key.encode()).digest()[:4], "big") >> 1


@dataclass
class RunLease:
    """A session advisory lock on one run key, held on its own connection while a process works on it.

    Its death (kill -9, OOM, a lost worker) closes the connection and frees the lock, which is how the
    stale-run rule tells a dead owner from a live one. Stage tasks of an Airflow run take it shared (its
    mapped score shards run at once; `check_owner` keeps other runs out); begin and the CLI exclusively.
    """

    settings: Settings
    run_key: str
    owner: str
    shared: bool = False  # the tasks of one Airflow run (mapped score shards) share it; begin and the CLI do not
    _conn: sa.Connection | None = field(default=None, repr=False)

    def acquire(self) -> RunLease:
        conn = get_engine(self.settings).connect()
        how = "_shared" if self.shared else ""
        got = conn.execute(sa.text(f"select pg_try_advisory_lock{how}(:ns, :id)"),
                           {"ns": RUN_LOCK_NAMESPACE, "id": lock_id(self.run_key)}).scalar()
        conn.commit()
        if not got:
            holder = _owner_of(self.settings, self.run_key)
            conn.close()
            raise UserError(f"run {self.run_key} is in progress in another process ({holder or 'starting'}); "
                            "wait for it to finish, or use another run key")
        self._conn = conn
        return self

    def release(self) -> None:
        if self._conn is None:
            return
        try:
            how = "_shared" if self.shared else ""
            self._conn.execute(sa.text(f"select pg_advisory_unlock{how}(:ns, :id)"),
                               {"ns": RUN_LOCK_NAMESPACE, "id": lock_id(self.run_key)})
            self._conn.commit()
        finally:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> RunLease:  # noqa: PYI034 - acquire() returns self
        return self.acquire() if self._conn is None else self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_is_free(conn: sa.Connection, run_key: str) -> bool:
    """True when no session holds the run's lock (tested by taking and dropping it)."""
    got = conn.execute(sa.text("select pg_try_advisory_lock(:ns, :id)"),
                       {"ns": RUN_LOCK_NAMESPACE, "id": lock_id(run_key)}).scalar()
    if got:
        conn.execute(sa.text("select pg_advisory_unlock(:ns, :id)"), {"ns": RUN_LOCK_NAMESPACE, "id": lock_id(run_key)})
    return bool(got)


def _owner_of(settings: Settings, run_key: str) -> str | None:
    with transaction(settings) as conn:
        return conn.execute(sa.text("select owner from runs where run_key = :k"), {"k": run_key}).scalar()


def is_stale(row: Any, lock_free: bool, alive: OwnerAlive | None = None) -> bool:
    """The stale-run rule: `running`, its lock free, and its owner gone.

    A CLI owner holds the lock for the whole run, so a free lock means it is gone. An Airflow owner
    holds it only during a task; ask `alive` (the Airflow API), else trust a recent heartbeat.
    """
    if row.status != "running" or not lock_free:
        return False
    owner = row.owner or ""
    if not owner.startswith("airflow:"):
        return True
    verdict = alive(owner) if alive is not None else None
    if verdict is not None:
        return not verdict
    beat = row.heartbeat_at or row.started_at
    return beat is None or (time.time() - beat.timestamp()) > STALE_HEARTBEAT_S


def start_run(
    settings: Settings,
    run_key: str,
    export_path: str | None = None,
    export_format: str | None = None,
    params: dict[str, Any] | None = None,
    *,
    owner: str | None = None,
    detector_id: str | None = None,
    predecessor: str | None = None,
    shard_count: int = 1,
    airflow: dict[str, Any] | None = None,
    alive: OwnerAlive | None = None,
    status: str = "running",
) -> None:
    """Create or reopen the run row and pin what the run is. The caller holds the run's lease.

    A `running` row of another owner that is still alive makes this fail at once with one line; a
    stale one is taken over (and recorded in the summary as failed before it).

    Every policy part a caller leaves out is recorded with its default (``config.complete_run_params``),
    so the SQL signals and the flag stage always find the policy on the run.
    """
    params = complete_run_params(params)
    if not run_key or len(run_key) > 200:
        raise UserError("a run key must be 1 to 200 characters")
    owner = owner or cli_owner()
    with transaction(settings) as conn:
        conn.execute(sa.text("select pg_advisory_xact_lock(:ns, 0)"), {"ns": RUN_LOCK_NAMESPACE + 1})  # one begin at a time
        row = conn.execute(sa.text("select status, owner, started_at, heartbeat_at from runs where run_key = :k"),
                           {"k": run_key}).first()
        # our own lease holds the lock, so another owner can only be alive between its tasks (Airflow)
        if row is not None and row.status == "running" and row.owner and row.owner != owner \
                and not is_stale(row, lock_free=True, alive=alive):
            raise UserError(f"run {run_key} is already running ({row.owner}, since {row.started_at:%Y-%m-%d %H:%M}"
                                " UTC); wait for it to finish, or use another run key")
        conn.execute(
            sa.text(
                """
                insert into runs (run_key, kind, export_path, export_format, params, detector_id, status, started_at,
                                  owner, predecessor, shard_count, airflow, stages_done, heartbeat_at, summary,
                                  finished_at)
                values (:k, :kind, :p, :f, cast(:params as jsonb), :d, :st, now(), :o, :pred, :shards,
                        cast(:airflow as jsonb), '{}', now(), '{}'::jsonb,
                        case when :st = 'running' then null else now() end)
                on conflict (run_key) do update set
                    export_path = excluded.export_path, export_format = excluded.export_format,
                    params = excluded.params, detector_id = excluded.detector_id, status = excluded.status,
                    started_at = now(), finished_at = excluded.finished_at, owner = excluded.owner,
                    predecessor = excluded.predecessor, shard_count = excluded.shard_count,
                    airflow = excluded.airflow, stages_done = '{}', heartbeat_at = now(), summary = '{}'::jsonb
                """
            ),
            {"k": run_key, "kind": kind_of(run_key), "p": export_path, "f": export_format,
             "params": json.dumps(params or {}, sort_keys=True), "d": detector_id, "st": status, "o": owner,
             "pred": predecessor, "shards": shard_count, "airflow": json.dumps(airflow or {}, sort_keys=True)},
        )


def check_owner(settings: Settings, run_key: str, owner: str) -> None:
    """A task of a run whose key another run has since taken over stops here, before touching data."""
    with transaction(settings) as conn:
        row = conn.execute(sa.text("select owner, status from runs where run_key = :k"), {"k": run_key}).first()
        if row is None:
            raise UserError(f"no run {run_key}: its begin task did not run")
        if row.owner != owner:
            raise UserError(f"run {run_key} now belongs to {row.owner}; this run ({owner}) stops")
        # a retried or cleared task reopens its own failed run
        conn.execute(sa.text("update runs set heartbeat_at = now(), status = 'running', finished_at = null"
                             " where run_key = :k and status in ('running', 'failed')"), {"k": run_key})


def stage_done(settings: Settings, run_key: str, stage: str) -> None:
    with transaction(settings) as conn:
        conn.execute(sa.text("update runs set stages_done = array_append(array_remove(stages_done, :s), :s),"
                             " heartbeat_at = now() where run_key = :k"), {"s": stage, "k": run_key})


def load_context(settings: Settings, run_key: str, shard_index: int = 0) -> Any:
    """The RunContext of a pinned run: its whole policy, detector and shard count, as begin recorded."""
    from pipeline.stages import RunContext

    with transaction(settings) as conn:
        row = conn.execute(sa.text("select params, detector_id, shard_count from runs where run_key = :k"),
                           {"k": run_key}).first()
    if row is None:
        raise UserError(f"no run {run_key}; start it with `profile-audit audit` or its DAG")
    policy = Policy.from_run_params(row.params)
    return RunContext(settings, run_key, policy.network, row.detector_id, shard_index, row.shard_count, policy)


def lineage_predecessor(conn: sa.Connection, run_key: str) -> str | None:
    """The run whose clusters this one matches: the pinned predecessor, walking back over skipped days."""
    pred = conn.execute(sa.text("select predecessor from runs where run_key = :k"), {"k": run_key}).scalar()
    seen = {run_key}
    while pred is not None and pred not in seen:
        seen.add(pred)
        row = conn.execute(sa.text("select status, predecessor from runs where run_key = :k"), {"k": pred}).first()
        if row is None:
            return None
        if row.status != "skipped":
            return pred
        pred = row.predecessor
    return None


def wait_for_predecessor(settings: Settings, run_key: str, stage: str, timeout_s: float | None = None,
                         alive: OwnerAlive | None = None) -> str | None:
    """Block until the run's predecessor has finished this same stage, when the stage table says the stage
    builds on it (`pipeline.stages.Stage.needs_predecessor`); skipped days are walked over. Returns the
    predecessor, or None.

    A `failed` predecessor ends the wait with one line, unless ``alive`` (the Airflow API) says its owner's
    DAG run is still going: a stage that failed once (a lost connection, a deadlock) is marked failed at
    once, and Airflow's retry reopens it. Without that wait, one transient error in a backfill's first day
    failed every later day for good.

    This is what makes lineage independent of order: a backfill's days may run in any order or in
    parallel, and each still matches against the same, finished, previous day.
    """
    from pipeline.stages import stage as stage_of

    if not stage_of(stage).needs_predecessor:
        return None
    needed = stage
    deadline = time.monotonic() + (PREDECESSOR_WAIT_S if timeout_s is None else timeout_s)
    while True:
        with transaction(settings) as conn:
            pred = conn.execute(sa.text("select predecessor from runs where run_key = :k"), {"k": run_key}).scalar()
            state = None
            while pred is not None:
                row = conn.execute(sa.text("select status, predecessor, stages_done, owner from runs"
                                           " where run_key = :k"), {"k": pred}).first()
                if row is None:
                    state = "absent"
                    break
                if row.status == "skipped":
                    pred = row.predecessor
                    continue
                if needed in row.stages_done or row.status == "succeeded":
                    return pred
                state = row.status
                if state == "failed" and alive is not None and row.owner and alive(row.owner):
                    state = "failed, its DAG run still going (a retry may follow)"
                break
            if pred is None:
                return None
        if state == "failed":
            raise UserError(f"{run_key} builds on {pred} (avatar history, cluster ids, flag statuses), which failed; "
                            f"rerun {pred} first")
        if time.monotonic() > deadline:
            raise UserError(f"{run_key} waited for {pred} to finish its {needed} stage ({state}); "
                            f"run {pred} first, or rerun this one after it")
        time.sleep(POLL_S)


def set_detector(settings: Settings, run_key: str, detector_id: str) -> None:
    with transaction(settings) as conn:
        conn.execute(sa.text("update runs set detector_id = :d where run_key = :k"), {"d": detector_id, "k": run_key})


def finish_run(settings: Settings, run_key: str, summary: dict[str, Any], status: str = "succeeded",
               owner: str | None = None) -> bool:
    """Close the run (`succeeded`, `failed` or `skipped`). With ``owner``, only a run that owner still holds
    is closed, so a late failure callback never overwrites a newer run of the key. Returns whether it did."""
    with transaction(settings) as conn:
        done = conn.execute(
            sa.text(
                "update runs set status = :s, summary = cast(:summary as jsonb), finished_at = now(),"
                " heartbeat_at = now()"
                " where run_key = :k and (cast(:o as text) is null or (owner = :o and status = 'running'))"
            ),
            {"s": status, "summary": json.dumps(summary, sort_keys=True, default=str), "k": run_key, "o": owner},
        ).rowcount
    return bool(done)


def fail_owned(settings: Settings, owner: str, summary: dict[str, Any]) -> list[str]:
    """Mark the `running` runs of one owner failed (an Airflow failure callback knows its DAG run, not the key)."""
    with transaction(settings) as conn:
        return list(conn.execute(
            sa.text("update runs set status = 'failed', finished_at = now(), summary = cast(:s as jsonb)"
                    " where owner = :o and status = 'running' returning run_key"),
            {"o": owner, "s": json.dumps(summary, sort_keys=True, default=str)}).scalars())


def reap_stale_runs(settings: Settings, alive: OwnerAlive | None = None) -> list[str]:
    """Apply the stale-run rule to every `running` run; returns the keys marked `failed`."""
    reaped = []
    with transaction(settings) as conn:
        rows = conn.execute(sa.text("select run_key, status, owner, started_at, heartbeat_at from runs"
                                    " where status = 'running' order by run_key")).all()
        for row in rows:
            if is_stale(row, lock_is_free(conn, row.run_key), alive):
                conn.execute(sa.text("update runs set status = 'failed', finished_at = now(),"
                                     " summary = summary || cast(:s as jsonb) where run_key = :k and status = 'running'"),
                             {"k": row.run_key, "s": json.dumps({"failed": f"stale: owner {row.owner} is gone"})})
                reaped.append(row.run_key)
    return reaped


@contextmanager
def leased(settings: Settings, run_key: str, owner: str) -> Iterator[RunLease]:
    with RunLease(settings, run_key, owner) as lease:
        yield lease
