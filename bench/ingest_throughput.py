"""Ingest throughput on generated exports (IO users CSV, Bluesky CAR, Mastodon outbox), with peak RSS.

Generates IO users files in the real header (hashed ids for accounts under 5,000 followers, one
row in twenty with a multi-line quoted description), then for each size: ingests it into the
embedded PostgreSQL, and re-ingests the same file under the same run key. Prints accounts/s for
both, the re-ingest/first ratio, and this process's peak RSS after each size (the database
server is a separate process and not counted). Sizes run in ascending order, so a flat RSS
across sizes shows that memory does not grow with the file.

Then, for posts: a Bluesky CAR repository export and a Mastodon archive outbox of ``--posts`` items
each (one in five a repost/boost), each measured in a fresh child process: the reader alone (parse
only, the baseline), then the full ingest, then a re-ingest; it prints posts/s, the ingest/parse
ratio and the child's RSS before reading and at its peak (VmHWM). Several sizes in one run show whether
memory grows with the file.

    .venv/bin/python bench/ingest_throughput.py --rows 100000 1000000 --posts 100000 300000
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
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # export_fixtures: the writers

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


def _proc_status_mb(field: str) -> float:
    """VmRSS / VmHWM of this process image (Linux); unlike ru_maxrss, VmHWM restarts at exec, so a
    spawned child does not inherit the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return peak_rss_mb()


DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"


def car_records(n: int):
    """(key, record) in key order: posts with links and tags, then one in five a repost of another post."""
    reposts = n // 5
    for i in range(n - reposts):
        yield f"app.bsky.feed.post/3k{i:011d}", {
            "$type": "app.bsky.feed.post", "text": f"post {i} #tag{i % 50} https://news.example/{i % 997}",
            "createdAt": f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}T10:00:00.000Z", "langs": ["en"],
            "facets": [{"index": {"byteStart": 0, "byteEnd": 4},
                        "features": [{"$type": "app.bsky.richtext.facet#tag", "tag": f"tag{i % 50}"}]}]}
    for i in range(reposts):
        yield f"app.bsky.feed.repost/3k{i:011d}", {
            "$type": "app.bsky.feed.repost", "createdAt": "2024-06-01T10:00:00.000Z",
            "subject": {"uri": f"at://did:plc:z72i7hdynmk6r22z27h6tvur/app.bsky.feed.post/3k{i:011d}", "cid": "x"}}


def outbox_items(n: int):
    actor = "https://mastodon.social/users/ana"
    for i in range(n):
        if i % 5 == 4:
            yield {"id": f"{actor}/statuses/{i}/activity", "type": "Announce", "actor": actor,
                   "published": "2024-06-01T10:00:00Z", "object": f"https://fosstodon.org/users/bob/statuses/{i}"}
        else:
            yield {"id": f"{actor}/statuses/{i}/activity", "type": "Create", "actor": actor,
                   "published": "2024-05-01T10:00:00Z",
                   "object": {"id": f"{actor}/statuses/{i}", "type": "Note", "published": "2024-05-01T10:00:00Z",
                              "content": f'<p>post {i} <a href="https://news.example/{i % 997}">link</a></p>',
                              "tag": [{"type": "Hashtag", "name": f"#tag{i % 50}"}]}}


def _measure_posts(settings_home: str, database_url: str, export: str, fmt: str, queue) -> None:
    """In a fresh process: parse only, then ingest, then re-ingest; RSS before and at the peak."""
    from pipeline.ingest.readers import READERS, PostRecord

    rss_before = _proc_status_mb("VmRSS")
    started = time.perf_counter()
    parsed = sum(isinstance(i, PostRecord) for i in READERS[fmt].read(Path(export)))
    parse_s = time.perf_counter() - started
    settings = load_settings(env={}, home=Path(settings_home), database_url=database_url)
    run_key = f"bench:{fmt}:{parsed}"
    start_run(settings, run_key, export, fmt)
    started = time.perf_counter()
    first = ingest_export(settings, run_key, Path(export), fmt)
    ingest_s = time.perf_counter() - started
    started = time.perf_counter()
    again = ingest_export(settings, run_key, Path(export), fmt)
    again_s = time.perf_counter() - started
    assert first.posts == again.posts == parsed and first.rejected == 0, (first, again, parsed)
    with transaction(settings) as conn:  # keep the database small for the next size
        conn.exec_driver_sql("delete from posts; delete from account_snapshots; delete from accounts; delete from runs")
    queue.put((parsed, parse_s, ingest_s, again_s, rss_before, _proc_status_mb("VmHWM")))


def bench_posts(settings, root: Path, sizes: list[int]) -> None:
    import multiprocessing

    from export_fixtures import write_car, write_mastodon_archive_stream

    print(f"\n{'format':>16} {'posts':>8} {'file MB':>8} {'parse/s':>9} {'ingest/s':>9} {'ratio':>6} {'reingest/s':>10}"
          f" {'RSS before MB':>13} {'peak RSS MB':>11}")
    context = multiprocessing.get_context("spawn")
    for n in sorted(sizes):
        for fmt in ("bluesky_car", "mastodon_archive"):
            export = root / f"{fmt}_{n}"
            if fmt == "bluesky_car":
                export.mkdir()
                with (export / "repo.car").open("wb") as fh:
                    write_car(fh, DID, car_records(n))
                size = (export / "repo.car").stat().st_size
            else:
                write_mastodon_archive_stream(export, outbox_items(n))
                size = (export / "outbox.json").stat().st_size
            queue = context.Queue()
            child = context.Process(target=_measure_posts, args=(str(root / "home"), settings.database_url,
                                                                 str(export), fmt, queue))
            child.start()
            child.join()
            if child.exitcode != 0:
                raise SystemExit(f"the {fmt} measurement failed (exit code {child.exitcode})")
            parsed, parse_s, ingest_s, again_s, rss_before, rss_peak = queue.get(timeout=10)
            print(f"{fmt:>16} {parsed:>8} {size / 1e6:>8.1f} {parsed / parse_s:>9.0f} {parsed / ingest_s:>9.0f}"
                  f" {ingest_s / parse_s:>6.2f} {parsed / again_s:>10.0f} {rss_before:>13.0f} {rss_peak:>11.0f}",
                  flush=True)
            for path in sorted(export.rglob("*"), reverse=True):
                path.unlink() if path.is_file() else path.rmdir()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="*", default=[100_000, 1_000_000], help="users CSV sizes")
    parser.add_argument("--posts", type=int, nargs="*", default=[100_000], help="CAR and outbox sizes (posts)")
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
        if args.posts:
            bench_posts(settings, root, args.posts)
        from pipeline.core.db import dispose_engines

        dispose_engines()


if __name__ == "__main__":
    main()
