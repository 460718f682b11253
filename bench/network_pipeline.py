"""Signals, edges, clusters and flags for a large planted population: wall time per stage and peak RSS.

Generates ``--accounts`` accounts (organic plus the planted operations of pipeline/testing/planted.py, with
about ``--posts-per-account`` posts each) straight into the embedded PostgreSQL in a temporary folder,
By default the population is issue 10's (``planted.HARD_OPERATIONS`` and ``OrganicMix.hard()``: busy
days, a common suggested template, real photos from ``--faces``); ``--classic`` is the original
generator. It then runs the aggregate, networks and flag stages. Generation and each stage run in child
processes of their own (the stages read their inputs from PostgreSQL), so each peak RSS is that step's
own, not the high-water mark of an earlier, bigger one. Prints, per stage, seconds and accounts/s and the
peak RSS of its process (the PostgreSQL server's memory is not included), the edges per type and in
total, then the per-kind precision and recall of the flags; with ``xp_persona`` operations (issue 23:
personas on X, Mastodon and Bluesky), their recall per platform and how many of its organic traps were
flagged. ``--json PATH`` writes these figures; ``--compare-to PATH`` (such a JSON, or the log of an
earlier run) prints, per step, the growth of time and peak RSS next to the growth of accounts and edges
(issue 26: the cost should grow no faster than the edges).

    .venv/bin/python bench/network_pipeline.py --accounts 1000000
    .venv/bin/python bench/network_pipeline.py --accounts 3000 --faces ../shared/data/faces
    .venv/bin/python bench/network_pipeline.py --accounts 1000000 --json /tmp/net1m.json
    .venv/bin/python bench/network_pipeline.py --accounts 10000000 --compare-to /tmp/net1m.json
    .venv/bin/python bench/network_pipeline.py --accounts 3000 --io \
        --io-users ../shared/data/twitter_io/cuba_092020_users_csv_hashed.csv
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import os
import re
import pickle
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

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
    mix = dataclasses.replace(mix, post_span_days=args.post_span_days, signup_span_share=args.signup_span_share)
    pop = planted.generate(settings, "bench", organic=max(0, args.accounts - planted.planted_accounts(ops)),
                           seed=args.seed, operations=ops, posts_per_account=0.0 if args.io else args.posts_per_account,
                           mix=mix, faces_dir=Path(args.faces) if args.faces else None,
                           io_users=Path(args.io_users) if args.io_users else None)
    (home / "truth.pickle").write_bytes(pickle.dumps(pop))
    seconds = time.perf_counter() - started
    print(f"generated {pop.accounts:,} accounts and {pop.posts:,} posts in {seconds:.0f} s"
          f" (generator peak RSS {rss_mib():,.0f} MiB); busy days {pop.busy_days}; organic posts over"
          f" {mix.post_span_days:g} days, sign-ups over {mix.signup_span_share:g} of the default years", flush=True)
    (home / GENERATION_JSON).write_text(json.dumps({"accounts": pop.accounts, "posts": pop.posts,
                                                    "seconds": round(seconds, 1), "rss_mib": round(rss_mib())}))
    dispose_engines()


GENERATION_JSON = "bench-generation.json"  # in --home: the generation's figures, for --json and --compare-to
STAGES = ("aggregate", "networks", "flag")


def stage(home: Path, name: str, accounts: int) -> None:
    """One stage in this process (a child of ``stages``): its line, and its figures in home/bench-NAME.json."""
    from pipeline.core import runs
    from pipeline.stages import RunContext, run_all

    settings = load_settings(env={}, home=home)
    figures: dict[str, Any] = {}

    def on_stage(name, result, seconds):
        print(f"  {name:<10} {seconds:8.1f} s  {accounts / seconds:10,.0f} accounts/s"
              f"  peak RSS {rss_mib():7,.0f} MiB  {result}", flush=True)
        figures.update(seconds=round(seconds, 1), rss_mib=round(rss_mib()), result=result)

    run_all(RunContext(settings, "bench", settings.network), (name,), on_stage=on_stage, record=False)
    if name == STAGES[-1]:  # as planted.run_network_stages: a later run matches this one's clusters
        runs.finish_run(settings, "bench", {"planted": True})
    figures["rss_mib"] = round(rss_mib())
    (home / f"bench-{name}.json").write_text(json.dumps(figures, default=str))
    dispose_engines()


def stages(args: argparse.Namespace, home: Path) -> None:
    settings = load_settings(env={}, home=home)
    pop = pickle.loads((home / "truth.pickle").read_bytes())
    print(f"stage process RSS before the stages {rss_mib():,.0f} MiB", flush=True)
    summary: dict[str, Any] = {"accounts": pop.accounts, "posts": pop.posts, "stages": {}}
    if (home / GENERATION_JSON).exists():
        summary["generation"] = json.loads((home / GENERATION_JSON).read_text())

    wall = time.perf_counter()
    for name in STAGES:  # each in a fresh process: its peak RSS is its own
        subprocess.run([sys.executable, __file__, "--home", str(home), "--phase", "stage", "--stage", name,
                        "--accounts", str(pop.accounts)], check=True)
        summary["stages"][name] = json.loads((home / f"bench-{name}.json").read_text())
    total = time.perf_counter() - wall
    peak = max(s["rss_mib"] for s in summary["stages"].values())
    print(f"signals + edges + clusters + flags: {total:.0f} s for {pop.accounts:,} accounts"
          f" ({pop.accounts / total:,.0f} accounts/s); peak RSS {peak:,.0f} MiB")
    edges = summary["stages"]["networks"]["result"].get("edges", {})
    summary.update(seconds=round(total, 1), edges=edges, edges_total=sum(edges.values()))
    print(f"edges {summary['edges_total']:,}: " + ", ".join(f"{t} {n:,}" for t, n in sorted(edges.items())))
    print("kind            planted  flagged  precision  recall")
    summary["kinds"] = planted.evaluate(settings, pop)
    for kind, m in summary["kinds"].items():
        print(f"{kind:<15} {m['planted']:>7,}  {m['flagged']:>7,}  {m['precision']!s:>9}  {m['recall']:>6}")
    if pop.operations.get("xp_persona"):
        print(crossplatform_line(settings, pop))
    print(chance_line(settings, pop))
    dispose_engines()
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1, default=str))
    if args.compare_to:
        for line in growth_lines(read_summary(Path(args.compare_to)), summary, args.compare_to):
            print(line)


def chance_line(settings, pop) -> str:
    """The co-activity edges that pass the weight and IDF gates, organic (chance) and planted apart, with their run
    chance shares and how many count for C (policy version 8; docs/networks.md, "Chance at ten million accounts")."""
    import sqlalchemy as sa

    from pipeline.core.db import transaction
    from pipeline.flags.rules import passes_coactivity_gates, qualifies_as_coactivity, run_chance_share

    flag = settings.policy().flag
    with transaction(settings) as conn:
        edges = [dict(r) for r in conn.execute(sa.text(
            "select edge_type, a_key, b_key, weight, evidence from edges where run_key = 'bench'"
            " and edge_type like 'co\\_%'")).mappings()]
    gated = [e for e in edges if passes_coactivity_gates(e, flag)]

    def organic(key: str) -> bool:
        return pop.truth.get(key, "organic") == "organic"

    parts = []
    for name, side in (("organic", [e for e in gated if organic(e["a_key"]) and organic(e["b_key"])]),
                       ("planted", [e for e in gated if not organic(e["a_key"]) and not organic(e["b_key"])])):
        shares = sorted(x for e in side if (x := run_chance_share(e)) is not None)
        span = f"shares {shares[0]:g} to {shares[-1]:g}" if shares else "no share"
        parts.append(f"{name} {len(side)} ({span}; {sum(qualifies_as_coactivity(e, flag) for e in side)} count for C)")
    return "co-activity edges through the gates: " + ", ".join(parts)


_STAGE_LINE = re.compile(r"^\s+(\w+)\s+([\d.]+) s\s+[\d,]+ accounts/s\s+peak RSS\s+([\d,]+) MiB\s+(\{.*\})\s*$")
_GENERATED = re.compile(r"generated ([\d,]+) accounts and ([\d,]+) posts in ([\d.]+) s"
                        r" \(generator peak RSS ([\d,]+) MiB\)")
_TOTAL = re.compile(r"signals \+ edges \+ clusters \+ flags: (\d+) s for ([\d,]+) accounts")


def read_summary(path: Path) -> dict[str, Any]:
    """An earlier run's figures: the JSON of ``--json``, or its printed log (the generation line, the stage
    lines, the networks stage's edge counts)."""
    text = path.read_text()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    summary: dict[str, Any] = {"stages": {}}
    for line in text.splitlines():
        if m := _GENERATED.search(line):
            summary["accounts"] = int(m[1].replace(",", ""))
            summary["generation"] = {"seconds": float(m[3]), "rss_mib": int(m[4].replace(",", ""))}
        elif m := _STAGE_LINE.match(line):
            result = ast.literal_eval(m[4])
            summary["stages"][m[1]] = {"seconds": float(m[2]), "rss_mib": int(m[3].replace(",", "")), "result": result}
            if "edges" in result:
                summary["edges_total"] = sum(result["edges"].values())
        elif m := _TOTAL.search(line):
            summary["accounts"] = int(m[2].replace(",", ""))
    if not summary["stages"] or "accounts" not in summary:
        raise SystemExit(f"--compare-to {path}: neither a --json summary nor a log with stage lines")
    return summary


