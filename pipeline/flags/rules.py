"""Stage `flag`: score clusters, apply the flag rules, and record the evidence an investigator checks.

Cluster features are shares in [0, 1]: synthetic avatars (S), the largest one-day creation share (B),
one handle template (T), members with a co-activity edge of weight at least ``coactivity_min_weight``
whose IDF weight (co-occurring posts counted by their shared object's rarity) reaches
``coactivity_min_idf_weight`` and that chance does not explain (``coactivity_max_chance_share``) (C), members with an identical or near-duplicate avatar edge (I), the mean account risk (R), members
on a ``creation_window`` edge (W: every such edge is a burst of a shared trait or count profile whose
Poisson p-value against the population passed ``burst_p_value``), and members on a
``confirmed_near_duplicate`` edge (P: an image ring, two independent image measures agreeing on detailed
images). The score is ``min(1, sum of weight x share)`` with the weights of the run's policy
(``config.ClusterWeights``: 0.35 S + 0.25 B + 0.25 T + 0.6 C + 0.1 I + 0.2 R + 0.45 W + 0.45 P); each
term is stored in ``features.score_contributions``. Shared imagery alone (a brand's regional accounts
with one logo: identical or unconfirmed near-duplicate images) stays far below the threshold; a
synthetic-face ring, a templated or count-profile batch, a photo ring or a co-activity ring reaches it.

The flag rules are plug-ins in ``FLAG_RULES`` (registered by name; ``tests/test_flag_rules.py`` iterates
them). A cluster is flagged when it has at least ``min_cluster_size`` members, at least one rule fires
and the score reaches ``flag_score_threshold``. Two accounts kept by the cluster stage as a pair (a
co-activity edge chance does not explain, pipeline/networks/clusters.py) are flagged with kind ``pair`` when
``coordinated_pair`` fires; every other flag has kind ``cluster`` (``flags.kind``). Flags are keyed by (run, cluster); a rerun updates them
and keeps the investigator's status. A cluster that kept a previous run's id (pipeline/networks/clusters.py)
inherits that run's investigator status, unless its membership changed materially (Jaccard below
``status_keep_jaccard``): then it is re-opened with a note saying why.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from pipeline.config import ClusterWeights, FlagParams, Policy, Settings
from pipeline.core.db import transaction
from pipeline.core.registry import Registry
from pipeline.errors import UserError
from pipeline.networks.crossplatform import personas, platforms_of
from pipeline.networks.edge_types import (
    CONFIRMED_NEAR_DUPLICATE,
    CREATION_WINDOW,
    IDENTICAL_AVATAR,
    NEAR_DUPLICATE_AVATAR,
    is_coactivity,
    is_shared_image,
)

MAX_EVIDENCE_EDGES = 200
# the edges that say "the same picture" to an investigator (shared_avatar, the report's matched images);
# a pHash-only near_duplicate_avatar edge is not one of them
SAME_IMAGE_EDGES = frozenset({IDENTICAL_AVATAR, CONFIRMED_NEAR_DUPLICATE})
STATUSES = ("new", "confirmed", "dismissed", "escalated")


def flag_id_of(run_key: str, cluster_id: str) -> str:
    return "f" + hashlib.sha256(f"{run_key}\n{cluster_id}".encode()).hexdigest()[:12]


@dataclass(frozen=True)
class ClusterFacts:
    """What the rules and the score read about one cluster, computed once."""

    size: int
    scored: int  # members with a scored avatar
    synthetic: int  # ... labelled synthetic
    days: Counter  # creation day -> members
    templates: Counter  # handle template (with at least min_template_digits digits) -> members
    image_groups: Counter  # avatar sha256 -> members
    edge_mix: Counter  # edge type -> edges inside the cluster
    coactive: frozenset[str]  # members with a qualifying co-activity edge
    image_linked: frozenset[str]  # members with an identical or near-duplicate avatar edge
    same_image: frozenset[str]  # members with an identical_avatar or confirmed_near_duplicate edge (shared_avatar)
    batch_linked: frozenset[str]  # members with a creation_window edge (a population-tested burst)
    ring_linked: frozenset[str]  # members with a confirmed_near_duplicate edge
    burst_traits: Counter  # creation_window trait -> edges inside the cluster carrying it
    shares: dict[str, float]  # the score's features, each in [0, 1]
    untested: int = 0  # creation_window edges of a run with no organic baseline (creation batches, not bursts)
    pair_edges: tuple[dict[str, Any], ...] = ()  # edges that qualify as a pair's (qualifies_as_pair)


@dataclass(frozen=True)
class FlagRule:
    """A named reason to flag a cluster: ``check`` returns why it fires, or None."""

    name: str
    summary: str
    threshold: str | None  # the FlagParams field it compares with (None: network.min_cluster_size only)
    check: Callable[[ClusterFacts, Policy], str | None]


FLAG_RULES: Registry[FlagRule] = Registry("flag rule")


def flag_rule(name: str, summary: str, threshold: str | None = None):
    """Decorator: register ``check`` as the flag rule ``name``."""
    def register(check: Callable[[ClusterFacts, Policy], str | None]):
        FLAG_RULES.register(name, FlagRule(name, summary, threshold, check))
        return check
    return register


@flag_rule("shared_avatar", "at least min_cluster_size members show the same image or a near-duplicate of it"
           " confirmed by a second image measure")
def _shared_avatar(f: ClusterFacts, policy: Policy) -> str | None:
    """Counts identical images and confirmed near-duplicates only: pHash alone matches different cartoon
    faces and flat pictures (docs/benchmarks.md), and the report shows those pairs as not confirmed."""
    if len(f.same_image) < policy.network.min_cluster_size:
        return None
    sha, n = f.image_groups.most_common(1)[0] if f.image_groups else ("", 0)
    unconfirmed = f.edge_mix.get(NEAR_DUPLICATE_AVATAR, 0)
    return (f"{len(f.same_image)} accounts show the same or near-duplicate images (identical, or near-duplicates"
            f" confirmed by a second measure; largest identical group {n}: {sha[:12]};"
            f" {f.edge_mix.get(CONFIRMED_NEAR_DUPLICATE, 0)} confirmed near-duplicate pairs; {unconfirmed}"
            f" pHash-only near-duplicate links not counted)")


@flag_rule("synthetic_faces", "a share of the scored avatars are labelled synthetic", "synthetic_share_rule")
def _synthetic_faces(f: ClusterFacts, policy: Policy) -> str | None:
    if f.synthetic and f.shares["synthetic_share"] >= policy.flag.synthetic_share_rule:
        return f"{f.synthetic}/{f.scored} avatars labelled synthetic by the run's detector"
    return None


@flag_rule("batch_created", "a share of the members were created on one day, or lie on creation-window edges"
           " (bursts tested against the population), with creation-window edges", "batch_share_rule")
def _batch_created(f: ClusterFacts, policy: Policy) -> str | None:
    if not (f.days and f.edge_mix.get(CREATION_WINDOW)):
        return None
    one_day = f.shares["burst_share"] >= policy.flag.burst_share_rule
    if not (one_day or f.shares["batch_share"] >= policy.flag.batch_share_rule):
        return None
    day, n = f.days.most_common(1)[0]
    traits = ", ".join(f"{t} {k}" for t, k in sorted(f.burst_traits.items()))
    if f.untested:  # an IO release audited alone (pipeline/networks/baseline.py)
        dates = ", ".join(f"{d} ({k})" for d, k in sorted(f.days.most_common(5)))
        return (f"{len(f.batch_linked)}/{f.size} accounts in one creation batch ({traits}), created on {dates};"
                " not tested against a population: the run has no organic baseline")
    return (f"{len(f.batch_linked)}/{f.size} accounts on creation-window edges of population-tested bursts"
            f" ({traits}); {n}/{f.size} created on {day}")


@flag_rule("image_ring", "a share of the members show near-duplicate images confirmed by a second image measure",
           "image_ring_share_rule")
def _image_ring(f: ClusterFacts, policy: Policy) -> str | None:
    if f.ring_linked and f.shares["image_ring_share"] >= policy.flag.image_ring_share_rule:
        return (f"{len(f.ring_linked)}/{f.size} accounts show near-duplicate images confirmed by a second measure"
                f" ({f.edge_mix.get(CONFIRMED_NEAR_DUPLICATE, 0)} confirmed pairs)")
    return None


@flag_rule("templated_handles", "a share of the members follow one handle template", "template_share_rule")
def _templated_handles(f: ClusterFacts, policy: Policy) -> str | None:
    if f.templates and f.shares["template_share"] >= policy.flag.template_share_rule:
        template, n = f.templates.most_common(1)[0]
        return f"{n}/{f.size} handles follow the template {template}"
    return None


@flag_rule("coordinated_activity", "a share of the members have a co-activity edge of at least coactivity_min_weight"
           " and coactivity_min_idf_weight that chance does not explain", "coactivity_share_rule")
def _coordinated_activity(f: ClusterFacts, policy: Policy) -> str | None:
    if f.coactive and f.shares["coactivity_share"] >= policy.flag.coactivity_share_rule:
        co = ", ".join(f"{t} {n}" for t, n in sorted(f.edge_mix.items()) if is_coactivity(t))
        return f"{len(f.coactive)}/{f.size} accounts linked by co-activity ({co})"
    return None


@flag_rule("coordinated_pair", "two accounts, and nothing else, joined by a qualifying co-activity edge that chance"
           " explains for at most pair_max_chance_share of the run's candidate pairs as unlikely", "pair_max_chance_share")
def _coordinated_pair(f: ClusterFacts, policy: Policy) -> str | None:
    """A pair is below ``min_cluster_size``; it is reported (flag kind ``pair``) on its co-activity alone, when
    the edge is one chance does not explain (pipeline/networks/coactivity.py, ``chance``)."""
    if f.size != 2 or not f.pair_edges:
        return None
    e = max(f.pair_edges, key=lambda e: (e["weight"], idf_weight(e)))
    c = e["evidence"]["chance"]
    return (f"2 accounts linked by {e['edge_type']} of weight {e['weight']} (IDF weight {idf_weight(e):.2f});"
            f" expected by chance {c['expected_co_occurrences']:.2g} co-occurrences, p = {c['p_value']:.2g};"
            f" {c['expected_chance_pairs']:.2g} chance pairs expected in the run as unlikely, against"
            f" {c['pairs_as_unlikely']} such two-account pairs (chance share {c['chance_share']:.2f})")


@dataclass(frozen=True)
class ClusterAssessment:
    cluster_id: str
    members: list[dict[str, Any]]
    features: dict[str, Any]
    score: float
    rules: dict[str, str]  # rule -> why it fired
    evidence: dict[str, Any]
    kind: str = "cluster"  # "pair": two accounts below min_cluster_size, on co-activity chance does not explain


def _touching(edges: list[dict[str, Any]], test) -> frozenset[str]:
    return frozenset(k for e in edges if test(e) for k in (e["a_key"], e["b_key"]))


def idf_weight(edge: dict[str, Any]) -> float:
    """The edge's larger IDF-weighted direction (co-occurring posts counted by how rare their shared object
    is in the run); an edge built before the evidence held it counts its plain weight."""
    ev = edge.get("evidence") or {}
    if "idf_weight_a_to_b" not in ev:
        return float(edge["weight"])
    return max(float(ev["idf_weight_a_to_b"]), float(ev["idf_weight_b_to_a"]))


def passes_coactivity_gates(edge: dict[str, Any], params: FlagParams) -> bool:
    """A co_* edge whose weight reaches ``coactivity_min_weight`` and IDF weight ``coactivity_min_idf_weight``:
    two reposts of a post that thousands reposted say little. These edges are the family the networks stage
    estimates chance over (``run_chance_share``)."""
    return (is_coactivity(edge["edge_type"]) and edge["weight"] >= params.coactivity_min_weight
            and idf_weight(edge) >= params.coactivity_min_idf_weight)


def run_chance_share(edge: dict[str, Any]) -> float | None:
    """The share of the run's gated co-activity edges of this type, at least as unlikely as this one, that chance
    is expected to make (evidence ``chance.run_chance_share``, written by the networks stage); None on an edge
    built before it existed, or without a chance estimate."""
    chance = (edge.get("evidence") or {}).get("chance") or {}
    return None if "run_chance_share" not in chance else float(chance["run_chance_share"])


def qualifies_as_coactivity(edge: dict[str, Any], params: FlagParams) -> bool:
    """A co_* edge counts for C when it passes the gates (``passes_coactivity_gates``) and chance explains at
    most ``coactivity_max_chance_share`` of the run's gated edges as unlikely: at ten million accounts,
    organic accounts that repost the same popular posts in the same minutes twice are common enough to pass
    the gates by the thousand."""
    if not passes_coactivity_gates(edge, params):
        return False
    share = run_chance_share(edge)
    return share is None or share <= params.coactivity_max_chance_share


def chance_share(edge: dict[str, Any]) -> float | None:
    """The expected share of chance pairs among the run's two-account candidate pairs at least as unlikely as this
    edge's (evidence ``chance.chance_share``, written by the cluster stage on the pairs it keeps:
    pipeline/networks/clusters.py, ``pair_chance_shares``); None on any other edge."""
    chance = (edge.get("evidence") or {}).get("chance") or {}
    return None if "chance_share" not in chance else float(chance["chance_share"])


def qualifies_as_pair(edge: dict[str, Any], params: FlagParams) -> bool:
    """A co-activity edge that may stand as a pair on its own: it counts for C (``qualifies_as_coactivity``)
    and chance explains at most ``pair_max_chance_share`` of the run's candidate pairs as unlikely as it."""
    share = chance_share(edge)
    return (params.pair_max_chance_share > 0 and qualifies_as_coactivity(edge, params) and share is not None
            and share <= params.pair_max_chance_share)


