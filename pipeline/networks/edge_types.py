"""The edge-type registry: every type of account-to-account edge, its family, and how pairs combine.

Families:
- ``image``: the two accounts show the same or a near-identical picture (or embedding). Several image
  edges on one pair are one piece of evidence, so a pair takes their maximum weight.
- ``trait``: shared account traits (creation burst, handle template, identical bio or link).
- ``coactivity``: shared behaviour in posts within a time window (``co_*``, QUT's meanings).
Trait and co-activity edges on one pair add up. Builders, clusters, flags, the report and the docs use
these names; an edge of an unregistered type is a bug that the contract test catches.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.core.registry import Registry

FAMILIES = ("image", "trait", "coactivity")


@dataclass(frozen=True)
class EdgeType:
    name: str
    family: str
    summary: str
    shared_image: bool = False  # the same picture, not merely similar features (flags' shared_image_share)


EDGE_TYPES: Registry[EdgeType] = Registry("edge type")


def register_edge_type(edge_type: EdgeType) -> EdgeType:
    if edge_type.family not in FAMILIES:
        raise ValueError(f"edge type {edge_type.name!r}: family {edge_type.family!r} is not one of {FAMILIES}")
    return EDGE_TYPES.register(edge_type.name, edge_type)


# The names, for code that picks out one type (a comparison with one of these is checked by the registry;
# a misspelt string literal would not be).
IDENTICAL_AVATAR = "identical_avatar"
NEAR_DUPLICATE_AVATAR = "near_duplicate_avatar"
CONFIRMED_NEAR_DUPLICATE = "confirmed_near_duplicate"
SIMILAR_EMBEDDING = "similar_embedding"
CREATION_WINDOW = "creation_window"
IDENTICAL_BIO = "identical_bio"
IDENTICAL_LINK = "identical_link"
CO_REPOST = "co_repost"
CO_LINK = "co_link"
CO_POST = "co_post"
CO_REPLY = "co_reply"
CO_HASHTAG = "co_hashtag"
SAME_HANDLE_STEM = "same_handle_stem"

for _t in (
    EdgeType(IDENTICAL_AVATAR, "image", "the same avatar image (sha256)", shared_image=True),
    EdgeType(NEAR_DUPLICATE_AVATAR, "image", "avatars whose perceptual hashes are within a few bits", shared_image=True),
    EdgeType(CONFIRMED_NEAR_DUPLICATE, "image",
             "near-duplicate avatars confirmed by a second image measure (dHash or embedding), both detailed",
             shared_image=True),
    EdgeType(SIMILAR_EMBEDDING, "image", "close backbone embeddings of two likely-synthetic avatars"),
    EdgeType(CREATION_WINDOW, "trait", "accounts created inside a burst of a shared trait, against the population"),
    EdgeType(IDENTICAL_BIO, "trait", "the same normalised bio in a small group"),
    EdgeType(IDENTICAL_LINK, "trait", "the same profile link in a small group"),
    EdgeType(SAME_HANDLE_STEM, "trait", "the same distinctive handle stem on different platforms"),
    EdgeType(CO_REPOST, "coactivity", "reposts of the same post within the window"),
    EdgeType(CO_LINK, "coactivity", "the same normalised link posted within the window"),
    EdgeType(CO_POST, "coactivity", "the same normalised text posted within the window"),
    EdgeType(CO_REPLY, "coactivity", "replies to the same post within the window"),
    EdgeType(CO_HASHTAG, "coactivity", "the same set of hashtags posted within the window"),
):
    register_edge_type(_t)


def family_of(edge_type: str) -> str:
    return EDGE_TYPES.get(edge_type).family


def types_in(family: str) -> frozenset[str]:
    return frozenset(name for name, t in EDGE_TYPES.items() if t.family == family)


def names_in(family: str) -> tuple[str, ...]:
    """The family's type names in registration order (the order builders write them in)."""
    if family not in FAMILIES:
        raise ValueError(f"edge family {family!r} is not one of {FAMILIES}")
    return tuple(name for name, t in EDGE_TYPES.items() if t.family == family)


def is_image(edge_type: str) -> bool:
    return family_of(edge_type) == "image"


def is_coactivity(edge_type: str) -> bool:
    return family_of(edge_type) == "coactivity"


def is_shared_image(edge_type: str) -> bool:
    return EDGE_TYPES.get(edge_type).shared_image
