"""Flags on real coordination data against the reference tools' own definitions of "coordinated".

1. CooRTweet's bundled Russian dataset (35,125 retweets; Kulichkina, Righetti & Waldherr), as the IO
   release in ``CooRTweet-russian-as-io/``. The reference is CooRTweet's vignette definition, re-implemented
   here line by line from its R source (``detect_groups`` + ``generate_coordinated_network``):
   accounts with at least ``--min-participation`` shares; every pair of shares of one object at most
   ``--window`` seconds apart by two accounts (loops removed); accounts with at least min-participation
   coordinated shares; undirected pair weight = coordinated share pairs; keep weights above the
   ``--edge-weight`` quantile (R's default type 7); the coordinated accounts are the vertices left.
   Ours: the export goes through the real ingest, aggregate, networks and flag stages on an embedded
   PostgreSQL (the export has no avatars, so acquire and score have nothing to do and are skipped), and
   the flagged accounts are the members of flagged clusters. Printed: precision and recall of ours
   against CooRTweet's accounts, the flag threshold's effect (the flag stage rerun per threshold), the
   effect of ``coactivity_min_weight``, ``coactivity_min_idf_weight`` and ``min_cluster_size``, the clusters' scores,
   and groups and pairs apart: cluster flags against CooRTweet's groups of at least min_cluster_size, pair flags
   against its two-account groups, per ``pair_max_chance_share`` (0: no pairs, as before policy version 7).
2. QUT coordination-network-toolkit's sample data (``QUT-cnt/original/sample_data.csv``, 100 messages):
   the accounts in QUT's co_retweet, co_tweet and co_reply networks (same window and minimum weight)
   against the accounts we flag from the same data as an IO release.

    .venv/bin/python bench/coordination_real.py
    .venv/bin/python bench/coordination_real.py --data ../shared/data/exports/coordination --window 60
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import logging
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("PROFILE_AUDIT_NO_PROGRESS", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline.testing import coortweet  # noqa: E402

STAGES = ("ingest", "aggregate", "networks", "flag")
THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
IDF_GATES = (0.0, 0.5, 0.6, 1.0)


def prepare(work: Path, export: Path, run_key: str):
    from pipeline.config import load_settings
    from pipeline.core import runs
    from pipeline.core.db import ensure_schema
    from pipeline.ingest.readers import resolve_reader

    work.mkdir(parents=True, exist_ok=True)
    settings = load_settings(env={}, home=work / "home")
    ensure_schema(settings)
    reader = resolve_reader(export, "auto")
    runs.start_run(settings, run_key, str(export), reader.name,
                   {**settings.policy().run_params(), "detector": "none (no avatars in the export)"})
    return settings


def run_ours(settings, run_key: str, policy, names=STAGES) -> dict[str, float]:
    from pipeline.stages import RunContext, run_all

    seconds: dict[str, float] = {}
    run_all(RunContext(settings, run_key, policy.network, policy=policy), names, on_stage=lambda n, r, s: seconds.__setitem__(n, s),
            record=False)
    return seconds


def flagged_accounts(settings, run_key: str) -> set[str]:
    from pipeline.flags.rules import list_flags

    return {m["account_id"] for f in list_flags(settings, run_key=run_key) for m in f["members"]}


def precision_recall(ours: set[str], reference: set[str]) -> tuple[str, str]:
    hit = len(ours & reference)
    precision = f"{hit / len(ours):.3f}" if ours else "-"
    recall = f"{hit / len(reference):.3f}" if reference else "-"
    return precision, recall


def bench_coortweet(data: Path, work: Path, args) -> None:
    import sqlalchemy as sa

    from pipeline.core.db import transaction
    from pipeline.flags.rules import flag_run

    export = data / "CooRTweet-russian-as-io"
    rows = coortweet.rows_from_io(export / "russian_coord_tweets_csv_hashed.csv")
    started = time.perf_counter()
    reference, kept, threshold = coortweet.coordinated(rows, args.window, args.min_participation, args.edge_weight)
    ref_seconds = time.perf_counter() - started
    ref_components = coortweet.components(kept)
    settings = prepare(work, export, "investigation:coortweet")
    policy = settings.policy().with_thresholds({"co_window_seconds": args.window})
    seconds = run_ours(settings, "investigation:coortweet", policy)
    ours = flagged_accounts(settings, "investigation:coortweet")
    p, r = precision_recall(ours, reference)
    reachable = {a for c in ref_components if len(c) >= policy.network.min_cluster_size for a in c}
    print(f"**CooRTweet russian_coord_tweets: {len(rows):,} retweets, {len({x[1] for x in rows}):,} accounts**\n")
    print(f"CooRTweet (time_window {args.window}, min_participation {args.min_participation}, edge_weight "
          f"{args.edge_weight}): weight threshold {threshold:g}, {len(kept)} edges, {len(reference)} accounts in "
          f"{len(ref_components)} groups (sizes {sorted((len(c) for c in ref_components), reverse=True)}); "
          f"{len(reachable)} accounts in groups of at least min_cluster_size ({policy.network.min_cluster_size}); "
          f"{ref_seconds:.1f} s")
    print("ours: " + ", ".join(f"{n} {s:.1f} s" for n, s in seconds.items()) + "\n")
    print("| setting | flagged clusters | flagged accounts | precision | recall | recall, groups ≥ min_cluster_size |")
    print("|---|---|---|---|---|---|")

    def row(label: str) -> None:
        flagged = flagged_accounts(settings, "investigation:coortweet")
        with transaction(settings) as conn:
            n = conn.execute(sa.text("select count(*) from flags where run_key = 'investigation:coortweet'")).scalar()
        prec, rec = precision_recall(flagged, reference)
        _, rec_reach = precision_recall(flagged, reachable)
        print(f"| {label} | {n} | {len(flagged)} | {prec} | {rec} | {rec_reach} |")

    row(f"policy defaults (flag_score_threshold {policy.flag.flag_score_threshold:g})")
    for t in THRESHOLDS:
        flag_run(settings, "investigation:coortweet", policy.with_thresholds({"flag_score_threshold": t}))
        row(f"flag_score_threshold {t:g}")
    flag_run(settings, "investigation:coortweet", policy.with_thresholds({"coactivity_min_weight": 3}))
    row("coactivity_min_weight 3 (policy version 1)")
    for gate in IDF_GATES:  # the co-activity IDF gate (docs/networks.md, "Chance co-activity at scale")
        flag_run(settings, "investigation:coortweet", policy.with_thresholds({"coactivity_min_idf_weight": gate}))
        row(f"coactivity_min_idf_weight {gate:g}")
    small = policy.with_thresholds({"min_cluster_size": 2})
    run_ours(settings, "investigation:coortweet", small, ("networks", "flag"))
    row("min_cluster_size 2")
    run_ours(settings, "investigation:coortweet", policy, ("networks", "flag"))
    pairs_table(settings, policy, reference, ref_components)
    run_ours(settings, "investigation:coortweet", policy, ("networks", "flag"))
    with transaction(settings) as conn:
        scores = conn.execute(sa.text("select score, features from clusters where run_key = 'investigation:coortweet'"
                                      " order by score desc")).all()
    print(f"\nclusters: {len(scores)}; scores " + ", ".join(f"{s.score:g}" for s in scores)
          + "; coactivity_share " + ", ".join(f"{s.features['coactivity_share']:g}" for s in scores))
    print(f"defaults: precision {p}, recall {r}")
    print(chance_shares_line(settings, "investigation:coortweet", policy) + "\n")


def chance_shares_line(settings, run_key: str, policy) -> str:
    """The run chance shares (policy version 8) the networks stage would give the run's gated co-activity edges
    if the run were a platform export: these exports are IO releases, where the share is not applied (their
    posts are all the operation's; docs/networks.md, "Chance at ten million accounts")."""
    import statistics

    from pipeline.core.db import transaction
    from pipeline.networks.build import gated_coactivity_edges
    from pipeline.networks.clusters import pair_chance_shares

    with transaction(settings) as conn:
        gated = gated_coactivity_edges(conn, run_key, policy.flag)
    by_type: dict[str, dict] = {}
    for r in gated:
        by_type.setdefault(r["edge_type"], {})[(r["a_key"], r["b_key"])] = r["expected"]
    shares = [share for expected in by_type.values() for _, share in pair_chance_shares(expected).values()]
    if not shares:
        return "run chance shares: no gated co-activity edge"
    limit = policy.flag.coactivity_max_chance_share
    return (f"run chance shares as a platform export would get them (not applied to an IO release): {len(shares)}"
            f" gated edges, {min(shares):g} to {max(shares):g} (median {statistics.median(shares):g}),"
            f" {sum(s > limit for s in shares)} above coactivity_max_chance_share {limit:g}")


def pairs_table(settings, policy, reference: set[str], ref_components: list[set[str]]) -> None:
    """Groups and pairs apart (issue 23, item 3): our cluster flags against CooRTweet's groups of at least
    min_cluster_size accounts, our pair flags against its two-account groups, per pair_max_chance_share (0: no
    pairs, policy version 6). The networks stage is rerun per value: it decides which pairs stand."""
    from pipeline.flags.rules import list_flags

    size = policy.network.min_cluster_size
    groups = {a for c in ref_components if len(c) >= size for a in c}
    ref_pairs = {frozenset(c) for c in ref_components if len(c) == 2}
    print(f"\nCooRTweet's groups apart: {len(groups)} accounts in groups of at least {size}; {len(ref_pairs)} pairs"
          " (two-account groups). A pair is found when a pair flag holds exactly its two accounts.\n")
    print("| pair_max_chance_share | cluster flags | their precision | recall, groups | pair flags | pairs found"
          " | pair precision (exact) | pair precision (accounts) | all flags: precision | recall |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    default = policy.flag.pair_max_chance_share
    for cap in sorted({0.0, 0.05, 0.1, 0.2, 0.3, 0.5, default}):
        run_ours(settings, "investigation:coortweet", policy.with_thresholds({"pair_max_chance_share": cap}),
                 ("networks", "flag"))
        flags = list_flags(settings, run_key="investigation:coortweet")
        clusters = [{m["account_id"] for m in f["members"]} for f in flags if f["kind"] == "cluster"]
        pairs = [frozenset(m["account_id"] for m in f["members"]) for f in flags if f["kind"] == "pair"]
        in_clusters = set().union(*clusters) if clusters else set()
        in_pairs = set().union(*pairs) if pairs else set()
        prec, _ = precision_recall(in_clusters, reference)
        _, rec = precision_recall(in_clusters, groups)
        exact = sum(p in ref_pairs for p in pairs)
        pair_prec = f"{exact / len(pairs):.3f}" if pairs else "-"
        acc_prec, _ = precision_recall(in_pairs, reference)
        all_prec, all_rec = precision_recall(in_clusters | in_pairs, reference)
        label = f"{cap:g}" + (" (default)" if cap == default else " (before: no pairs)" if cap == 0 else "")
        print(f"| {label} | {len(clusters)} | {prec} | {rec} | {len(pairs)} | {exact} of {len(ref_pairs)} | {pair_prec}"
              f" | {acc_prec} | {all_prec} | {all_rec} |")


def qut_accounts(csv_path: Path, work: Path, window: int, min_weight: int) -> dict[str, set[str]]:
    """Accounts in QUT's networks of the sample. Its ``urls`` cells are Python list literals, which the
    toolkit's CSV reader would split on spaces into broken URLs; they are rewritten space-separated first."""
    import ast
    import sqlite3

    from coordination_network_toolkit import compute_networks as cn
    from coordination_network_toolkit.preprocess import preprocess_csv_files

    clean = work / "qut-sample.csv"
    with csv_path.open(newline="", encoding="utf-8") as src, clean.open("w", newline="", encoding="utf-8") as dst:
        reader = csv.DictReader(src)
        writer = csv.DictWriter(dst, fieldnames=reader.fieldnames)
        writer.writeheader()
        for r in reader:
            urls = r["urls"].strip()
            writer.writerow({**r, "urls": " ".join(ast.literal_eval(urls)) if urls.startswith("[") else urls})
    db = work / "qut.db"
    db.unlink(missing_ok=True)
    out = {}
    with contextlib.redirect_stdout(io.StringIO()):  # the toolkit prints progress
        preprocess_csv_files(str(db), [str(clean)])
        cn.compute_co_retweet_parallel(str(db), window, n_threads=1, min_edge_weight=min_weight)
        cn.compute_co_tweet_network(str(db), window, min_edge_weight=min_weight, n_threads=1)
        cn.compute_co_reply_network(str(db), window, min_edge_weight=min_weight, n_threads=1)
        cn.compute_co_link_network(str(db), window, n_threads=1, min_edge_weight=min_weight)
    with sqlite3.connect(db) as con:
        for name in ("co_retweet", "co_tweet", "co_reply", "co_link"):
            out[name] = {u for pair in con.execute(f"select user_1, user_2 from {name}_network where user_1 != user_2")
                         for u in pair}
    return out


def bench_qut(data: Path, work: Path, args) -> None:
    work.mkdir(parents=True, exist_ok=True)
    networks = qut_accounts(data / "QUT-cnt" / "original" / "sample_data.csv", work, args.window, 2)
    reference = set().union(*networks.values())
    export = data / "QUT-cnt" / "sample_data-as-io"
    settings = prepare(work, export, "investigation:qut-sample")
    policy = settings.policy().with_thresholds({"co_window_seconds": args.window})
    run_ours(settings, "investigation:qut-sample", policy)
    ours = flagged_accounts(settings, "investigation:qut-sample")
    p, r = precision_recall(ours, reference)
    print("**QUT coordination-network-toolkit sample_data.csv (100 messages)**\n")
    print(f"QUT (time window {args.window}, min weight 2): " + ", ".join(
        f"{n} {len(a)} accounts" for n, a in networks.items()) + f"; union {len(reference)}")
    from pipeline.flags.rules import list_flags

    mix = Counter(t for f in list_flags(settings, run_key="investigation:qut-sample")
             for t, n in f["evidence"]["features"]["edge_types"].items() for _ in range(n))
    print(f"ours: {len(ours)} accounts flagged (edges inside flagged clusters: {dict(sorted(mix.items()))});"
          f" precision {p}, recall {r}")
    print(chance_shares_line(settings, "investigation:qut-sample", policy) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "exports" / "coordination")
    parser.add_argument("--window", type=int, default=60, help="seconds (CooRTweet's vignette: 60)")
    parser.add_argument("--min-participation", type=int, default=2)
    parser.add_argument("--edge-weight", type=float, default=0.5, help="CooRTweet's quantile (vignette: 0.5)")
    parser.add_argument("--workdir", type=Path, help="embedded database home (default: a temporary folder)")
    args = parser.parse_args()
    if not (args.data / "CooRTweet-russian-as-io").is_dir():
        raise SystemExit(f"no CooRTweet data under {args.data}; pass --data .../shared/data/exports/coordination")
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="coordination-real-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        bench_coortweet(args.data, work / "coortweet", args)
        bench_qut(args.data, work / "qut", args)


if __name__ == "__main__":
    main()