def cluster_facts(members: list[dict[str, Any]], edges: list[dict[str, Any]], policy: Policy) -> ClusterFacts:
    size = len(members)
    scored = [m for m in members if m["avatar_label"] is not None]
    synthetic = [m for m in scored if m["avatar_label"]]
    days = Counter(m["created_at"].date().isoformat() for m in members if m["created_at"] is not None)
    templates = Counter(m["handle_template"] for m in members
                        if m["handle_template"] and m["handle_digits"] >= policy.network.min_template_digits)
    coactive = _touching(edges, lambda e: qualifies_as_coactivity(e, policy.flag))
    image_linked = _touching(edges, lambda e: is_shared_image(e["edge_type"]))
    batch_linked = _touching(edges, lambda e: e["edge_type"] == CREATION_WINDOW)
    ring_linked = _touching(edges, lambda e: e["edge_type"] == CONFIRMED_NEAR_DUPLICATE)
    same_image = _touching(edges, lambda e: e["edge_type"] in SAME_IMAGE_EDGES)
    burst_traits = Counter(t for e in edges if e["edge_type"] == CREATION_WINDOW
                           for t in (e.get("evidence") or {}).get("traits", []))
    shares = {
        "synthetic_share": round(len(synthetic) / len(scored), 4) if scored else 0.0,
        "burst_share": round(max(days.values()) / size, 4) if days else 0.0,
        "template_share": round(templates.most_common(1)[0][1] / size, 4) if templates else 0.0,
        "coactivity_share": round(len(coactive) / size, 4),
        "shared_image_share": round(len(image_linked) / size, 4),
        "mean_risk": round(sum(m["risk"] for m in members) / size, 4),
        "batch_share": round(len(batch_linked) / size, 4),
        "image_ring_share": round(len(ring_linked) / size, 4),
    }
    pair_edges = tuple(e for e in edges if qualifies_as_pair(e, policy.flag)) if size == 2 else ()
    return ClusterFacts(size, len(scored), len(synthetic), days, templates,
                        Counter(m["avatar_sha256"] for m in members if m["avatar_sha256"]),
                        Counter(e["edge_type"] for e in edges), coactive, image_linked, same_image, batch_linked, ring_linked,
                        burst_traits, shares,
                        sum(e["edge_type"] == CREATION_WINDOW and (e.get("evidence") or {}).get("baseline") == "none"
                            for e in edges), pair_edges)


