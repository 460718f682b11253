"""Signals, edges, clusters and flags for a large planted population: wall time per stage and peak RSS.

Generates ``--accounts`` accounts (organic plus the planted operations of pipeline/testing/planted.py, with
about ``--posts-per-account`` posts each) straight into the embedded PostgreSQL in a temporary folder,
By default the population is issue 10's (``planted.HARD_OPERATIONS`` and ``OrganicMix.hard()``: busy
days, a common suggested template, real photos from ``--faces``); ``--classic`` is the original
generator. It then runs the aggregate, networks and flag stages. Generation and the stages run in two child
processes, so the stages' peak RSS is their own. Prints, per stage, seconds and accounts/s and the
peak RSS of the stage process (the PostgreSQL server's memory is not included), then the per-kind
precision and recall of the flags; with ``xp_persona`` operations (issue 23: personas on X, Mastodon and
Bluesky), their recall per platform and how many of its organic traps were flagged.

    .venv/bin/python bench/network_pipeline.py --accounts 1000000
    .venv/bin/python bench/network_pipeline.py --accounts 3000 --faces ../shared/data/faces
    .venv/bin/python bench/network_pipeline.py --accounts 3000 --io \
        --io-users ../shared/data/twitter_io/cuba_092020_users_csv_hashed.csv
"""

from __future__ import annotations

import argparse
import os
import pickle
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PROFILE_AUDIT_NO_PROGRESS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.config import load_settings
from pipeline.core.db import dispose_engines
from pipeline.testing import planted


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def generate(args: argparse.Namespace, home: Path) -> None:
    settings = load_settings(env={}, home=home)
    started = time.perf_counter()
    if args.io:  # an IO release's users file: no other kind (their traces are avatars, times of day, posts)
        ops = {**{k: 0 for k in planted.DEFAULT_OPERATIONS}, **planted.IO_OPERATIONS}
        mix = planted.OrganicMix.io()
    else:
        ops = planted.DEFAULT_OPERATIONS if args.classic else planted.HARD_OPERATIONS
        mix = planted.OrganicMix() if args.classic else planted.OrganicMix.hard()
    pop = planted.generate(settings, "bench", organic=max(0, args.accounts - planted.planted_accounts(ops)),
                           seed=args.seed, operations=ops, posts_per_account=0.0 if args.io else args.posts_per_account,
                           mix=mix, faces_dir=Path(args.faces) if args.faces else None,
                           io_users=Path(args.io_users) if args.io_users else None)
    (home / "truth.pickle").write_bytes(pickle.dumps(pop))
    print(f"generated {pop.accounts:,} accounts and {pop.posts:,} posts in {time.perf_counter() - started:.0f} s"
          f" (generator peak RSS {rss_mib():,.0f} MiB); busy days {pop.busy_days}", flush=True)
    dispose_engines()


def stages(home: Path) -> None:
    settings = load_settings(env={}, home=home)
    pop = pickle.loads((home / "truth.pickle").read_bytes())
    print(f"stage process RSS before the stages {rss_mib():,.0f} MiB", flush=True)

    def on_stage(name, result, seconds):
        print(f"  {name:<10} {seconds:8.1f} s  {pop.accounts / seconds:10,.0f} accounts/s"
              f"  peak RSS {rss_mib():7,.0f} MiB  {result}", flush=True)

    wall = time.perf_counter()
    planted.run_network_stages(settings, "bench", on_stage=on_stage)
    total = time.perf_counter() - wall
    print(f"signals + edges + clusters + flags: {total:.0f} s for {pop.accounts:,} accounts"
          f" ({pop.accounts / total:,.0f} accounts/s); peak RSS {rss_mib():,.0f} MiB")
    print("kind            planted  flagged  precision  recall")
    for kind, m in planted.evaluate(settings, pop).items():
        print(f"{kind:<15} {m['planted']:>7,}  {m['flagged']:>7,}  {m['precision']!s:>9}  {m['recall']:>6}")
    if pop.operations.get("xp_persona"):
        print(crossplatform_line(settings, pop))
    dispose_engines()


def crossplatform_line(settings, pop) -> str:
    """xp_persona's recall per platform, and its organic traps flagged: people on several platforms with one
    handle and one photo, common first names on several platforms."""
    import sqlalchemy as sa

    from pipeline.core.db import transaction
    from pipeline.networks.crossplatform import platform_of

    with transaction(settings) as conn:
        flagged = set(conn.execute(sa.text(
            "select m.account_key from flags f join cluster_members m on m.run_key = f.run_key"
            " and m.cluster_id = f.cluster_id where f.run_key = :k"), {"k": pop.run_key}).scalars())
    members = [k for op in pop.operations["xp_persona"] for k in op]
    recall = {p: round(sum(k in flagged for k in members if platform_of(k) == p)
                       / max(1, sum(platform_of(k) == p for k in members)), 4) for p in planted.XP_PLATFORMS}
    traps = {t: f"{len(flagged & set(pop.operations[t][0]))}/{len(pop.operations[t][0])}"
             for t in ("xp_organic_multi", "xp_common_name")}
    return f"xp_persona recall by platform {recall}; organic traps flagged {traps}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--accounts", type=int, default=1_000_000)
    ap.add_argument("--posts-per-account", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--faces", help="real photos for the photo rings and organic avatars (default ../shared/data/faces)")
    ap.add_argument("--classic", action="store_true", help="the original generator: four kinds, uniform organic")
    ap.add_argument("--io", action="store_true",
                    help="an IO users file (OrganicMix.io(): date-only dates, hashed handles, no avatars or posts)"
                         " with the mass_signup operations (issue 23)")
    ap.add_argument("--io-users", help="also inject a real IO users CSV (kind io_release), e.g."
                                       " ../shared/data/twitter_io/cuba_092020_users_csv_hashed.csv")
    ap.add_argument("--home", help="data folder (default: a temporary folder, removed afterwards)")
    ap.add_argument("--phase", choices=["all", "generate", "stages"], default="all", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phase == "generate":
        return generate(args, Path(args.home))
    if args.phase == "stages":
        return stages(Path(args.home))
    with tempfile.TemporaryDirectory(prefix="pa-network-bench-") as tmp:
        home = Path(args.home or tmp)
        common = [sys.executable, __file__, "--home", str(home), "--accounts", str(args.accounts),
                  "--posts-per-account", str(args.posts_per_account), "--seed", str(args.seed),
                  *(["--faces", args.faces] if args.faces else []), *(["--classic"] if args.classic else []),
                  *(["--io"] if args.io else []), *(["--io-users", args.io_users] if args.io_users else [])]
        for phase in ("generate", "stages"):
            subprocess.run([*common, "--phase", phase], check=True)
        # the embedded server stops when its last client exits; a last client here makes sure it has
        dispose_engines()


if __name__ == "__main__":
    main()
