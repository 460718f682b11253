"""Cross-platform edges (issue 23, item 4): an operation reuses the same generated faces, handle stems, bios,
links and URLs on X, Mastodon, Bluesky and Reddit, and an investigator audits one export per platform in one
run (`pipeline.ingest.exports`). Accounts keep their platform (keys are ``<platform>:<id>``).

What joins accounts on different platforms:
- ``identical_avatar`` and ``confirmed_near_duplicate`` (pipeline/networks/edges.py) compare image hashes
  whatever the platform, so they already join across platforms; so do ``identical_bio`` and
  ``identical_link`` (normalised text) and ``co_link`` (pipeline/networks/coactivity.py: the same
  normalised URL posted within the window, from the posts of every export). `mark_platforms` writes
  the two platforms into the evidence of every edge whose ends are on different platforms, so the
  report and ``flags --json`` say which edges cross.
- ``same_handle_stem`` (new, `same_handle_stem_edges`): the same distinctive handle stem on different
  platforms: ``maria_garcia1234`` on X, ``maria_garcia1234@mastodon.social`` and
  ``maria-garcia1234.bsky.social`` are the stem ``mariagarcia1234`` (instance or domain stripped,
  lower case, separators dropped). A stem joins only when it is distinctive: at least
  ``stem_min_chars`` characters with at least ``stem_min_digits`` trailing digits (a name plus a
  number, the shape of generated and suggested handles), or at least ``stem_min_chars_plain``
  without; and rare in the run: held by at most ``stem_max_accounts`` accounts, never two on one
  platform. A bare common first name (``maria`` on X, ``maria@mastodon.social``, ``maria.bsky.social``)
  is too short, and ``maria`` on two Mastodon instances is on one platform twice: neither joins.

One person who keeps one handle (and often one photo) on several platforms is joined by these edges too:
that is the same person, not a network. `personas` counts a cluster's distinct identities (members
joined by a same-stem edge count once), and the flag stage raises no flag on a cluster of fewer than
``min_cluster_size`` identities (pipeline/flags/rules.py).
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa

from pipeline.config import EdgeWeights, NetworkParams
from pipeline.networks.edge_types import SAME_HANDLE_STEM
from pipeline.networks.edges import Edge

_SEPARATORS = re.compile(r"[^0-9a-z]+")
_DIGITS = re.compile(r"[0-9]*$")


@dataclass(frozen=True)
class Handle:
    account_key: str
    platform: str
    handle: str


def platform_of(account_key: str) -> str:
    """The platform of an account key (``<platform>:<id>``, `readers.base.AccountRecord.account_key`)."""
    return account_key.split(":", 1)[0]


def handle_stem(platform: str, handle: str | None) -> str | None:
    """The handle without its instance or domain, lower case, separators dropped: the part an operator
    chooses, comparable across platforms. None for no handle."""
    text = unicodedata.normalize("NFKC", (handle or "").strip()).lower().lstrip("@")
    if not text:
        return None
    if "@" in text:  # Mastodon and other fediverse addresses: user@instance
        text = text.split("@", 1)[0]
    elif platform == "bluesky" and "." in text:  # a Bluesky handle is a domain: its first label
        text = text.split(".", 1)[0]
    text = _SEPARATORS.sub("", text)
    return text or None


def is_distinctive(stem: str, params: NetworkParams) -> bool:
    """Long enough, with enough trailing digits, to be one operator's (or person's) choice, not a common name."""
    digits = len(_DIGITS.search(stem).group(0))
    if digits == len(stem):  # digits only: ids, not names
        return False
    if digits >= params.stem_min_digits:
        return len(stem) >= params.stem_min_chars
    return len(stem) >= params.stem_min_chars_plain


def same_handle_stem_edges(handles: Iterable[Handle], params: NetworkParams,
                           weights: EdgeWeights | None = None) -> list[Edge]:
    """Every pair of accounts on different platforms with the same distinctive, rare handle stem."""
    weight = (weights or EdgeWeights()).handle_stem
    used = {"stem_min_chars": params.stem_min_chars, "stem_min_digits": params.stem_min_digits,
            "stem_min_chars_plain": params.stem_min_chars_plain, "stem_max_accounts": params.stem_max_accounts}
    groups: dict[str, list[Handle]] = defaultdict(list)
    for h in handles:
        stem = handle_stem(h.platform, h.handle)
        if stem is not None and is_distinctive(stem, params):
            groups[stem].append(h)
    edges = []
    for stem, members in sorted(groups.items()):
        platforms = [m.platform for m in members]
        if not 2 <= len(members) <= params.stem_max_accounts or len(set(platforms)) < len(platforms):
            continue  # one account, a common stem, or twice on one platform: not one persona's
        members.sort(key=lambda m: m.account_key)
        for i, a in enumerate(members):
            for b in members[i + 1:]:
                edges.append(Edge(SAME_HANDLE_STEM, a.account_key, b.account_key, weight, used,
                                  {"stem": stem, "handles": [a.handle, b.handle],
                                   "platforms": [a.platform, b.platform], "group_size": len(members)}))
    return edges


def load_handles(conn: sa.Connection, run_key: str, chunk: int = 20_000) -> Iterator[Handle]:
    """The run's handles, streamed from a server-side cursor ``chunk`` rows at a time."""
    rows = conn.execute(sa.text(
        "select s.account_key, a.platform, s.handle from account_snapshots s join accounts a using (account_key)"
        " where s.run_key = :k and s.handle is not null"), {"k": run_key},
        execution_options={"stream_results": True, "yield_per": chunk})
    for r in rows:
        yield Handle(r.account_key, r.platform, r.handle)


