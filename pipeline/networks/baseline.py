"""What a run's creation bursts are measured against: its own accounts, an earlier run's, or nothing.

A burst is a trait created faster than the rest of the population makes likely (pipeline/networks/bursts.py),
so it needs a population that is not the operation. The rule (issue 23): **a run has no organic baseline
when it is one X/Twitter IO release** (export format ``twitter_io``) **and no ``--baseline-run`` is
pinned on it.** An IO release holds only the accounts a platform took down: every account is the
operation, and nothing in it stands out against the rest. Such a run is not tested for bursts; its
accounts are grouped into their creation batches instead (``edges.creation_batch_edges``): accounts
of one sign-up profile, handle template or bio made within the window of each other, at least
``count_profile_min_count`` of them. Each cluster then gives its dates and shared traits, and says it
was not tested against a population.

``--baseline-run KEY`` (the CLI) or the DAG Param ``baseline_run`` pins an earlier run (for example
last night's audit): its accounts' creation times (from ``account_snapshots``), with this run's,
are the population the bursts are measured against. Accounts in both runs count once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sqlalchemy as sa

from pipeline.errors import UserError

IO_RELEASE_FORMATS = frozenset({"twitter_io"})  # formats whose exports hold only a takedown's accounts


@dataclass(frozen=True)
class Baseline:
    organic: bool  # bursts are measured against a population other than the operation
    baseline_run: str | None  # the earlier run whose accounts join the population
    baseline_accounts: int  # of that run, not in this one
    why: str
    times: np.ndarray | None = field(default=None, repr=False, compare=False)  # their creation times (epoch s)

    def as_dict(self) -> dict[str, Any]:
        return {"organic": self.organic, "baseline_run": self.baseline_run,
                "baseline_accounts": self.baseline_accounts, "why": self.why}


def check_baseline_run(conn: sa.Connection, run_key: str, baseline_run: str) -> None:
    """A one-line error for a key that names no run, or names the run itself."""
    if baseline_run == run_key:
        raise UserError(f"--baseline-run {baseline_run!r} is the run itself: name an earlier run (e.g. last night's)")
    if conn.execute(sa.text("select 1 from runs where run_key = :k"), {"k": baseline_run}).first() is None:
        raise UserError(f"--baseline-run {baseline_run!r}: no such run in this database "
                        "(`profile-audit runs` lists them)")


def baseline_times(conn: sa.Connection, run_key: str, baseline_run: str) -> np.ndarray:
    """Creation times (epoch seconds) of the baseline run's accounts that this run does not hold."""
    rows = conn.execute(sa.text(
        "select extract(epoch from b.created_at) from account_snapshots b where b.run_key = :b"
        " and b.created_at is not null and not exists (select 1 from account_snapshots s"
        " where s.run_key = :k and s.account_key = b.account_key)"), {"b": baseline_run, "k": run_key}).all()
    return np.array([float(r[0]) for r in rows], dtype=np.float64)


def posts_hold_ordinary_accounts(conn: sa.Connection, run_key: str) -> bool:
    """Whether the run's own posts come from a platform's ordinary accounts, so that chance can be estimated
    from them: not an IO release, whose posts are all the operation's. A pinned ``baseline_run`` lends
    creation times only, not posts."""
    fmt = conn.execute(sa.text("select export_format from runs where run_key = :k"), {"k": run_key}).scalar()
    return fmt not in IO_RELEASE_FORMATS


def run_baseline(conn: sa.Connection, run_key: str) -> Baseline:
    """The run's baseline, from its row (export format and the pinned ``baseline_run`` param)."""
    row = conn.execute(sa.text("select export_format, params from runs where run_key = :k"), {"k": run_key}).first()
    fmt, params = (row.export_format, row.params or {}) if row is not None else (None, {})
    if baseline_run := params.get("baseline_run"):
        times = baseline_times(conn, run_key, baseline_run)
        n = len(times)
        return Baseline(True, baseline_run, n, f"bursts measured against the {n} accounts of run {baseline_run}"
                                               " (--baseline-run) and this run's own", times)
    if fmt in IO_RELEASE_FORMATS:
        return Baseline(False, None, 0, "no organic baseline: the run is one IO release, which holds only the"
                                        " operation's accounts, so no creation burst can stand out against the rest."
                                        " Accounts are grouped into their creation batches (not tested against a"
                                        " population); pass --baseline-run KEY to measure bursts against an earlier"
                                        " run's accounts")
    return Baseline(True, None, 0, "bursts measured against the run's own accounts")
