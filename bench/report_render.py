"""Evidence-report cost for one flagged cluster of growing size.

For each size N it builds a run with one flagged cluster of N accounts (each with its own stored
avatar, about 4 edges per account with evidence), then times:
- load: the report's own queries for the cluster (the floor any report pays);
- report: the whole report of the run (index and cluster page: thumbnails, SVGs, tables);
and prints seconds, the report/load ratio, the page size, and the growth ratio against the
smallest size measured in the same run. The page caps (tiles, graph nodes, table rows) keep a
page bounded however large the cluster grows. Embedded PostgreSQL in a temporary folder.

    .venv/bin/python bench/report_render.py --sizes 100,1000,5000
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from PIL import Image  # noqa: E402

from pipeline.config import load_settings  # noqa: E402
from pipeline.core import runs  # noqa: E402
from pipeline.core.db import ensure_schema, insert_rows, transaction  # noqa: E402
from pipeline.images.acquire import store_image, validate_image  # noqa: E402
from pipeline.reporting import html as html_report


def build_run(settings, run_key: str, size: int, rng: np.random.Generator) -> str:
    """One run, one flagged cluster of `size` accounts; returns the cluster id."""
    runs.start_run(settings, run_key, None, "generic", settings.policy().threshold_params())
    keys = [f"bench:{run_key}:{i:06d}" for i in range(size)]
    base = datetime(2025, 11, 3, tzinfo=timezone.utc)
    images, accounts, snapshots, avatars, signals = [], [], [], [], []
    for key in keys:
        pixels = rng.integers(0, 255, size=(64, 64, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).resize((256, 256)).save(buf, format="JPEG", quality=80)
        image = validate_image(buf.getvalue())
        store_image(settings, image)
        images.append({"sha256": image.sha256, "byte_size": len(image.data), "width": image.width,
                       "height": image.height, "format": image.format, "phash": image.phash,
                       "storage_path": image.storage_path})
        accounts.append({"k": key, "p": "bench", "a": key.split(":", 1)[1], "r": run_key})
        created = base + timedelta(minutes=int(rng.integers(0, 3 * 24 * 60)))
        snapshots.append({"r": run_key, "k": key, "h": f"name_surname{rng.integers(10**7, 10**8)}", "c": created})
        avatars.append({"r": run_key, "k": key, "s": image.sha256})
        p = float(rng.random())
        signals.append({"r": run_key, "k": key, "s": image.sha256, "p": p, "l": p > 0.5, "risk": 0.45 * p + 0.15,
                        "c": json.dumps({"synthetic_avatar": round(0.45 * p, 4), "template_handle": 0.15})})
    cluster_id = f"c{run_key}"
    edges = set()
    for i in range(size):
        for j in {(i + 1) % size, int(rng.integers(0, size)), int(rng.integers(0, size)), int(rng.integers(0, size))}:
            if i != j:
                a, b = sorted((keys[i], keys[j]))
                edges.add((a, b))
    with transaction(settings) as conn:
        insert_rows(conn, "insert into images (sha256, byte_size, width, height, format, phash, storage_path) values"
                          " (:sha256, :byte_size, :width, :height, :format, :phash, :storage_path) on conflict do nothing", images)
        insert_rows(conn, "insert into accounts (account_key, platform, account_id, first_seen_run) values (:k, :p, :a, :r)",
                    accounts)
        insert_rows(conn, "insert into account_snapshots (run_key, account_key, handle, created_at, source_file, source_locator)"
                          " values (:r, :k, :h, :c, 'bench', '0')", snapshots)
        insert_rows(conn, "insert into account_avatars (run_key, account_key, avatar_ref, sha256, status)"
                          " values (:r, :k, 'bench.jpg', :s, 'stored')", avatars)
        insert_rows(conn, "insert into account_signals (run_key, account_key, avatar_sha256, avatar_probability, avatar_label,"
                          " bio_empty, risk, contributions) values (:r, :k, :s, :p, :l, true, :risk, cast(:c as jsonb))",
                    signals)
        conn.execute(sa.text("insert into clusters (run_key, cluster_id, size, score, features)"
                             " values (:r, :c, :n, 0.9, '{}'::jsonb)"), {"r": run_key, "c": cluster_id, "n": size})
        insert_rows(conn, "insert into cluster_members (run_key, cluster_id, account_key) values (:r, :c, :k)",
                    ({"r": run_key, "c": cluster_id, "k": k} for k in keys))
        insert_rows(conn, "insert into edges (run_key, edge_type, a_key, b_key, weight, params, evidence) values"
                          " (:r, 'identical_bio', :a, :b, 1, '{\"min_length\": 8}'::jsonb, cast(:e as jsonb))",
                    ({"r": run_key, "a": a, "b": b, "e": json.dumps({"bio": "Patriot. Proud citizen."})} for a, b in edges))
        conn.execute(sa.text("insert into flags (flag_id, run_key, cluster_id, score, rules, evidence) values"
                             " (:f, :r, :c, 0.9, array['synthetic_faces'], cast(:e as jsonb))"),
                     {"f": f"f{run_key}", "r": run_key, "c": cluster_id,
                      "e": json.dumps({"rules": {"synthetic_faces": "bench"}, "features": {"size": size}})})
    return cluster_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,5000", help="cluster sizes, comma-separated")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(env={}, home=Path(tmp) / "home")
        ensure_schema(settings)
        print(f"{'members':>8} {'edges':>7} {'load s':>8} {'report s':>9} {'report/load':>12} {'page KiB':>9} {'growth':>7}")
        first = None
        for size in sizes:
            run_key = f"r{size}"
            cluster_id = build_run(settings, run_key, size, rng)
            with transaction(settings) as conn:  # warm-up: the first read after a bulk insert sets hint bits
                conn.execute(sa.text("analyze"))
                html_report._load_cluster(conn, run_key, cluster_id)
            start = time.perf_counter()
            with transaction(settings) as conn:
                data = html_report._load_cluster(conn, run_key, cluster_id)
            load = time.perf_counter() - start
            start = time.perf_counter()
            result = html_report.write_report(settings, run_key)
            seconds = time.perf_counter() - start
            page = result.path.parent / html_report.cluster_page_name(cluster_id)
            first = first or seconds
            print(f"{size:>8} {len(data['edges']):>7} {load:>8.3f} {seconds:>9.3f} {seconds / load:>12.1f}"
                  f" {page.stat().st_size / 1024:>9.0f} {seconds / first:>6.2f}x")


if __name__ == "__main__":
    main()
