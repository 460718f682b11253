"""One investigation across platforms (issue 23, item 4): a planted population written as three real exports (an X IO
release, Mastodon API accounts, Bluesky profile and post records; pipeline/testing/crossplatform.py), audited
into one run through the real CLI, ``profile-audit audit X_IO MASTODON BLUESKY``, in a temporary home with its
embedded PostgreSQL. Prints the audit's wall time, then per planted kind its precision and recall (and recall
per platform), the organic accounts flagged, and the false joins of the cross-platform edges: same-stem
edges between different identities, and edges touching a common-first-name account.

The audit runs without the shipped face detector by default (``PROFILE_AUDIT_SHIPPED_DETECTOR=0``: no CLIP
on the textured test pictures; the cross-platform edges compare image hashes, not labels); ``--detector``
keeps it.

    .venv/bin/python bench/crossplatform.py                     # 400 organic accounts per platform
    .venv/bin/python bench/crossplatform.py --organic 3000 --seed 1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PROFILE_AUDIT_NO_PROGRESS", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline.testing.crossplatform import evaluate, write_population  # noqa: E402


def run_audit(home: Path, paths: list[Path], detector: bool) -> tuple[dict, float]:
    env = {**os.environ, "PROFILE_AUDIT_HOME": str(home), "PYTHONPATH": str(REPO)}
    if not detector:
        env["PROFILE_AUDIT_SHIPPED_DETECTOR"] = "0"
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "pipeline.cli", "audit", *map(str, paths), "--json"],
                         capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise SystemExit(f"audit failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout), time.perf_counter() - started


def run_edges(home: Path, run_key: str) -> tuple[list[dict], list[dict]]:
    import sqlalchemy as sa

    from pipeline.config import load_settings
    from pipeline.core.db import dispose_engines, transaction

    settings = load_settings(env={}, home=home)
    with transaction(settings) as conn:
        rows = [dict(r) for r in conn.execute(sa.text("select edge_type, a_key, b_key, evidence from edges"
                                                      " where run_key = :k"), {"k": run_key}).mappings()]
        set_aside = [dict(r) for r in conn.execute(sa.text(
            "select cluster_id, size, features from clusters where run_key = :k and features ? 'not_flagged'"),
            {"k": run_key}).mappings()]
    dispose_engines()
    return rows, set_aside


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--organic", type=int, default=400, help="organic accounts per platform (default 400)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--detector", action="store_true", help="score avatars with the shipped face detector")
    ap.add_argument("--keep", help="write the exports and the home here (default: a temporary folder)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="xplat-bench-") as tmp:
        root = Path(args.keep or tmp)
        pop = write_population(root / "exports", organic=args.organic, seed=args.seed)
        paths = [pop.exports[p] for p in ("twitter", "mastodon", "bluesky")]
        result, seconds = run_audit(root / "home", paths, args.detector)
        summary = result["summary"]
        print(f"audit of {summary['accounts']:,} accounts ({summary['export_format']}) in {seconds:.0f} s;"
              f" edges {summary['edges']}; flags {summary['flags']}")
        edges, set_aside = run_edges(root / "home", summary["run_key"])
        m = evaluate(pop, result["flags"], edges)
        print("kind          accounts  precision  recall  recall twitter/mastodon/bluesky")
        for kind, k in m["kinds"].items():
            by = k["recall_by_platform"]
            print(f"{kind:<13} {k['accounts']:>8}  {k['precision']:>9}  {k['recall']:>6}"
                  f"  {by['twitter']}/{by['mastodon']}/{by['bluesky']}")
        print(f"all planted: precision {m['precision']}, recall {m['recall']}; organic accounts flagged"
              f" {m['organic_flagged']}")
        print(f"same_handle_stem edges {m['stem_edges']}, between different identities {m['stem_false_joins']};"
              f" edges touching a common-first-name account, by type: {m['common_name_edges'] or 0}")
        print(f"cross-platform edges by type: {m['cross_platform_edges']}")
        organic_set_aside = sum(1 for c in set_aside for _ in range(c["size"]))
        rules = sorted({r for c in set_aside for r in c["features"]["not_flagged"]["rules"]})
        print(f"clusters of fewer than min_cluster_size identities, not flagged: {len(set_aside)}"
              f" ({organic_set_aside} accounts; their rules set aside: {', '.join(rules) or '-'})")


if __name__ == "__main__":
    main()
