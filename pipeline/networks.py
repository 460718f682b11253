"""Stage 5, networks: typed, evidenced edges between accounts, then clusters (connected components).

Edges in this version:
- ``identical_avatar``: accounts showing the same image (sha256). Linked as a star around the
  smallest account key, so a group of n gives n-1 edges, not n^2. Groups larger than
  ``identical_avatar_max_group`` are platform defaults, not operations, and are skipped.
- ``creation_window``: accounts created within ``creation_window_hours`` of each other that share
  a trait: a templated handle (>= ``min_template_digits`` trailing digits), an identical bio, or a
  likely-synthetic avatar. Creation time alone is too common on a large platform to link anyone.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable

import sqlalchemy as sa

from pipeline.config import NetworkParams, Settings
from pipeline.db import insert_rows, transaction


@dataclass(frozen=True)
class Edge:
    edge_type: str
    a_key: str
    b_key: str
    weight: float
    params: dict[str, Any]
    evidence: dict[str, Any]

    @classmethod
    def between(cls, edge_type: str, x: str, y: str, weight: float, params: dict, evidence: dict) -> "Edge":
        a, b = sorted((x, y))
        return cls(edge_type, a, b, weight, params, evidence)


@dataclass(frozen=True)
class AccountTraits:
    account_key: str
    created_at: datetime | None
    avatar_sha256: str | None
    avatar_label: bool | None
    handle_template: str | None
    handle_digits: int
    bio: str | None


def identical_avatar_edges(accounts: Iterable[AccountTraits], params: NetworkParams) -> list[Edge]:
    groups: dict[str, list[str]] = defaultdict(list)
    for acc in accounts:
        if acc.avatar_sha256:
            groups[acc.avatar_sha256].append(acc.account_key)
    edges = []
    used = {"identical_avatar_max_group": params.identical_avatar_max_group}
    for sha, members in sorted(groups.items()):
        if not 2 <= len(members) <= params.identical_avatar_max_group:
            continue
        hub, *rest = sorted(members)
        edges += [Edge.between("identical_avatar", hub, m, 1.0, used, {"sha256": sha, "group_size": len(members)})
                  for m in rest]
    return edges


def _normalised_bio(bio: str | None) -> str | None:
    text = " ".join((bio or "").lower().split())
    return text if len(text) >= 8 else None  # very short bios ('hi') are not a shared trait


def creation_window_edges(accounts: Iterable[AccountTraits], params: NetworkParams) -> list[Edge]:
    """Chain accounts sharing a trait whose creation times lie within the window of each other."""
    window = params.creation_window_hours * 3600
    used = {"creation_window_hours": params.creation_window_hours, "min_template_digits": params.min_template_digits}
    by_trait: dict[tuple[str, str], list[AccountTraits]] = defaultdict(list)
    for acc in accounts:
        if acc.created_at is None:
            continue
        if acc.handle_digits >= params.min_template_digits and acc.handle_template:
            by_trait[("handle_template", acc.handle_template)].append(acc)
        if (bio := _normalised_bio(acc.bio)) is not None:
            by_trait[("identical_bio", bio)].append(acc)
        if acc.avatar_label:
            by_trait[("synthetic_avatar", "label")].append(acc)
    edges: dict[tuple[str, str], Edge] = {}
    for (trait, value), members in sorted(by_trait.items()):
        members.sort(key=lambda a: (a.created_at, a.account_key))
        for prev, cur in zip(members, members[1:]):
            delta = (cur.created_at - prev.created_at).total_seconds()
            if delta > window:
                continue
            key = tuple(sorted((prev.account_key, cur.account_key)))
            evidence = {
                "traits": [trait],
                "value": value if trait != "synthetic_avatar" else None,
                "created_at": [prev.created_at.isoformat(), cur.created_at.isoformat()],
                "delta_hours": round(delta / 3600, 3),
            }
            if key in edges:  # several shared traits: one edge, stronger, naming all of them
                old = edges[key]
                evidence = {**old.evidence, "traits": sorted(set(old.evidence["traits"]) | {trait})}
            edges[key] = Edge.between("creation_window", *key, 0.5 * len(evidence["traits"]), used, evidence)
    return list(edges.values())


def connected_components(nodes: Iterable[str], edges: Iterable[Edge]) -> list[list[str]]:
    parent: dict[str, str] = {n: n for n in nodes}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for e in edges:
        ra, rb = find(e.a_key), find(e.b_key)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[str, list[str]] = defaultdict(list)
    for n in parent:
        groups[find(n)].append(n)
    return sorted((sorted(g) for g in groups.values()), key=lambda g: (-len(g), g[0]))


def cluster_id_of(members: list[str]) -> str:
    """Derived from the member set: the same members give the same id on every rerun."""
    return "c" + hashlib.sha256("\n".join(sorted(members)).encode()).hexdigest()[:12]


def _load_traits(conn: sa.Connection, run_key: str) -> list[AccountTraits]:
    rows = conn.execute(
        sa.text(
            "select s.account_key, s.created_at, g.avatar_sha256, g.avatar_label, g.handle_template,"
            " handle_digit_suffix(s.handle) as digits, s.bio"
            " from account_snapshots s join account_signals g using (run_key, account_key)"
            " where s.run_key = :k order by s.account_key"
        ),
        {"k": run_key},
    )
    return [AccountTraits(r.account_key, r.created_at, r.avatar_sha256, r.avatar_label, r.handle_template,
                          r.digits, r.bio) for r in rows]


@dataclass(frozen=True)
class NetworkResult:
    edges: dict[str, int]
    clusters: int


def build_networks(settings: Settings, run_key: str, params: NetworkParams) -> NetworkResult:
    """Replace the run's edges and clusters."""
    with transaction(settings) as conn:
        traits = _load_traits(conn, run_key)
        edges = identical_avatar_edges(traits, params) + creation_window_edges(traits, params)
        components = [c for c in connected_components((t.account_key for t in traits), edges)
                      if len(c) >= params.min_cluster_size]
        conn.execute(sa.text("delete from edges where run_key = :k"), {"k": run_key})
        conn.execute(sa.text("delete from clusters where run_key = :k"), {"k": run_key})
        insert_rows(
            conn,
            "insert into edges (run_key, edge_type, a_key, b_key, weight, params, evidence) values"
            " (:k, :t, :a, :b, :w, cast(:p as jsonb), cast(:e as jsonb))"
            " on conflict (run_key, edge_type, a_key, b_key) do update set weight = greatest(edges.weight, excluded.weight)",
            ({"k": run_key, "t": e.edge_type, "a": e.a_key, "b": e.b_key, "w": e.weight,
              "p": json.dumps(e.params, sort_keys=True), "e": json.dumps(e.evidence, sort_keys=True)} for e in edges),
        )
        for members in components:
            cid = cluster_id_of(members)
            conn.execute(
                sa.text("insert into clusters (run_key, cluster_id, size, score, features)"
                        " values (:k, :c, :n, 0, '{}'::jsonb)"),
                {"k": run_key, "c": cid, "n": len(members)},
            )
            insert_rows(conn, "insert into cluster_members (run_key, cluster_id, account_key) values (:k, :c, :a)",
                        ({"k": run_key, "c": cid, "a": m} for m in members))
    counts: dict[str, int] = defaultdict(int)
    for e in edges:
        counts[e.edge_type] += 1
    return NetworkResult(dict(sorted(counts.items())), len(components))
