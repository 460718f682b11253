"""Evidence export for one cluster: its members with their signals, every edge inside it with the
parameters and evidence that made it, and its flag. JSON (one document) or CSV (three files), so an
investigator can hand a case to someone without database access.

CSV cells are made safe to open in a spreadsheet: a cell starting with = + - @ tab or CR gets a leading
single quote (OWASP's CSV-injection rule), and control and bidi characters are escaped. JSON keeps
the values as recorded (``json.dumps`` escapes control characters itself)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from pipeline.config import Settings
from pipeline.core.db import transaction
from pipeline.core.storage import atomic_write
from pipeline.core.visible import csv_cell
from pipeline.errors import UserError

MEMBER_COLUMNS = ("account_key", "platform", "account_id", "handle", "display_name", "created_at", "bio", "url",
                  "followers", "following", "avatar_sha256", "avatar_probability", "avatar_label",
                  "avatar_parts", "avatar_reuse_count", "near_duplicate_count", "handle_template", "risk", "contributions")
EDGE_COLUMNS = ("edge_type", "a_key", "b_key", "weight", "params", "evidence")


def load_cluster(conn: sa.Connection, run_key: str, cluster_id: str) -> dict[str, Any] | None:
    """One cluster of one run as recorded: its row, its flag (or None), its members with their snapshot,
    signals and stored avatar path, and every edge between two members. None when there is no such
    cluster. The evidence export and the HTML report both read clusters through here."""
    cluster = conn.execute(sa.text("select run_key, cluster_id, size, score, features from clusters"
                                   " where run_key = :k and cluster_id = :c"),
                           {"k": run_key, "c": cluster_id}).mappings().first()
    if cluster is None:
        return None
    flag = conn.execute(sa.text("select flag_id, kind, score, rules, status, status_note, evidence from flags"
                                " where run_key = :k and cluster_id = :c"),
                        {"k": run_key, "c": cluster_id}).mappings().first()
    members = conn.execute(sa.text(
        "select m.account_key, a.platform, a.account_id, s.handle, s.display_name, s.created_at, s.bio, s.url,"
        " g.followers, g.following, g.avatar_sha256, g.avatar_probability, g.avatar_label, g.avatar_parts,"
        " g.avatar_reuse_count,"
        " g.near_duplicate_count, g.handle_template, g.risk, g.contributions, i.storage_path"
        " from cluster_members m join accounts a using (account_key)"
        " left join account_snapshots s on s.run_key = m.run_key and s.account_key = m.account_key"
        " left join account_signals g on g.run_key = m.run_key and g.account_key = m.account_key"
        " left join images i on i.sha256 = g.avatar_sha256"
        " where m.run_key = :k and m.cluster_id = :c order by m.account_key"),
        {"k": run_key, "c": cluster_id}).mappings().all()
    edges = conn.execute(sa.text(
        "select e.edge_type, e.a_key, e.b_key, e.weight, e.params, e.evidence from edges e"
        " join cluster_members ma on ma.run_key = e.run_key and ma.account_key = e.a_key and ma.cluster_id = :c"
        " join cluster_members mb on mb.run_key = e.run_key and mb.account_key = e.b_key and mb.cluster_id = :c"
        " where e.run_key = :k order by e.edge_type, e.a_key, e.b_key"),
        {"k": run_key, "c": cluster_id}).mappings().all()
    return {**dict(cluster), "flag": dict(flag) if flag else None,
            "members": [dict(m) for m in members], "edges": [dict(e) for e in edges]}


def cluster_evidence(settings: Settings, cluster_id: str, run_key: str | None = None) -> dict[str, Any]:
    """Everything recorded about one cluster in one run (default: the latest run that has it)."""
    with transaction(settings) as conn:
        if run_key is None:
            run_key = conn.execute(sa.text(
                "select c.run_key from clusters c join runs r using (run_key) where c.cluster_id = :c"
                " order by r.started_at desc, c.run_key desc limit 1"), {"c": cluster_id}).scalar()
        cluster = load_cluster(conn, run_key, cluster_id) if run_key else None
    if cluster is None:
        where = f" in run {run_key}" if run_key else ""
        raise UserError(f"no cluster {cluster_id!r}{where}; list flagged clusters with `profile-audit flags`")
    flag, flag_view = cluster["flag"], None
    if flag is not None:
        flag_view = {k: flag[k] for k in ("flag_id", "kind", "score", "rules", "status", "status_note")}
        flag_view["reasons"] = flag["evidence"].get("rules", {})
    return {"run_key": run_key, "cluster_id": cluster_id, "size": cluster["size"], "score": cluster["score"],
            "features": cluster["features"], "flag": flag_view,
            "members": [{c: m.get(c) for c in MEMBER_COLUMNS} for m in cluster["members"]], "edges": cluster["edges"]}


def _cell(value: Any) -> Any:
    """JSON for nested values; formulas defused and hidden characters escaped (pipeline/core/visible.py)."""
    if isinstance(value, (dict, list)):
        value = json.dumps(value, sort_keys=True, default=str)
    return csv_cell(value)


def write_evidence(data: dict[str, Any], fmt: str, out: Path | None) -> list[Path]:
    """JSON: one file (``out``), or stdout when ``out`` is None. CSV: cluster.csv, members.csv and
    edges.csv in the folder ``out`` (default ./evidence-<cluster_id>). Returns the files written."""
    if fmt == "json":
        text = json.dumps(data, indent=2, sort_keys=True, default=str)
        if out is None:
            print(text)
            return []
        atomic_write(out, text + "\n")
        return [out]
    if fmt != "csv":
        raise UserError(f"unknown evidence format {fmt!r}; use csv or json")
    folder = out or Path(f"evidence-{data['cluster_id']}")
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder} is a file; CSV evidence is three files, give --out a folder")
    folder.mkdir(parents=True, exist_ok=True)
    flag = data["flag"] or {}
    tables = {
        "cluster.csv": (("run_key", "cluster_id", "size", "score", "flag_id", "flag_status", "status_note", "rules",
                         "reasons", "features"),
                        [(data["run_key"], data["cluster_id"], data["size"], data["score"], flag.get("flag_id"),
                          flag.get("status"), flag.get("status_note"), flag.get("rules"), flag.get("reasons"),
                          data["features"])]),
        "members.csv": (MEMBER_COLUMNS, [tuple(m.get(c) for c in MEMBER_COLUMNS) for m in data["members"]]),
        "edges.csv": (EDGE_COLUMNS, [tuple(e[c] for c in EDGE_COLUMNS) for e in data["edges"]]),
    }
    written = []
    for name, (header, rows) in tables.items():
        buf = io.StringIO(newline="")
        writer = csv.writer(buf)
        writer.writerow(header)
        writer.writerows([_cell(v) for v in row] for row in rows)
        written.append(atomic_write(folder / name, buf.getvalue()))
    return written
