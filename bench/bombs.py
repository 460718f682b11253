"""Hostile-file bombs through the real readers: seconds and peak RSS for each, against a benign file of
the same size read by the same reader in the same run (issue 13, items 2 and 10).

Bombs: a personal-archive zip whose tweets member inflates ~1000:1 (1 GiB of padding in about 1 MB),
against an archive of 20,000 real-shaped tweets; a JSON array whose record nests 1,000 and 100,000 levels deep, one JSON line of N MB, one CSV line of
N MB, and a JSON array padded with N MB of whitespace. Each file is read in a fresh child process
(so its peak RSS is its own), which reports the records kept, the rejections and the first reason.

    .venv/bin/python bench/bombs.py --zip-mib 1024 --line-mib 200
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
MIB = 1 << 20


def child(fmt: str, path: str) -> None:
    """Read one file with one reader; print what came out, the seconds and this process's peak RSS."""
    from pipeline.ingest.readers import READERS, Rejection

    started = time.perf_counter()
    kept = rejected = 0
    first = None
    for item in READERS[fmt].read(Path(path)):
        if isinstance(item, Rejection):
            rejected += 1
            first = first or item.reason
        else:
            kept += 1
    print(json.dumps({"seconds": time.perf_counter() - started, "kept": kept, "rejected": rejected,
                      "reason": first, "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def measure(fmt: str, path: Path) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", fmt, str(path)], capture_output=True, text=True,
                          check=False, env={**os.environ, "PROFILE_AUDIT_NO_PROGRESS": "1"})
    if done.returncode != 0:
        return {"seconds": float("nan"), "kept": 0, "rejected": 0, "rss_mib": float("nan"),
                "reason": "CRASHED: " + (done.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _account(i: int) -> str:
    return json.dumps({"id": str(i), "username": f"u{i}", "acct": f"u{i}@x.social", "display_name": f"U {i}",
                       "created_at": "2023-01-01T00:00:00Z", "note": "n" * 200, "url": f"https://x.social/@u{i}",
                       "avatar": "", "followers_count": 1, "following_count": 1, "statuses_count": 1})


def write_jsonl(path: Path, size: int) -> None:
    with path.open("w") as fh:
        i = 0
        while fh.tell() < size:
            fh.write(_account(i) + "\n")
            i += 1


def write_long_json_line(path: Path, size: int) -> None:
    with path.open("w") as fh:
        fh.write(_account(0) + "\n" + '{"note": "')
        for _ in range(size // MIB):
            fh.write("x" * MIB)
        fh.write('"}\n' + _account(1) + "\n")


def write_deep(path: Path, depth: int) -> None:
    path.write_text("[" + _account(0) + ", " + "[" * depth + "]" * depth + ", " + _account(1) + "]")


def write_padded_array(path: Path, size: int) -> None:
    with path.open("w") as fh:
        fh.write("[" + _account(0) + ",")
        for _ in range(size // MIB):
            fh.write(" " * MIB)
        fh.write(_account(1) + "]")


def write_io_csv(path: Path, size: int, long_line: bool) -> None:
    from export_fixtures import IO_USER_COLUMNS

    def row(i: int, bio: str) -> str:
        values = {"userid": str(i), "user_screen_name": f"u{i}", "user_profile_description": bio,
                  "follower_count": "1", "following_count": "1", "account_creation_date": "2020-01-01"}
        return ",".join(values.get(c, "") for c in IO_USER_COLUMNS) + "\n"

    with path.open("w", newline="") as fh:
        fh.write(",".join(IO_USER_COLUMNS) + "\n")
        fh.write(row(0, "first"))
        if long_line:
            fh.write("1,")
            for _ in range(size // MIB):
                fh.write("z" * MIB)
            fh.write("\n")
        i = 2
        while fh.tell() < size:
            fh.write(row(i, "b" * 200))
            i += 1
        fh.write(row(i, "last"))


def write_archive(path: Path, padding: int) -> None:
    """A personal archive (the test fixture's members) plus a tweets file: padding, or real tweets."""
    from export_fixtures import write_personal_archive

    write_personal_archive(path)
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as zf, \
            zf.open("data/tweets-part1.js", "w", force_zip64=True) as fh:
        fh.write(b"window.YTD.tweets.part1 = [")
        if padding:
            block = b" " * MIB
            for _ in range(padding // MIB):
                fh.write(block)
        else:
            fh.write(b",".join(json.dumps({"tweet": {"id_str": str(i), "created_at": "Mon Jan 02 10:00:00 +0000 2023",
                                                     "full_text": f"tweet {i}"}}).encode() for i in range(20_000)))
        fh.write(b"]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zip-mib", type=int, default=256, help="inflated padding in the zip bomb (issue: 1024)")
    parser.add_argument("--line-mib", type=int, default=64, help="size of the long-line bombs (issue: 200)")
    parser.add_argument("--child", nargs=2, metavar=("FORMAT", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    with tempfile.TemporaryDirectory(prefix="pa-bombs-") as tmp:
        folder = Path(tmp)
        line = args.line_mib * MIB
        cases = []  # (name, format, bomb path, benign path)

        def add(name, fmt, bomb, benign, write_bomb, write_benign):
            write_bomb(folder / bomb)
            write_benign(folder / benign)
            cases.append((name, fmt, folder / bomb, folder / benign))

        add(f"zip member inflating {args.zip_mib} MiB", "twitter_archive", "bomb.zip", "benign.zip",
            lambda p: write_archive(p, args.zip_mib * MIB), lambda p: write_archive(p, 0))
        for depth in (1_000, 100_000):
            add(f"JSON record {depth:,} deep", "mastodon", f"deep{depth}.json", f"flat{depth}.json",
                lambda p, d=depth: write_deep(p, d), lambda p, d=depth: write_jsonl(p, 2 * d + 1000))
        add(f"one JSON line of {args.line_mib} MiB", "mastodon", "long.jsonl", "lines.jsonl",
            lambda p: write_long_json_line(p, line), lambda p: write_jsonl(p, line))
        add(f"JSON array padded with {args.line_mib} MiB of spaces", "mastodon", "padded.json", "lines2.jsonl",
            lambda p: write_padded_array(p, line), lambda p: write_jsonl(p, line))
        add(f"one CSV line of {args.line_mib} MiB", "twitter_io", "long_users_csv_hashed.csv",
            "users_csv_hashed.csv", lambda p: write_io_csv(p, line, True), lambda p: write_io_csv(p, line, False))
        print(f"{'bomb':<40} {'file MiB':>8} {'s':>7} {'RSS MiB':>8} | {'benign s':>8} {'RSS MiB':>8} | "
              f"{'s ratio':>7}  kept/rejected  first reason")
        for name, fmt, bomb, benign in cases:
            b, g = measure(fmt, bomb), measure(fmt, benign)
            print(f"{name:<40} {bomb.stat().st_size / MIB:8.1f} {b['seconds']:7.2f} {b['rss_mib']:8.0f} | "
                  f"{g['seconds']:8.2f} {g['rss_mib']:8.0f} | {b['seconds'] / max(g['seconds'], 1e-9):7.2f}  "
                  f"{b['kept']}/{b['rejected']}  {(b['reason'] or '')[:70]}", flush=True)


if __name__ == "__main__":
    main()
