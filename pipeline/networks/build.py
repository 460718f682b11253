"""Stage `networks`: typed, evidenced edges between accounts, then clusters.

Edge builders live in pipeline/networks/edges.py (image, embedding, account traits; bursts in
pipeline/networks/bursts.py) and
pipeline/networks/coactivity.py (co_repost, co_link, co_post from posts); clustering and cross-run
identity in pipeline/networks/clusters.py. This module loads the run's data, writes the rows, and keeps the
stage idempotent: it replaces the run's edges, clusters and members.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from pipeline.config import EdgeWeights, FlagParams, ImageParams, NetworkParams, Policy, Settings
from pipeline.core.bulk import copy_rows
from pipeline.core.db import transaction
from pipeline.images.matching import PictureMatch
from pipeline.networks import edges as E
from pipeline.networks.crossplatform import crossplatform_edges, mark_platforms
from pipeline.networks.traits import TraitColumns, load_columns
from pipeline.networks.clusters import Cluster, assign_ids, find_clusters, pair_chance_shares, strong_pairs

log = logging.getLogger(__name__)


def load_traits(conn: sa.Connection, run_key: str) -> list[E.AccountTraits]:
    """Every account of the run as a dataclass (small runs and tests; the stage reads columns,
    ``traits.load_columns``)."""
    rows = conn.execute(
        sa.text(
            "select s.account_key, s.created_at, g.avatar_sha256, g.avatar_label, g.handle_template,"
            " handle_digit_suffix(s.handle) as digits, s.bio, s.url, s.followers, s.following, s.posts,"
            " s.language, s.location"
            " from account_snapshots s join account_signals g using (run_key, account_key)"
            " where s.run_key = :k order by s.account_key"
        ),
        {"k": run_key},
    )
    return [E.AccountTraits(r.account_key, r.created_at, r.avatar_sha256, r.avatar_label, r.handle_template,
                            r.digits, r.bio, r.url, r.followers, r.following, r.posts, r.language, r.location)
            for r in rows]


_AVATARS = ("select g.avatar_sha256, s.account_key from account_snapshots s join account_signals g"
            " using (run_key, account_key) where s.run_key = :k and g.avatar_sha256 <> ''")


def shared_avatar_groups(conn: sa.Connection, run_key: str, params: ImageParams) -> dict[str, list[str]]:
    """The run's ``image_groups`` of two accounts or more (the identical-avatar edges), grouped by the
    database: at 10M accounts nearly every image is one account's, and none of those is fetched."""
    return E.avatar_groups(conn.execute(sa.text(
        _AVATARS + " and g.avatar_sha256 in (select g.avatar_sha256 from account_snapshots s join account_signals g"
        " using (run_key, account_key) where s.run_key = :k and g.avatar_sha256 <> ''"
        " group by g.avatar_sha256 having count(*) between 2 and :max)"),
        {"k": run_key, "max": params.identical_avatar_max_group}), params)


def avatar_groups_of(conn: sa.Connection, run_key: str, shas: Iterable[str], params: ImageParams) -> dict[str, list[str]]:
    """The run's ``image_groups`` restricted to these images (those of near-duplicate pairs and embeddings):
    the same hub account for each as the groups of every image would give."""
    wanted = sorted(set(shas))
    if not wanted:
        return {}
    return E.avatar_groups(conn.execute(sa.text(_AVATARS + " and g.avatar_sha256 = any(:s)"),
                                       {"k": run_key, "s": wanted}), params)


def _embedding_rows(conn: sa.Connection, run_key: str) -> tuple[str, list[str], np.ndarray] | None:
    """The detector's backbone, and the run's distinct avatars labelled synthetic with their embeddings
    by it; None where there are no similar_embedding edges to build."""
    backbone = conn.execute(sa.text("select d.backbone_id from runs r join detectors d using (detector_id)"
                                    " where r.run_key = :k"), {"k": run_key}).scalar()
    if backbone is None:
        return None
    from detectors.backbone import is_random_backbone_id

    if is_random_backbone_id(backbone):
        log.info("no similar_embedding edges in %s: the detector's backbone %s has random weights", run_key, backbone)
        return None
    rows = conn.execute(
        sa.text("select e.sha256, e.vector from embeddings e where e.backbone_id = :b and e.sha256 in"
                " (select distinct avatar_sha256 from account_signals where run_key = :k and avatar_label)"
                " order by e.sha256"),
        {"k": run_key, "b": backbone},
    ).all()
    if len(rows) < 2:
        return None
    return backbone, [r.sha256 for r in rows], np.array([r.vector for r in rows], dtype=np.float32)