def growth_lines(before: dict[str, Any], after: dict[str, Any], label: str) -> list[str]:
    """Per step, time and peak RSS now over then, beside the accounts' and the edges' growth."""
    def ratio(a: float | None, b: float | None) -> str:
        return f"x{b / a:,.2f}" if a and b is not None else "-"

    accounts, edges = ratio(before.get("accounts"), after["accounts"]), ratio(before.get("edges_total"),
                                                                              after.get("edges_total"))
    lines = [f"growth against {label}: accounts {before.get('accounts', 0):,} -> {after['accounts']:,} ({accounts}),"
             f" edges {before.get('edges_total', 0):,} -> {after.get('edges_total', 0):,} ({edges})",
             "step            time      ratio   peak RSS   ratio   (the cost should grow no faster than the edges)"]
    steps = [("generation", before.get("generation"), after.get("generation"))]
    steps += [(n, before["stages"].get(n), after["stages"].get(n)) for n in STAGES]
    for name, then, now in steps:
        if not then or not now:
            continue
        lines.append(f"{name:<12} {now['seconds']:8.1f} s {ratio(then['seconds'], now['seconds']):>8}"
                     f" {now['rss_mib']:7,} MiB {ratio(then['rss_mib'], now['rss_mib']):>7}")
    return lines


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
    ap.add_argument("--post-span-days", type=float, default=7.0,
                    help="days the organic posts are spread over (default a week); 0.7 at 1M accounts packs as many"
                         " reposts a minute, and chance co-reposts, as 10M accounts over a week")
    ap.add_argument("--signup-span-share", type=float, default=1.0,
                    help="share of the default years the organic sign-ups are spread over; 0.1 at 1M accounts makes as"
                         " many sign-ups a day as 10M")
    ap.add_argument("--faces", help="real photos for the photo rings and organic avatars (default ../shared/data/faces)")
    ap.add_argument("--classic", action="store_true", help="the original generator: four kinds, uniform organic")
    ap.add_argument("--io", action="store_true",
                    help="an IO users file (OrganicMix.io(): date-only dates, hashed handles, no avatars or posts)"
                         " with the mass_signup operations (issue 23)")
    ap.add_argument("--io-users", help="also inject a real IO users CSV (kind io_release), e.g."
                                       " ../shared/data/twitter_io/cuba_092020_users_csv_hashed.csv")
    ap.add_argument("--home", help="data folder (default: a temporary folder, removed afterwards)")
    ap.add_argument("--json", help="write the figures (per step seconds and peak RSS, edges, per-kind metrics) here")
    ap.add_argument("--compare-to", help="an earlier run's --json file or log: print the growth per step against it")
    ap.add_argument("--phase", choices=["all", "generate", "stages", "stage"], default="all", help=argparse.SUPPRESS)
    ap.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.compare_to and not Path(args.compare_to).is_file():
        raise SystemExit(f"--compare-to {args.compare_to}: no such file")
    if args.phase == "generate":
        return generate(args, Path(args.home))
    if args.phase == "stages":
        return stages(args, Path(args.home))
    if args.phase == "stage":
        return stage(Path(args.home), args.stage, args.accounts)
    with tempfile.TemporaryDirectory(prefix="pa-network-bench-") as tmp:
        home = Path(args.home or tmp)
        common = [sys.executable, __file__, "--home", str(home), "--accounts", str(args.accounts),
                  "--posts-per-account", str(args.posts_per_account), "--seed", str(args.seed),
                  "--post-span-days", str(args.post_span_days), "--signup-span-share", str(args.signup_span_share),
                  *(["--faces", args.faces] if args.faces else []), *(["--classic"] if args.classic else []),
                  *(["--io"] if args.io else []), *(["--io-users", args.io_users] if args.io_users else [])]
        subprocess.run([*common, "--phase", "generate"], check=True)
        subprocess.run([*common, "--phase", "stages", *(["--json", args.json] if args.json else []),
                        *(["--compare-to", args.compare_to] if args.compare_to else [])], check=True)
        # the embedded server stops when its last client exits; a last client here makes sure it has
        dispose_engines()


if __name__ == "__main__":
    main()
