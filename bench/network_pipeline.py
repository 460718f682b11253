"""Signals, edges, clusters and flags for a large planted population: wall time per stage and peak RSS.

Generates ``--accounts`` accounts (organic plus the planted operations of pipeline/planted.py, with
about ``--posts-per-account`` posts each) straight into the embedded PostgreSQL in a temporary folder,
then runs the aggregate, networks and flag stages and prints, per stage, seconds and accounts/s,
the peak RSS of this process (the PostgreSQL server's memory is not included), the edge counts,
and the per-kind precision and recall of the flags.

    .venv/bin/python bench/network_pipeline.py --accounts 1000000
    .venv/bin/python bench/network_pipeline.py --accounts 20000      # a quick run
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PROFILE_AUDIT_NO_PROGRESS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline import planted  # noqa: E402
from pipeline.config import load_settings  # noqa: E402
from pipeline.db import dispose_engines  # noqa: E402

PLANTED_ACCOUNTS = 2 * 30 + 2 * 32 + 2 * 20 + 12  # the default operations of planted.generate


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--accounts", type=int, default=1_000_000)
    ap.add_argument("--posts-per-account", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--home", help="data folder (default: a temporary folder, removed afterwards)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="pa-network-bench-") as tmp:
        settings = load_settings(env={}, home=Path(args.home or tmp))
        started = time.perf_counter()
        pop = planted.generate(settings, "bench", organic=max(0, args.accounts - PLANTED_ACCOUNTS), seed=args.seed,
                               posts_per_account=args.posts_per_account)
        gen_s = time.perf_counter() - started
        print(f"generated {pop.accounts:,} accounts and {pop.posts:,} posts in {gen_s:.0f} s"
              f" (peak RSS so far {rss_mib():,.0f} MiB)", flush=True)
        rows = []

        def on_stage(name, result, seconds):
            rows.append((name, seconds, rss_mib()))
            print(f"  {name:<10} {seconds:8.1f} s  {pop.accounts / seconds:10,.0f} accounts/s"
                  f"  peak RSS {rss_mib():7,.0f} MiB  {result}", flush=True)

        wall = time.perf_counter()
        planted.run_network_stages(settings, "bench", on_stage=on_stage)
        total = time.perf_counter() - wall
        print(f"signals + edges + clusters + flags: {total:.0f} s for {pop.accounts:,} accounts"
              f" ({pop.accounts / total:,.0f} accounts/s); peak RSS {rss_mib():,.0f} MiB")
        print("kind            planted  flagged  precision  recall")
        for kind, m in planted.evaluate(settings, pop).items():
            print(f"{kind:<15} {m['planted']:>7,}  {m['flagged']:>7,}  {str(m['precision']):>9}  {m['recall']:>6}")
        dispose_engines()


if __name__ == "__main__":
    main()