def _image_ring_inputs(conn: sa.Connection, near: list[tuple[str, str, int]], groups: dict[str, list[str]],
                       params: ImageParams, image_dir: Path | None
                       ) -> tuple[dict[str, E.ImageInfo], dict[tuple[str, str], PictureMatch]]:
    """dHash and detail of the images in near-duplicate pairs, and the local-feature match of each pair
    that may confirm (``E.ring_candidates``), from the stored pixels (``image_dir``: the settings'
    images folder). An image whose file is missing or unreadable confirms nothing (counted in the log).
    Each image is decoded and its keypoints found once, however many pairs it is in."""
    shas = sorted({s for a, b, _ in near for s in (a, b)})
    if not shas:
        return {}, {}
    rows = conn.execute(sa.text("select sha256, dhash, detail, storage_path from images where sha256 = any(:s)"),
                        {"s": shas}).all()
    images = {r.sha256: E.ImageInfo(int(r.dhash, 16) if r.dhash else None, r.detail) for r in rows}
    candidates = E.ring_candidates(groups, near, images, params)
    if not candidates or image_dir is None:
        return images, {}
    from pipeline.images.acquire import ImageRejected, decode_image
    from pipeline.images.matching import MATCH_SIDE, compare_pictures, keypoints

    paths = {r.sha256: r.storage_path for r in rows}
    pictures: dict[str, tuple | None] = {}

    def picture(sha: str) -> tuple | None:
        if sha not in pictures:
            try:
                rgb = decode_image((image_dir / paths[sha]).read_bytes(), (MATCH_SIDE, MATCH_SIDE))[1]
                pictures[sha] = (rgb, keypoints(rgb))
            except (OSError, ImageRejected) as exc:
                log.warning("image ring: %s cannot be read for the local-feature match (%s)", sha[:16], exc)
                pictures[sha] = None
        return pictures[sha]

    matches: dict[tuple[str, str], PictureMatch] = {}
    for a, b, _ in candidates:
        pa, pb = picture(a), picture(b)
        if pa is not None and pb is not None:
            matches[(min(a, b), max(a, b))] = compare_pictures(pa[0], pb[0], pa[1], pb[1])
    missing = sum(p is None for p in pictures.values())
    log.info("image ring: %d near-duplicate pairs matched point by point, %d images unreadable", len(matches), missing)
    return images, matches


def previous_run(conn: sa.Connection, run_key: str) -> str | None:
    """The run whose clusters this one is matched to: the predecessor pinned on the run row at begin
    (for a nightly, the previous day; skipped days are walked over), never "whichever run finished
    last", so ids do not depend on the order runs ran in. Investigations and CLI runs have none: their
    flags keep statuses across reruns by flag id (run key + cluster id)."""
    from pipeline.core.runs import lineage_predecessor

    return lineage_predecessor(conn, run_key)


@dataclass(frozen=True)
class NetworkResult:
    edges: dict[str, int]
    clusters: int


def _creation_edges(conn: sa.Connection, run_key: str, traits: TraitColumns, network: NetworkParams,
                    weights: EdgeWeights) -> list[E.Edge]:
    """Creation-window edges against the run's baseline (pipeline/networks/baseline.py): bursts against the
    run's accounts (and a pinned baseline run's), or, for an IO release alone, its creation batches."""
    from pipeline.networks.baseline import run_baseline

    baseline = run_baseline(conn, run_key)
    if not baseline.organic:
        return E.creation_batch_edges(traits, network, weights=weights)
    return E.creation_window_edges(traits, network, weights=weights, baseline=baseline.times)


def _image_edges(conn: sa.Connection, run_key: str, image: ImageParams, w: EdgeWeights,
                 image_dir: Path | None) -> Iterator[list[E.Edge]]:
    """identical_avatar, near_duplicate_avatar, confirmed_near_duplicate and similar_embedding edges, in that order."""
    yield E.identical_avatar_edges_of(shared_avatar_groups(conn, run_key, image), image, weights=w)
    near = [tuple(r) for r in conn.execute(sa.text("select sha_a, sha_b, distance from avatar_near_duplicates"
                                                   " where run_key = :k order by sha_a, sha_b"), {"k": run_key})]
    embedded = _embedding_rows(conn, run_key)
    groups = avatar_groups_of(conn, run_key, [s for a, b, _ in near for s in (a, b)] + (embedded[1] if embedded else []),
                              image)
    images, matches = _image_ring_inputs(conn, near, groups, image, image_dir)
    yield E.near_duplicate_edges(groups, near, image, weights=w)
    yield E.confirmed_near_duplicate_edges(groups, near, images, matches, image, weights=w)
    if embedded is not None:
        backbone, shas, vectors = embedded
        yield E.similar_embedding_edges(groups, shas, vectors, image, backbone, weights=w)


