"""The aggregate stage alone on an existing population: wall time, CPU of the server backend and of Python,
peak RSS, and the md5 of what it wrote (to check that a change keeps the output identical).

Deletes the run's account_signals and avatar_near_duplicates first (and vacuums them), as a first run finds
them, then runs ``aggregate_run``. The home is one that ``bench/network_pipeline.py --phase generate`` wrote
(copy it first: this rewrites its tables).

    .venv/bin/python bench/aggregate_stage.py --home /tmp/bench1m-copy
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("PROFILE_AUDIT_NO_PROGRESS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlalchemy as sa

from pipeline.config import load_settings
from pipeline.core.db import dispose_engines, ensure_schema, get_engine, transaction
from pipeline.signals.aggregate import aggregate_run


class _Md5:
    """A file-like sink for COPY TO STDOUT that keeps only the digest."""

    def __init__(self) -> None:
        self.digest, self.rows = hashlib.md5(), 0

    def write(self, data: str | bytes) -> None:
        self.digest.update(data.encode() if isinstance(data, str) else data)
        self.rows += 1


def backend_cpu(pid: int) -> float | None:
    """utime + stime of a server process in seconds (None where /proc cannot be read)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def md5_of(conn: sa.Connection, query: str) -> tuple[str, int]:
    sink = _Md5()
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        cursor.copy_expert(f"copy ({query}) to stdout", sink)
    finally:
        cursor.close()
    return sink.digest.hexdigest(), sink.rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", required=True, help="a data folder with a generated population")
    ap.add_argument("--run-key", default="bench")
    args = ap.parse_args()
    settings = load_settings(env={}, home=Path(args.home))
    ensure_schema(settings)
    params = {"k": args.run_key}
    with transaction(settings) as conn:
        if conn.execute(sa.text("select count(*) from runs where run_key = :k"), params).scalar() == 0:
            raise SystemExit(f"no run {args.run_key!r} in {args.home}")
        conn.execute(sa.text("delete from account_signals where run_key = :k"), params)
        conn.execute(sa.text("delete from avatar_near_duplicates where run_key = :k"), params)
    engine = get_engine(settings)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("vacuum analyze account_signals"))
        conn.execute(sa.text("vacuum analyze avatar_near_duplicates"))
        pid = conn.execute(sa.text("select pg_backend_pid()")).scalar_one()  # the pool hands this one back
    cpu_before, usage_before = backend_cpu(pid), resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    result = aggregate_run(settings, args.run_key)
    wall = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    with engine.connect() as conn:
        same = conn.execute(sa.text("select pg_backend_pid()")).scalar_one() == pid
        cpu_after = backend_cpu(pid)
        signals = md5_of(conn, f"select * from account_signals where run_key = '{args.run_key}'"
                               " order by run_key, account_key")
        pairs = md5_of(conn, f"select * from avatar_near_duplicates where run_key = '{args.run_key}'"
                             " order by run_key, sha_a, sha_b")
    python_cpu = usage.ru_utime + usage.ru_stime - usage_before.ru_utime - usage_before.ru_stime
    server = (f"{cpu_after - cpu_before:.1f} s" if same and cpu_before is not None and cpu_after is not None
              else "not measured (another backend ran it)")
    print(f"aggregate {wall:.1f} s {result}; server backend CPU {server}; Python CPU {python_cpu:.1f} s;"
          f" peak RSS {usage.ru_maxrss / 1024:,.0f} MiB")
    print(f"account_signals md5 {signals[0]} ({signals[1]:,} rows); avatar_near_duplicates md5 {pairs[0]}"
          f" ({pairs[1]:,} rows)")
    dispose_engines()


if __name__ == "__main__":
    main()
