"""The matched images of a cluster, side by side: what an image-based rule matched, so an investigator can see it.

Three kinds of pair, read from the run's tables:
- ``identical``: one image (sha256) shown by several members, on the cluster's ``identical_avatar`` edges;
- ``confirmed``: two distinct images within ``near_dup_max_distance`` pHash bits (``avatar_near_duplicates``)
  that a second measure confirmed (a ``confirmed_near_duplicate`` edge inside the cluster);
- ``unconfirmed``: a pHash-only near-duplicate pair. pHash alone matches different cartoon faces and
  flat pictures (docs/benchmarks.md, "Near-duplicate false matches"), so such a pair is shown as "not
  confirmed" and the ``shared_avatar`` rule does not count it (pipeline/flags/rules.py).

``python -m pipeline.reporting.pairs RUN_KEY`` prints, per run and per cluster, how many pairs of each kind
there are (the figures of docs/benchmarks.md).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from pipeline.config import Settings
from pipeline.networks.edge_types import CONFIRMED_NEAR_DUPLICATE, IDENTICAL_AVATAR

KINDS = ("identical", "confirmed", "unconfirmed")
MAX_PAIRS_SHOWN = 24


@dataclass(frozen=True)
class PairMember:
    account_key: str
    handle: str | None


@dataclass(frozen=True)
class ImagePair:
    """Two matched images (the same one twice for ``identical``) and the cluster members showing each."""

    sha_a: str
    sha_b: str
    distance: int  # pHash Hamming distance, of 64 bits; 0 for identical
    kind: str  # one of KINDS
    members_a: tuple[PairMember, ...]
    members_b: tuple[PairMember, ...]
    path_a: str | None = None  # storage path of the image (relative to the image store), for the thumbnail
    path_b: str | None = None


def _edge_shas(evidence: dict[str, Any] | None) -> list[str]:
    sha = (evidence or {}).get("sha256")
    return [sha] if isinstance(sha, str) else list(sha or [])


def cluster_image_pairs(conn: sa.Connection, run_key: str, cluster_id: str) -> list[ImagePair]:
    """The cluster's matched image pairs: identical first (largest group first), then confirmed, then
    unconfirmed near-duplicates, each by distance. Only images shown by members of the cluster."""
    rows = conn.execute(sa.text(
        "select m.account_key, s.handle, g.avatar_sha256, i.storage_path from cluster_members m"
        " join account_signals g on g.run_key = m.run_key and g.account_key = m.account_key"
        " left join account_snapshots s on s.run_key = m.run_key and s.account_key = m.account_key"
        " left join images i on i.sha256 = g.avatar_sha256"
        " where m.run_key = :k and m.cluster_id = :c and g.avatar_sha256 is not null order by m.account_key"),
        {"k": run_key, "c": cluster_id}).all()
    shown: dict[str, list[PairMember]] = defaultdict(list)
    paths: dict[str, str | None] = {}
    for r in rows:
        shown[r.avatar_sha256].append(PairMember(r.account_key, r.handle))
        paths[r.avatar_sha256] = r.storage_path
    edges = conn.execute(sa.text(
        "select e.edge_type, e.evidence from edges e"
        " join cluster_members ma on ma.run_key = e.run_key and ma.account_key = e.a_key and ma.cluster_id = :c"
        " join cluster_members mb on mb.run_key = e.run_key and mb.account_key = e.b_key and mb.cluster_id = :c"
        " where e.run_key = :k and e.edge_type = any(:t)"),
        {"k": run_key, "c": cluster_id, "t": [IDENTICAL_AVATAR, CONFIRMED_NEAR_DUPLICATE]}).all()
    identical = {sha for r in edges if r.edge_type == IDENTICAL_AVATAR for sha in _edge_shas(r.evidence)}
    confirmed = {tuple(sorted(_edge_shas(r.evidence))) for r in edges if r.edge_type == CONFIRMED_NEAR_DUPLICATE}
    near = conn.execute(sa.text(
        "select sha_a, sha_b, distance from avatar_near_duplicates where run_key = :k"
        " and sha_a = any(:s) and sha_b = any(:s) order by distance, sha_a, sha_b"),
        {"k": run_key, "s": sorted(shown)}).all()

    def pair(a: str, b: str, distance: int, kind: str) -> ImagePair:
        return ImagePair(a, b, distance, kind, tuple(shown[a]), tuple(shown[b]), paths.get(a), paths.get(b))

    same = [pair(sha, sha, 0, "identical") for sha in sorted(shown, key=lambda s: (-len(shown[s]), s))
            if len(shown[sha]) > 1 and sha in identical]
    near_pairs = [pair(r.sha_a, r.sha_b, r.distance, "confirmed" if (r.sha_a, r.sha_b) in confirmed else "unconfirmed")
                  for r in near]
    return same + sorted(near_pairs, key=lambda p: (KINDS.index(p.kind), p.distance, p.sha_a, p.sha_b))


def pairs_section_html(settings: Settings, pairs: list[ImagePair]) -> str:
    """The "Matched images" section: each pair as two thumbnails side by side with its distance and kind;
    pHash-only pairs are marked "not confirmed" and come after the confirmed ones; at most
    ``MAX_PAIRS_SHOWN`` pairs, then how many more."""
    from pipeline.reporting.html import e, thumbnail_data_uri  # html.py calls this module: import here

    ordered = sorted(pairs, key=lambda p: KINDS.index(p.kind))  # stable: keeps each kind's own order
    counts = {k: sum(p.kind == k for p in pairs) for k in KINDS}
    parts = ['<section class="matched-images"><h2>Matched images</h2>']
    if not pairs:
        parts.append("<p>No identical or near-duplicate images among the members.</p></section>")
        return "".join(parts)
    parts.append(f"<p>{counts['identical']} identical, {counts['confirmed']} confirmed near-duplicate and"
                 f" {counts['unconfirmed']} pHash-only (not confirmed) pairs. Only identical and confirmed pairs"
                 " count as the same image.</p>")

    def thumb(sha: str, path: str | None, members: tuple[PairMember, ...]) -> str:
        uri = thumbnail_data_uri(settings, path)
        picture = (f'<img src="{e(uri)}" alt="avatar {e(sha[:12])}" width="96" height="96">' if uri
                   else f'<span class="missing">image {e(sha[:12])} unavailable</span>')
        who = ", ".join(e(m.handle or m.account_key) for m in members[:6])
        more = f" and {len(members) - 6} more" if len(members) > 6 else ""
        return (f'<figure class="pair-image">{picture}<figcaption><code>{e(sha[:12])}</code>'
                f" shown by {len(members)}: {who}{more}</figcaption></figure>")

    labels = {"identical": "identical image", "confirmed": "confirmed near-duplicate (second measure agrees)",
              "unconfirmed": "not confirmed (pHash only)"}
    parts.append('<ul class="pairs">')
    for p in ordered[:MAX_PAIRS_SHOWN]:
        parts.append(f'<li class="pair pair-{e(p.kind)}"><div class="pair-images" style="display:flex;gap:8px">'
                     f"{thumb(p.sha_a, p.path_a, p.members_a)}{thumb(p.sha_b, p.path_b, p.members_b)}</div>"
                     f'<p class="pair-kind">{e(labels[p.kind])}, pHash distance {int(p.distance)}</p></li>')
    parts.append("</ul>")
    if len(ordered) > MAX_PAIRS_SHOWN:
        rest = ordered[MAX_PAIRS_SHOWN:]
        parts.append(f'<p class="pairs-more">{len(rest)} more pairs'
                     f" ({sum(p.kind != 'unconfirmed' for p in rest)} identical or confirmed,"
                     f" {sum(p.kind == 'unconfirmed' for p in rest)} not confirmed) not shown.</p>")
    parts.append("</section>")
    return "".join(parts)


def pair_counts(conn: sa.Connection, run_key: str) -> dict[str, Any]:
    """A run's near-duplicate pairs: all pHash pairs and how many a second measure confirmed, then per
    flagged cluster its pairs of each kind, the members the shared_avatar rule may count (those on an
    identical or confirmed pair) and the rule's reason."""
    images = conn.execute(sa.text("select count(distinct avatar_sha256) from account_signals where run_key = :k"),
                          {"k": run_key}).scalar()
    total = conn.execute(sa.text("select count(*) from avatar_near_duplicates where run_key = :k"),
                         {"k": run_key}).scalar()
    confirmed = {tuple(sorted(_edge_shas(ev))) for ev in conn.execute(sa.text(
        "select evidence from edges where run_key = :k and edge_type = :t"),
        {"k": run_key, "t": CONFIRMED_NEAR_DUPLICATE}).scalars()}
    flags = conn.execute(sa.text("select cluster_id, evidence -> 'rules' ->> 'shared_avatar' from flags"
                                 " where run_key = :k order by score desc, cluster_id"), {"k": run_key}).all()
    clusters = {}
    for cid, why in flags:
        pairs = cluster_image_pairs(conn, run_key, cid)
        same = {m.account_key for p in pairs if p.kind != "unconfirmed" for m in (*p.members_a, *p.members_b)}
        clusters[cid] = {**{k: sum(p.kind == k for p in pairs) for k in KINDS}, "same_image_members": len(same),
                         "shared_avatar": why}
    return {"images": images, "near_duplicate_pairs": total, "confirmed_pairs": len(confirmed),
            "unconfirmed_pairs": total - len(confirmed), "flagged_clusters": clusters}


def main(argv: list[str] | None = None) -> None:
    import argparse
    import json

    from pipeline.config import load_settings
    from pipeline.core.db import transaction

    ap = argparse.ArgumentParser(description="Near-duplicate pairs of an audited run, by kind, and per flagged cluster.")
    ap.add_argument("run_key")
    args = ap.parse_args(argv)
    with transaction(load_settings()) as conn:
        print(json.dumps(pair_counts(conn, args.run_key), indent=1))


if __name__ == "__main__":
    main()