def build_edges(conn: sa.Connection, run_key: str, policy: Policy, image_dir: Path | None = None) -> dict[str, int]:
    """Replace the run's edges of every type; returns counts per type. ``policy``: the run's
    (``RunContext.policy``): its image and network thresholds and its edge weights. ``image_dir``: where the
    stored images are (``Settings.image_dir``); without it no image ring is confirmed.

    Memory stays bounded at millions of accounts: avatars are grouped by the database (only shared
    images and those of near-duplicate pairs or embeddings are fetched), the account traits are numpy
    columns streamed from a server-side cursor (pipeline/networks/traits.py), each builder's edges are
    written as soon as they are built, and the columns are dropped before the post edges."""
    image, network, w = policy.image, policy.network, policy.edge
    conn.execute(sa.text("delete from edges where run_key = :k"), {"k": run_key})
    counts: Counter[str] = Counter()

    def write(built: list[E.Edge]) -> None:
        copy_rows(conn, "edges", ("run_key", "edge_type", "a_key", "b_key", "weight", "params", "evidence"),
                  ((run_key, e.edge_type, e.a_key, e.b_key, e.weight, json.dumps(e.params, sort_keys=True),
                    json.dumps(e.evidence, sort_keys=True)) for e in built))
        counts.update(e.edge_type for e in built)

    for built in _image_edges(conn, run_key, image, w, image_dir):
        write(built)
    traits = load_columns(conn, run_key)
    write(_creation_edges(conn, run_key, traits, network, w))
    write(E.identical_text_edges(traits, network, weights=w))
    del traits
    write(crossplatform_edges(conn, run_key, network, w))
    from pipeline.networks.coactivity import build_post_edges

    counts.update(build_post_edges(conn, run_key, network))
    mark_platforms(conn, run_key)  # every edge across platforms names both in its evidence
    return dict(sorted(counts.items()))


def gated_coactivity_edges(conn: sa.Connection, run_key: str, flag: FlagParams) -> list[dict]:
    """The run's co-activity edges with a chance estimate that pass the weight and IDF gates
    (``rules.passes_coactivity_gates``): edge_type, a_key, b_key and ``expected`` (evidence
    ``chance.expected_chance_pairs``). The family both chance shares are taken over."""
    from pipeline.flags.rules import passes_coactivity_gates
    from pipeline.networks.edge_types import names_in

    rows = conn.execute(sa.text(
        "select edge_type, a_key, b_key, weight, jsonb_build_object('idf_weight_a_to_b', evidence->'idf_weight_a_to_b',"
        " 'idf_weight_b_to_a', evidence->'idf_weight_b_to_a') as evidence,"
        " (evidence->'chance'->>'expected_chance_pairs')::float8 as expected"
        " from edges where run_key = :k and edge_type = any(:t) and evidence ? 'chance'"),
        {"k": run_key, "t": list(names_in("coactivity"))}).mappings()
    return [{k: r[k] for k in ("edge_type", "a_key", "b_key", "expected")} for r in rows
            if passes_coactivity_gates(dict(r), flag)]


def mark_run_chance_shares(conn: sa.Connection, run_key: str, gated: list[dict]) -> dict[tuple[str, str, str], float]:
    """Write ``edges_as_unlikely`` and ``run_chance_share`` into ``evidence.chance`` of each gated edge
    (``gated_coactivity_edges``): Benjamini-Hochberg over the gated edges of its type, ranked by the chance pairs
    expected at least as unlikely (``clusters.pair_chance_shares``, as for pairs). Returns the share per
    (edge_type, a_key, b_key)."""
    by_type: dict[str, dict[tuple[str, str], float]] = {}
    for r in gated:
        by_type.setdefault(r["edge_type"], {})[(r["a_key"], r["b_key"])] = r["expected"]
    marks = [(edge_type, a, b, rank, share) for edge_type, expected in sorted(by_type.items())
             for (a, b), (rank, share) in pair_chance_shares(expected).items()]
    if marks:
        conn.execute(sa.text("create temporary table _chance_marks (edge_type text, a_key text, b_key text,"
                             " marks jsonb) on commit drop"))
        copy_rows(conn, "_chance_marks", ("edge_type", "a_key", "b_key", "marks"),
                  ((t, a, b, json.dumps({"edges_as_unlikely": rank, "run_chance_share": share}))
                   for t, a, b, rank, share in marks))
        conn.execute(sa.text(
            "update edges e set evidence = jsonb_set(e.evidence, '{chance}', e.evidence->'chance' || m.marks)"
            " from _chance_marks m where e.run_key = :k and e.edge_type = m.edge_type and e.a_key = m.a_key"
            " and e.b_key = m.b_key"), {"k": run_key})
        conn.execute(sa.text("drop table _chance_marks"))
    return {(t, a, b): share for t, a, b, _, share in marks}