def cluster_score(shares: dict[str, float], weights: ClusterWeights) -> tuple[float, dict[str, float]]:
    """The score and its non-zero terms (weight x share)."""
    w = weights.as_dict()
    contributions = {k: round(w[k] * v, 4) for k, v in shares.items() if v}
    return round(min(1.0, sum(contributions.values())), 4), contributions


def assess_cluster(cluster_id: str, members: list[dict[str, Any]], edges: list[dict[str, Any]],
                   policy: Policy, extra_features: dict[str, Any] | None = None) -> ClusterAssessment:
    """Features, score, rules and evidence of one cluster; ``edges`` are those with both ends inside it.
    ``policy``: the run's (its flag and network thresholds and its cluster weights)."""
    facts = cluster_facts(members, edges, policy)
    score, contributions = cluster_score(facts.shares, policy.cluster)
    size = facts.size
    features = {
        **(extra_features or {}),
        "size": size,
        **facts.shares,
        "density": round(len(edges) / (size * (size - 1) / 2), 4) if size > 1 else 0.0,
        "edge_types": dict(sorted(facts.edge_mix.items())),
        "largest_shared_image": max(facts.image_groups.values(), default=0),
        "burst_traits": dict(sorted(facts.burst_traits.items())),
        "score_contributions": contributions,
    }
    rules = {name: why for name, rule in FLAG_RULES.items() if (why := rule.check(facts, policy))}
    # across platforms (issue 23, item 4): members per platform, and the distinct identities once the accounts
    # one handle stem joins count once; a cluster of one person's (or persona's) accounts on several
    # platforms is not a network (pipeline/networks/crossplatform.py)
    features["platforms"] = platforms_of(m["account_key"] for m in members)
    features["personas"] = personas([m["account_key"] for m in members], edges)
    if rules and features["personas"] < min(size, policy.network.min_cluster_size):
        features["not_flagged"] = {"rules": sorted(rules), "why": f"{features['personas']} identities: accounts joined"
                                   " by one handle stem across platforms are one person's or persona's"}
        rules = {}
    images, parts = defaultdict(list), {}
    for m in members:
        if m["avatar_sha256"]:
            images[(m["avatar_sha256"], m["avatar_probability"])].append(m["account_key"])
            if m.get("avatar_parts"):  # an avatar_stack score: each part's logit contribution
                parts[m["avatar_sha256"]] = m["avatar_parts"]
    kind = "pair" if size == 2 and "coordinated_pair" in rules else "cluster"
    evidence = {
        "kind": kind,
        **({"pair": pair_evidence(facts.pair_edges)} if kind == "pair" else {}),
        "rules": rules,
        "features": features,
        "images": [{"sha256": sha, "probability": p, "accounts": accts, **({"parts": parts[sha]} if sha in parts else {})}
                   for (sha, p), accts in sorted(images.items(), key=lambda kv: (-len(kv[1]), kv[0][0]))],
        "creation_days": dict(sorted(facts.days.items())),
        "edges": edges[:MAX_EVIDENCE_EDGES],
        "edges_total": len(edges),
        "params": policy.thresholds(),  # every threshold under its flat ([network]) name
        "cluster_weights": policy.cluster.as_dict(),
    }
    return ClusterAssessment(cluster_id, members, features, score, rules, evidence, kind)