def _stem_hash(h: Handle, params: NetworkParams) -> int | None:
    stem = handle_stem(h.platform, h.handle)
    return hash(stem) if stem is not None and is_distinctive(stem, params) else None


def shared_stem_handles(conn: sa.Connection, run_key: str, params: NetworkParams, chunk: int = 20_000) -> list[Handle]:
    """The handles whose distinctive stem another handle of the run may share: one streamed pass keeps
    each distinctive stem's hash and its account's key (in one buffer), then the handles of the keys
    whose hash is held twice or more are fetched again. A stem of one account makes no edge, so
    ``same_handle_stem_edges`` of these is that of every handle; at 10M accounts few are kept."""
    hashes, ends, blob = array("q"), array("q"), bytearray()
    for h in load_handles(conn, run_key, chunk):
        if (v := _stem_hash(h, params)) is not None:
            hashes.append(v)
            blob += h.account_key.encode()
            ends.append(len(blob))
    if not hashes:
        return []
    values = np.frombuffer(hashes, dtype=np.int64)
    distinct, n = np.unique(values, return_counts=True)
    held = np.flatnonzero(np.isin(values, distinct[n >= 2])).tolist()
    keys = [bytes(blob[(ends[i - 1] if i else 0):ends[i]]).decode() for i in held]
    del hashes, ends, blob, values, distinct, n
    out: list[Handle] = []
    for lo in range(0, len(keys), chunk):
        out += [Handle(r.account_key, r.platform, r.handle) for r in conn.execute(sa.text(
            "select s.account_key, a.platform, s.handle from account_snapshots s join accounts a using (account_key)"
            " where s.run_key = :k and s.handle is not null and s.account_key = any(:keys)"),
            {"k": run_key, "keys": keys[lo:lo + chunk]})]
    return out


def run_platforms(conn: sa.Connection, run_key: str) -> int:
    """How many platforms the run's accounts are on (from the keys' prefixes: no join, the snapshots' key)."""
    return conn.execute(sa.text("select count(distinct split_part(account_key, ':', 1)) from account_snapshots"
                                " where run_key = :k"), {"k": run_key}).scalar_one()


def crossplatform_edges(conn: sa.Connection, run_key: str, params: NetworkParams,
                        weights: EdgeWeights | None = None) -> list[Edge]:
    """The run's new cross-platform edges (same_handle_stem); none, and nothing loaded, when the run holds
    one platform (every run of one platform's export)."""
    if run_platforms(conn, run_key) < 2:
        return []
    return same_handle_stem_edges(shared_stem_handles(conn, run_key, params), params, weights)


def mark_platforms(conn: sa.Connection, run_key: str) -> int:
    """Name both platforms in the evidence of every edge of the run whose ends are on different platforms
    (``platforms``: [a's, b's]); returns how many edges cross (none, without a query over the edges, in a
    run of one platform)."""
    if run_platforms(conn, run_key) < 2:
        return 0
    return conn.execute(sa.text(
        "update edges e set evidence = e.evidence || jsonb_build_object('platforms', jsonb_build_array(pa.platform,"
        " pb.platform)) from accounts pa, accounts pb"
        " where e.run_key = :k and pa.account_key = e.a_key and pb.account_key = e.b_key"
        " and pa.platform <> pb.platform"), {"k": run_key}).rowcount


def personas(members: Iterable[str], edges: Iterable[dict[str, Any]]) -> int:
    """A cluster's distinct identities: members joined by a same_handle_stem edge count once (one person,
    or one persona, on several platforms)."""
    parent = {m: m for m in members}

    def root(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for e in edges:
        if e["edge_type"] == SAME_HANDLE_STEM and e["a_key"] in parent and e["b_key"] in parent:
            parent[root(e["a_key"])] = root(e["b_key"])
    return len({root(m) for m in parent})


def platforms_of(keys: Iterable[str]) -> dict[str, int]:
    """Members per platform, sorted by platform name."""
    counts: dict[str, int] = defaultdict(int)
    for k in keys:
        counts[platform_of(k)] += 1
    return dict(sorted(counts.items()))