def pair_candidates(gated: list[dict], shares: dict[tuple[str, str, str], float],
                    flag: FlagParams) -> dict[tuple[str, str], float]:
    """Account pairs with a co-activity edge that counts for C (gated, and its run chance share at most
    ``coactivity_max_chance_share``: ``rules.qualifies_as_coactivity``) -> the fewest chance pairs expected at
    least as unlikely, over their edges. An edge without a share (an IO release: ``build_clusters``) counts."""
    out: dict[tuple[str, str], float] = {}
    for r in gated:
        if shares.get((r["edge_type"], r["a_key"], r["b_key"]), 0.0) <= flag.coactivity_max_chance_share:
            pair = (min(r["a_key"], r["b_key"]), max(r["a_key"], r["b_key"]))
            out[pair] = min(out.get(pair, float("inf")), r["expected"])
    return out


def build_clusters(conn: sa.Connection, run_key: str, params: NetworkParams,
                   flag: FlagParams | None = None) -> list[Cluster]:
    """Replace the run's clusters and members from its edges (all types, including co_*). ``flag``: the
    run's flag thresholds. With them, every gated co-activity edge gets its ``run_chance_share`` in
    ``evidence.chance``, which the flag stage reads (``rules.qualifies_as_coactivity``; not in an IO release,
    whose posts are all the operation's), and they say which two-account components stand as pairs (none
    without them); the co-activity edges of a kept pair get its ``pairs_as_unlikely`` and ``chance_share``."""
    rows = conn.execute(sa.text("select edge_type, a_key, b_key, weight from edges where run_key = :k"),
                        {"k": run_key}).all()
    pairs = strong_pairs(((r.edge_type, r.a_key, r.b_key, r.weight) for r in rows), params.strong_edge_min_weight)
    candidates = None
    if flag is not None:  # which co-activity edges chance explains, then which two-account components stand as pairs
        from pipeline.networks.baseline import posts_hold_ordinary_accounts

        gated = gated_coactivity_edges(conn, run_key, flag)
        # an IO release's posts are all the operation's: its own crowding would explain it away, so no share
        shares = mark_run_chance_shares(conn, run_key, gated) if posts_hold_ordinary_accounts(conn, run_key) else {}
        candidates = pair_candidates(gated, shares, flag)
    clusters = find_clusters(pairs, params, candidates, flag.pair_max_chance_share if flag is not None else 0.0)
    kept_pairs = [c for c in clusters if c.kind == "pair"]
    if kept_pairs:
        conn.execute(sa.text(
            "update edges set evidence = jsonb_set(evidence, '{chance}', evidence->'chance' || cast(:c as jsonb))"
            " where run_key = :k and a_key = :a and b_key = :b and evidence ? 'chance'"),
            [{"k": run_key, "a": c.members[0], "b": c.members[1],
              "c": json.dumps({k: c.chance[k] for k in ("pairs_as_unlikely", "chance_share")})} for c in kept_pairs])
    prev = previous_run(conn, run_key)
    previous: dict[str, list[str]] = {}
    if prev is not None:
        for cid, key in conn.execute(sa.text("select cluster_id, account_key from cluster_members where run_key = :k"),
                                     {"k": prev}):
            previous.setdefault(cid, []).append(key)
    assign_ids(clusters, previous, prev, params)
    conn.execute(sa.text("delete from clusters where run_key = :k"), {"k": run_key})  # members cascade
    copy_rows(conn, "clusters", ("run_key", "cluster_id", "size", "score", "features"),
              ((run_key, c.cluster_id, len(c.members), 0,
                json.dumps({"lineage": c.lineage, "component_size": c.component_size,
                            **({"kind": c.kind, "pair_chance": c.chance} if c.kind != "cluster" else {})},
                           sort_keys=True))
               for c in clusters))
    copy_rows(conn, "cluster_members", ("run_key", "cluster_id", "account_key"),
              ((run_key, c.cluster_id, m) for c in clusters for m in c.members))
    return clusters


def build_networks(settings: Settings, run_key: str, policy: Policy) -> NetworkResult:
    """Replace the run's edges and clusters, by the run's policy (``RunContext.policy``)."""
    with transaction(settings) as conn:
        counts = build_edges(conn, run_key, policy, settings.image_dir)
        conn.execute(sa.text("analyze edges"))
        clusters = build_clusters(conn, run_key, policy.network, policy.flag)
        conn.execute(sa.text("analyze cluster_members"))
    log.info("networks %s: edges %s, clusters %d", run_key, counts, len(clusters))
    return NetworkResult(counts, len(clusters))