def pair_evidence(edges: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    """What a pair flag rests on, per qualifying edge: its type, weights, the chance estimate and the
    co-occurring posts (the shared object, both posts and times)."""
    out = []
    for e in sorted(edges, key=lambda e: (-e["weight"], e["edge_type"])):
        ev = e["evidence"]
        out.append({"edge_type": e["edge_type"], "weight": e["weight"], "idf_weight": round(idf_weight(e), 4),
                    "weight_a_to_b": ev.get("weight_a_to_b"), "weight_b_to_a": ev.get("weight_b_to_a"),
                    "chance": ev["chance"], "examples": ev.get("examples", [])})
    return {"edges": out}


def _inherited_status(conn: sa.Connection, lineage: dict[str, Any], params: FlagParams
                      ) -> tuple[str, str | None, Any]:
    """(status, note, changed_at) for a new flag whose cluster kept a previous run's id."""
    if not lineage.get("previous_cluster"):
        return "new", None, None
    prev = conn.execute(
        sa.text("select flag_id, status, status_note, status_changed_at from flags"
                " where run_key = :k and cluster_id = :c"),
        {"k": lineage["previous_run"], "c": lineage["previous_cluster"]},
    ).first()
    if prev is None or prev.status == "new":
        return "new", prev.status_note if prev is not None else None, None
    if lineage["jaccard"] >= params.status_keep_jaccard:
        return prev.status, prev.status_note, prev.status_changed_at
    note = (f"re-opened: was {prev.status} as flag {prev.flag_id} in run {lineage['previous_run']}, but the"
            f" membership changed (Jaccard {lineage['jaccard']}, +{lineage['added']} -{lineage['removed']} members)")
    if prev.status_note:
        note += f"; earlier note: {prev.status_note}"
    return "new", note, None


def flag_run(settings: Settings, run_key: str, policy: Policy | None = None) -> int:
    """Score the run's clusters and upsert flags; returns the number of flags raised. ``policy``: the run's
    (``RunContext.policy``: its flag and network thresholds and cluster weights); None reads it back from
    the run row (``runs.params``)."""
    with transaction(settings) as conn:
        if policy is None:
            recorded = conn.execute(sa.text("select params from runs where run_key = :k"), {"k": run_key}).scalar()
            policy = Policy.from_run_params(recorded)
        members = conn.execute(
            sa.text(
                "select m.cluster_id, m.account_key, a.platform, a.account_id, s.handle, s.created_at,"
                " g.avatar_sha256, g.avatar_probability, g.avatar_label, g.avatar_parts, g.risk, g.handle_template,"
                " handle_digit_suffix(s.handle) as handle_digits"
                " from cluster_members m join accounts a using (account_key)"
                " join account_snapshots s on s.run_key = m.run_key and s.account_key = m.account_key"
                " join account_signals g on g.run_key = m.run_key and g.account_key = m.account_key"
                " where m.run_key = :k order by m.cluster_id, m.account_key"
            ),
            {"k": run_key},
        ).mappings().all()
        edge_rows = conn.execute(
            sa.text(
                "select ma.cluster_id, e.edge_type, e.a_key, e.b_key, e.weight, e.params, e.evidence from edges e"
                " join cluster_members ma on ma.run_key = e.run_key and ma.account_key = e.a_key"
                " join cluster_members mb on mb.run_key = e.run_key and mb.account_key = e.b_key"
                "   and mb.cluster_id = ma.cluster_id"
                " where e.run_key = :k order by ma.cluster_id, e.edge_type, e.a_key, e.b_key"
            ),
            {"k": run_key},
        ).mappings().all()
        stored = dict(conn.execute(sa.text("select cluster_id, features from clusters where run_key = :k"),
                                   {"k": run_key}).all())
        by_cluster: dict[str, list[dict]] = defaultdict(list)
        for row in members:
            by_cluster[row["cluster_id"]].append(dict(row))
        edges_by_cluster: dict[str, list[dict]] = defaultdict(list)
        for row in edge_rows:
            edges_by_cluster[row["cluster_id"]].append(
                {k: row[k] for k in ("edge_type", "a_key", "b_key", "weight", "params", "evidence")})
        raised, updates = [], []
        for cid, cluster_members in sorted(by_cluster.items()):
            kept = {k: v for k, v in (stored.get(cid) or {}).items() if k in ("lineage", "component_size", "kind", "pair_chance")}
            assessment = assess_cluster(cid, cluster_members, edges_by_cluster[cid], policy, kept)
            updates.append({"s": assessment.score, "f": json.dumps(assessment.features, sort_keys=True),
                            "k": run_key, "c": cid})
            if assessment.rules and assessment.score >= policy.flag.flag_score_threshold \
                    and (assessment.features["size"] >= policy.network.min_cluster_size or assessment.kind == "pair"):
                raised.append(assessment)
        if updates:
            conn.execute(sa.text("update clusters set score = :s, features = cast(:f as jsonb)"
                                 " where run_key = :k and cluster_id = :c"), updates)
        for a in raised:
            status, note, changed_at = _inherited_status(conn, a.features.get("lineage") or {}, policy.flag)
            conn.execute(
                sa.text(
                    "insert into flags (flag_id, run_key, cluster_id, kind, score, rules, evidence, status, status_note,"
                    " status_changed_at) values (:f, :k, :c, :kind, :s, :r, cast(:e as jsonb), :st, :n, :t)"
                    " on conflict (flag_id) do update set kind = excluded.kind, score = excluded.score,"
                    " rules = excluded.rules, evidence = excluded.evidence"  # status, note, time: the investigator's
                ),
                {"f": flag_id_of(run_key, a.cluster_id), "k": run_key, "c": a.cluster_id, "kind": a.kind, "s": a.score,
                 "r": sorted(a.rules), "e": json.dumps(a.evidence, sort_keys=True, default=str),
                 "st": status, "n": note, "t": changed_at},
            )
        # flags of this run that no longer hold: drop untouched ones, keep those an investigator handled
        conn.execute(
            sa.text("delete from flags where run_key = :k and status = 'new' and not (flag_id = any(:keep))"),
            {"k": run_key, "keep": [flag_id_of(run_key, a.cluster_id) for a in raised]},
        )
    return len(raised)


def list_flags(settings: Settings, run_key: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
    """Flagged clusters with members, rules and evidence, highest score first. ``detector`` names the run's
    detector and whether it is a real one (its avatar labels are part of the evidence)."""
    from pipeline.reporting.detector_info import load_detector_info

    with transaction(settings) as conn:
        flags = conn.execute(
            sa.text(
                "select f.flag_id, f.run_key, f.cluster_id, f.kind, f.score, f.rules, f.evidence, f.status, f.status_note,"
                " r.detector_id, r.params as run_params from flags f left join runs r using (run_key)"
                " where (cast(:k as text) is null or f.run_key = :k) and (cast(:s as text) is null or f.status = :s)"
                " order by f.score desc, f.flag_id"
            ),
            {"k": run_key, "s": status},
        ).mappings().all()
        result, detectors = [], {}
        for row in flags:
            f = {k: v for k, v in row.items() if k not in ("detector_id", "run_params")}
            if row["run_key"] not in detectors:
                info = load_detector_info(conn, row["detector_id"], row["run_params"] or {})
                detectors[row["run_key"]] = {"id": row["detector_id"], "real_detector": None, "caveat": None} \
                    if info is None else {k: info[k] for k in ("id", "kind", "name", "real_detector", "caveat")}
            f["detector"] = detectors[row["run_key"]]
            members = conn.execute(
                sa.text(
                    "select a.platform, a.account_id, s.handle from cluster_members m join accounts a using (account_key)"
                    " left join account_snapshots s on s.run_key = m.run_key and s.account_key = m.account_key"
                    " where m.run_key = :k and m.cluster_id = :c order by a.platform, a.account_id"
                ),
                {"k": f["run_key"], "c": f["cluster_id"]},
            ).mappings().all()
            result.append({**f, "platforms": sorted({m["platform"] for m in members}),
                           "members": [dict(m) for m in members]})
    return result


def set_flag_status(settings: Settings, flag_id: str, status: str, note: str | None = None) -> tuple[str, str]:
    """Record an investigator's status; returns the flag's (run key, cluster id), for the report to refresh."""
    if status not in STATUSES:
        raise UserError(f"status must be one of {', '.join(STATUSES)}")
    with transaction(settings) as conn:
        row = conn.execute(
            sa.text("update flags set status = :s, status_note = :n, status_changed_at = now() where flag_id = :f"
                    " returning run_key, cluster_id"),
            {"s": status, "n": note, "f": flag_id},
        ).first()
    if row is None:
        raise UserError(f"no flag {flag_id!r}; list them with `profile-audit flags`")
    return row.run_key, row.cluster_id
