"""Ingest throughput on a generated X/Twitter IO users CSV, with peak RSS and the re-ingest ratio.

Generates IO users files in the real header (hashed ids for accounts under 5,000 followers, one
row in twenty with a multi-line quoted description), then for each size: ingests it into the
embedded PostgreSQL, and re-ingests the same file under the same run key. Prints accounts/s for
both, the re-ingest/first ratio, and this process's peak RSS after each size (the database
server is a separate process and not counted). Sizes run in ascending order, so a flat RSS
across sizes shows that memory does not grow with the file.

    .venv/bin/python bench/ingest_throughput.py --rows 100000 1000000
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PROFILE_AUDIT_NO_PROGRESS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.config import load_settings  # noqa: E402
from pipeline.core.db import ensure_schema, transaction  # noqa: E402
from pipeline.core.runs import start_run  # noqa: E402
from pipeline.ingest.load import ingest_export  # noqa: E402

COLUMNS = ["userid", "user_display_name", "user_screen_name", "user_reported_location", "user_profile_description",
           "user_profile_url", "follower_count", "following_count", "account_creation_date", "account_language"]


def generate(path: Path, rows: int) -> None:
    """Stream rows to disk (never all in memory)."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, quoting=csv.QUOTE_ALL)
        writer.writerow(COLUMNS)
        for i in range(rows):
            followers = (i * 7919) % 20000
            if followers < 5000:
                uid = base64.b64encode(hashlib.sha256(str(i).encode()).digest()).decode()
                name = handle = uid
            else:
                uid, name, handle = str(10**18 + i), f"Cuenta {i}", f"cuenta_{i}"
            bio = f"Cubano y revolucionario #{i % 97}.\n\nLínea dos" if i % 20 == 0 else f"Bio número {i % 1000}"
            day = 1 + i % 28
            writer.writerow([uid, name, handle, "La Habana" if i % 3 else "", bio, "", followers, (i * 31) % 5000,
                             f"2019-{1 + i % 12:02d}-{day:02d}", "es"])


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000], help="users CSV sizes")
    parser.add_argument("--batch-size", type=int, default=5000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        settings = load_settings(env={}, home=root / "home")
        ensure_schema(settings)
        print(f"{'rows':>9} {'file MB':>8} {'first s':>8} {'acc/s':>9} {'reingest s':>10} {'acc/s':>9} {'ratio':>6}"
              f" {'peak RSS MB':>11}")
        for n in sorted(args.rows):
            export = root / f"io_{n}"
            export.mkdir()
            csv_path = export / "bench_users_csv_hashed.csv"
            generate(csv_path, n)
            run_key = f"bench:{n}"
            start_run(settings, run_key, str(export), "twitter_io")
            started = time.perf_counter()
            first = ingest_export(settings, run_key, export, "twitter_io", batch_size=args.batch_size)
            first_s = time.perf_counter() - started
            started = time.perf_counter()
            again = ingest_export(settings, run_key, export, "twitter_io", batch_size=args.batch_size)
            again_s = time.perf_counter() - started
            assert first.accounts == again.accounts == n and first.rejected == 0, (first, again)
            print(f"{n:>9} {csv_path.stat().st_size / 1e6:>8.1f} {first_s:>8.1f} {n / first_s:>9.0f} {again_s:>10.1f}"
                  f" {n / again_s:>9.0f} {again_s / first_s:>6.2f} {peak_rss_mb():>11.0f}", flush=True)
            with transaction(settings) as conn:  # keep the database small for the next size
                conn.exec_driver_sql("delete from account_snapshots; delete from accounts; delete from runs")
            csv_path.unlink()
        from pipeline.core.db import dispose_engines

        dispose_engines()


if __name__ == "__main__":
    main()
