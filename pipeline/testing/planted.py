"""Planted-network populations: organic accounts plus known operations, written straight into the
tables the network stages read, so the signals, edges, clusters and flags can be measured against
ground truth (tests/test_planted.py) and at scale (bench/network_pipeline.py).

What is simulated, and what is not: the rows stand for an ingested, scored run. Images are
represented by their sha256, pHash and a simulated detector probability and embedding (no pixels,
no CLIP forward pass: the detector is tested in tests/test_detectors.py), except the real photos
(``faces_dir``), whose files are stored under the images folder as the acquire stage would store them:
the image-ring test matches their pixels. Everything downstream of
those rows -- SQL signals, near-duplicate index, edges, clusters, flags -- is the real pipeline.

Kinds of account (``Population.truth``):
- ``organic``: varied handles, bios, links, creation dates over 14 years, unique avatars with a low
  generated-probability (about 1% false positives), some without avatar; organic posts and reposts.
- ``batch``: operations of 30 accounts created within one day, templated handles (``name_name`` +
  8 digits), empty bios, few followers, distinct non-synthetic avatars.
- ``avatar_ring``: generated faces, each shown by 6 accounts, plus near-duplicate re-encodings of
  each face (a few pHash bits off, the same face embedding) on 2 more accounts; the ring shares one
  link; creation spread over months, organic-looking handles.
- ``corepost_ring``: 20 organic-looking accounts (no image signal) that repost the same 15 posts
  within 30 seconds of each other.
- ``corepost_pair``: two organic-looking accounts with a few posts of their own that repost the same
  posts within 40 seconds of each other 2 to 4 times, as CooRTweet's real pairs do (issue 23; flag kind ``pair``).
- ``lookalike``: a brand's regional accounts openly sharing one logo (old, popular, distinct links
  and bios). Legitimate: must not be flagged. With ``faces_dir`` the logo has real pixels (a flat
  logo, some accounts showing resized JPEG re-encodes of it): a pHash near-duplicate that the
  detail test must keep out of image rings.

Kinds that do not share the detectors' assumptions (issue 10; ``HARD_OPERATIONS``):
- ``rare_batch``: 60 accounts made on two days with a handle template no organic account uses
  (``first_last_`` + 6 digits), organic-looking counts, bios and avatars: only the population's
  creation rate says the template is unusual.
- ``profile_batch``: 60 accounts made on two days with hashed handles (no template), no bio, no
  avatar, and one count profile (180-210 followers, 250-300 following, 30-36 posts), the shape of
  real takedown releases.
- ``photo_ring``: 40 accounts showing crops, resizes and re-encodes of 5 distinct real photos
  (``faces_dir``), with nothing else in common (organic handles, bios, dates and counts).
- ``cohashtag_ring``: 20 organic-looking accounts that each post 15 times with the same hashtag set
  within 30 seconds of each other (own posts with their own texts, no reposts, no links).
Across platforms (issue 23; the accounts keyed and platformed as the readers make them, ``twitter:<id>``,
``mastodon:<address>``, ``bluesky:<did>``; every other kind is on the ``planted`` platform):
- ``xp_persona``: 10 personas on X, Mastodon and Bluesky, one handle stem (``first_last`` + 4 digits) and one
  generated face each; even operations co-post 8 URLs on X and Bluesky within 20 seconds, odd ones share one
  bio and one X link and re-encode the face per platform (``xp_colink`` and ``xp_mirror`` of
  pipeline/testing/crossplatform.py, whose real export files cannot reach a million accounts). Its organic
  traps (``operations['xp_organic_multi']``, ``['xp_common_name']``, truth ``organic``): 20 people on two or
  three platforms with one handle and one photo, and common first names on every platform.
Organic accounts can be made harder too (``OrganicMix``): platform creation spikes (busy days),
a share with the platform's suggested handle (first+last + 8 digits), and distinct real photos as
avatars (pHash and dHash computed from their pixels).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from pipeline.config import Policy, Settings
from pipeline.core import runs
from pipeline.core.bulk import copy_rows
from pipeline.core.db import ensure_schema, transaction
from pipeline.testing.photos import PlantedImage, default_faces_dir, flat_logo, near_duplicate, photo_pool

DETECTOR_ID = "planted-sim:v1"
BACKBONE_ID = "planted-backbone"
EMBED_DIM = 32
PLATFORM = "planted"
AS_OF = datetime(2026, 3, 1, tzinfo=UTC)
FIRST = ["emma", "liam", "olivia", "noah", "ava", "mateo", "sofia", "lucas", "mia", "elena", "omar", "yuki", "amara",
         "ivan", "chloe", "diego", "lena", "ravi", "zoe", "felix", "nora", "hugo", "lara", "kofi", "sara", "tom"]
LAST = ["smith", "garcia", "chen", "kowalski", "nguyen", "silva", "okafor", "muller", "rossi", "haddad", "tanaka",
        "brown", "novak", "dubois", "perez", "ali", "jensen", "costa", "ivanova", "park", "kim", "lopez"]
BIOS = ["coffee, code and cats", "runner. reader. dad.", "photographer based in Lisbon", "views my own",
        "teacher | gardener | tea addict", "building things on the internet", "football and good food",
        "PhD student in marine biology", "nurse, mum, baker", "music is life", "travel and street food",
        "history nerd and hiker"]
COMMON_LINKS = ["instagram.com", "linktr.ee", "youtube.com", "github.com", "medium.com"]
KINDS = ("batch", "avatar_ring", "corepost_ring", "lookalike", "rare_batch", "profile_batch", "photo_ring",
         "cohashtag_ring", "mass_signup", "io_release", "corepost_pair", "xp_persona")
DEFAULT_OPERATIONS = {"batch": 2, "avatar_ring": 2, "corepost_ring": 2, "lookalike": 1, "corepost_pair": 10}
HARD_OPERATIONS = {**DEFAULT_OPERATIONS, "rare_batch": 2, "profile_batch": 2, "photo_ring": 2, "cohashtag_ring": 2,
                   "xp_persona": 2}
IO_OPERATIONS = {"mass_signup": 2}  # the IO-like population (``OrganicMix.io()``): users files only
OPERATION_SIZES = {"batch": 30, "avatar_ring": 32, "corepost_ring": 20, "lookalike": 12, "rare_batch": 60,
                   "profile_batch": 60, "photo_ring": 40, "cohashtag_ring": 20, "mass_signup": 300,
                   "corepost_pair": 2, "xp_persona": 30}
LANGUAGES = {"en": 0.45, "es": 0.12, "ja": 0.08, "pt": 0.07, "ar": 0.06, "fr": 0.04, "tr": 0.03, "ru": 0.03, "id": 0.03,
             "de": 0.03, "it": 0.02, "ko": 0.02, "hi": 0.01, "th": 0.01}
CITIES = ["London", "Madrid", "Lagos", "Tokyo", "São Paulo", "Cairo", "Paris", "Istanbul", "Moscow", "Jakarta", "Berlin",
          "Mexico City", "New York", "Manila", "Buenos Aires", "Mumbai", "Seoul", "Bangkok", "Nairobi", "Toronto"]


@dataclass(frozen=True)
class OrganicMix:
    """How hard the organic population is. The default is the original generator (its random draws
    unchanged); ``hard()`` is the population of issue 10."""

    busy_days: int = 0  # platform creation spikes (a launch, a viral moment)
    busy_share: float = 0.0  # share of organic accounts created on each busy day
    common_template_share: float = 0.0  # organic accounts with the platform-suggested first+last + 8 digits
    photos: bool = False  # distinct real photos (faces_dir) as organic avatars, as many as there are

    # an X/Twitter IO users file (``io()``): date-only creation dates, hashed handles, no avatars or post
    # counts, languages and locations, sign-ups varying by weekday and week, zero_follower_share with no
    # followers (more often without a bio: abandoned accounts)
    io_like: bool = False
    zero_follower_share: float = 0.0
    # the week the organic posts are spread over, in days: fewer pack them as densely per minute as a platform
    # that many times larger (7 / 100 at 100,000 accounts: the reposts a minute of 10,000,000)
    post_span_days: float = 7.0
    # the years the organic sign-ups are spread over, as a share of the default (30 days to 14 years back): 0.1 gives
    # as many sign-ups a day as a platform ten times larger
    signup_span_share: float = 1.0

    @classmethod
    def hard(cls) -> OrganicMix:
        return cls(busy_days=3, busy_share=0.04, common_template_share=0.1, photos=True)

    @classmethod
    def io(cls) -> OrganicMix:
        return cls(busy_days=3, busy_share=0.01, io_like=True, zero_follower_share=0.12)


def planted_accounts(operations: dict[str, int]) -> int:
    return sum(OPERATION_SIZES[k] * n for k, n in operations.items())


@dataclass
class Population:
    run_key: str
    truth: dict[str, str] = field(default_factory=dict)  # account_key -> kind ('organic' or a planted kind)
    operations: dict[str, list[list[str]]] = field(default_factory=lambda: defaultdict(list))
    posts: int = 0
    busy_days: list[str] = field(default_factory=list)  # ISO dates of the organic creation spikes

    @property
    def accounts(self) -> int:
        return len(self.truth)


def _sha(tag: str) -> str:
    return hashlib.sha256(tag.encode()).hexdigest()


def _flip(phash: int, bits: int, rng: np.random.Generator) -> int:
    for b in rng.choice(64, size=bits, replace=False):
        phash ^= 1 << int(b)
    return phash


class _Writer:
    """Collects rows per table and COPYs them in chunks of about ``chunk_rows`` snapshot and post rows
    (on ``conn``, the generator's one transaction), so a population of ten million accounts never sits
    in memory; without ``conn`` it keeps everything until ``flush``."""

    def __init__(self, run_key: str, rng: np.random.Generator, conn: sa.Connection | None = None,
                 chunk_rows: int = 200_000):
        self.run_key, self.rng, self.conn, self.chunk_rows = run_key, rng, conn, chunk_rows
        self.accounts: list[tuple] = []
        self.snapshots: list[tuple] = []
        self.avatars: list[tuple] = []
        self.images: dict[str, tuple] = {}
        self.scores: dict[str, tuple] = {}
        self.embeddings: dict[str, tuple] = {}
        self.posts: list[tuple] = []
        self.files: dict[str, bytes] = {}  # storage path -> bytes of the avatars that have real pixels
        self.seen: set[str] = set()  # every image written so far (flushed ones too), but the organic ones
        self.snapshot_count = self.post_count = 0  # rows ever written: the source locators count on

    def _bounded(self) -> None:
        """Flush when a chunk is full; called before a new account or post, never between an account's
        rows (``_xp_account`` rewrites the account it has just added)."""
        if self.conn is not None and len(self.snapshots) + len(self.posts) >= self.chunk_rows:
            self.flush(self.conn)

    def account(self, key: str, handle: str, created: datetime, bio: str, url: str | None, followers: int,
                following: int, n_posts: int | None, display_name: str | None = None, language: str | None = None,
                location: str | None = None, avatar: bool = True) -> None:
        self._bounded()
        self.snapshot_count += 1
        self.accounts.append((key, PLATFORM, key.split(":", 1)[1], self.run_key))
        self.snapshots.append((self.run_key, key, handle, display_name or handle, bio, url, created.isoformat(),
                               followers, following, n_posts,
                               f"avatars/{key.split(':', 1)[1]}.jpg" if avatar else None, "planted",
                               str(self.snapshot_count), language, location))

    def avatar(self, key: str, sha: str, phash: int, probability: float, embedding: np.ndarray | None = None,
               dhash: int | None = None, detail: float | None = None, size: tuple[int, int, int] = (20_000, 400, 400),
               new: bool = False) -> None:
        """``new``: the sha is known to be unseen (an organic avatar's own tag), so it is not remembered."""
        self.avatars.append((self.run_key, key, f"avatars/{key.split(':', 1)[1]}.jpg", sha, "stored"))
        if new or sha not in self.seen:
            if not new:
                self.seen.add(sha)
            self.images[sha] = (sha, *size, "JPEG", f"{phash:016x}", None if dhash is None else f"{dhash:016x}",
                                detail, f"{sha[:2]}/{sha}.jpg")
            label = probability >= 0.5
            self.scores[sha] = (sha, DETECTOR_ID, round(probability, 4), label, "simulated probability")
            if label:
                vec = embedding if embedding is not None else self.rng.normal(size=EMBED_DIM)
                self.embeddings[sha] = (sha, BACKBONE_ID, EMBED_DIM, "{" + ",".join(f"{v:.5f}" for v in vec) + "}")

    def photo(self, key: str, image: PlantedImage, probability: float) -> None:
        """An avatar with real pixels: its measures came from decoding it (pipeline/testing/photos.py)."""
        self.avatar(key, image.sha256, image.phash, probability, dhash=image.dhash, detail=image.detail,
                    size=(image.byte_size, image.width, image.height))
        if image.data:  # stored as the acquire stage would: the image-ring test matches these pixels
            self.files[f"{image.sha256[:2]}/{image.sha256}.jpg"] = image.data

    def post(self, key: str, post_id: str, at: datetime, reposted: str | None = None, urls: list[str] | None = None,
             text: str | None = None, hashtags: list[str] | None = None) -> None:
        self._bounded()
        self.post_count += 1
        self.posts.append((self.run_key, key, post_id, at.isoformat(), reposted, "{" + ",".join(urls or []) + "}",
                           "{" + ",".join(hashtags or []) + "}", text, "planted-posts", str(self.post_count)))

    def flush(self, conn: sa.Connection) -> None:
        _copy_new(conn, "accounts", ("account_key", "platform", "account_id", "first_seen_run"), self.accounts)
        copy_rows(conn, "account_snapshots", ("run_key", "account_key", "handle", "display_name", "bio", "url",
                                               "created_at", "followers", "following", "posts", "avatar_ref",
                                               "source_file", "source_locator", "language", "location"),
                   self.snapshots)
        _copy_new(conn, "images", ("sha256", "byte_size", "width", "height", "format", "phash", "dhash", "detail",
                                   "storage_path"), self.images.values())
        copy_rows(conn, "account_avatars", ("run_key", "account_key", "avatar_ref", "sha256", "status"), self.avatars)
        _copy_new(conn, "image_scores", ("sha256", "detector_id", "probability", "label", "reason"), self.scores.values())
        _copy_new(conn, "embeddings", ("sha256", "backbone_id", "dim", "vector"), self.embeddings.values())
        copy_rows(conn, "posts", ("run_key", "account_key", "post_id", "posted_at", "reposted_id", "urls", "hashtags",
                                   "text", "source_file", "source_locator"), self.posts)
        for rows in (self.accounts, self.snapshots, self.avatars, self.images, self.scores, self.embeddings, self.posts):
            rows.clear()


def hashed_handle(tag: str) -> str:
    """A handle as IO releases hash it (base64 of a salted SHA-256, 44 characters)."""
    import base64

    return base64.b64encode(hashlib.sha256(f"io-handle-{tag}".encode()).digest()).decode()


def _signup_days(n: int, rng: np.random.Generator, span: int = 14 * 365) -> np.ndarray:
    """Sign-up ages in whole days for an organic platform: growing over the years, busier on weekdays
    than at weekends, and varying from week to week and day to day."""
    ages = np.arange(30, span)
    dates = np.array([(AS_OF - timedelta(days=int(a))).weekday() for a in ages[:7]])
    weekday = np.tile(np.array([1.15, 1.1, 1.1, 1.05, 1.0, 0.75, 0.7])[dates], len(ages) // 7 + 1)[:len(ages)]
    trend = 0.4 + ages[::-1] / span  # newer years are busier
    week = np.repeat(rng.gamma(8, 1 / 8, size=len(ages) // 7 + 1), 7)[:len(ages)]
    day = rng.gamma(20, 1 / 20, size=len(ages))
    p = trend * weekday * week * day
    return rng.choice(ages, size=n, p=p / p.sum()).astype(np.float64)


def organic_key(i: int) -> str:
    """The key of the ``i``-th organic account (the population does not keep a list of them)."""
    return f"{PLATFORM}:o{i:07d}"


def _organic_io(w: _Writer, n: int, rng: np.random.Generator, mix: OrganicMix) -> list[str]:
    """Organic accounts as an X/Twitter IO users file shows them (``OrganicMix.io()``)."""
    age_days = _signup_days(n, rng)
    busy_dates: list[str] = []
    if mix.busy_days:
        busy_offsets = np.sort(rng.choice(np.arange(30, 2000), size=mix.busy_days, replace=False))
        on_busy = rng.random(n) < mix.busy_days * mix.busy_share
        age_days = np.where(on_busy, busy_offsets[rng.integers(mix.busy_days, size=n)].astype(np.float64), age_days)
        busy_dates = [(AS_OF - timedelta(days=int(d))).date().isoformat() for d in busy_offsets]
    zero = rng.random(n) < mix.zero_follower_share
    followers = np.where(zero, 0, rng.lognormal(4.5, 1.8, size=n).astype(np.int64))
    following = np.where(rng.random(n) < 0.05, 0, rng.lognormal(4.5, 1.3, size=n).astype(np.int64))
    no_bio = rng.random(n) < np.where(zero, 0.6, 0.3)
    bio_pick = rng.integers(len(BIOS), size=n)
    langs = np.array(list(LANGUAGES))[rng.choice(len(LANGUAGES), size=n, p=np.array(list(LANGUAGES.values())) / sum(LANGUAGES.values()))]
    city = np.where(rng.random(n) < 0.4, np.array(CITIES)[rng.integers(len(CITIES), size=n)], "")
    link = rng.random(n) < 0.2
    for i in range(n):
        key = organic_key(i)
        handle = hashed_handle(key)
        day = datetime.combine((AS_OF - timedelta(days=float(age_days[i]))).date(), datetime.min.time(), UTC)
        w.account(key, handle, day, "" if no_bio[i] else BIOS[bio_pick[i]],
                  f"https://t.co/{handle[:10]}" if link[i] else None, int(followers[i]), int(following[i]), None,
                  handle, language=str(langs[i]), location=str(city[i]) or None, avatar=False)
    return busy_dates


def _organic(w: _Writer, n: int, rng: np.random.Generator, posts_per_account: float, mix: OrganicMix = OrganicMix(),
             photos: list[PlantedImage] = ()) -> list[str]:
    """Organic accounts ``organic_key(0..n-1)``, drawn with numpy in bulk (a million take a minute, not an
    hour), then their posts; returns the busy days. The accounts' arrays are gone before the posts' are drawn."""
    if mix.io_like:
        return _organic_io(w, n, rng, mix)
    busy_dates = _organic_accounts(w, n, rng, mix, photos)
    _organic_posts(w, n, rng, posts_per_account, mix.post_span_days)
    return busy_dates


def _organic_accounts(w: _Writer, n: int, rng: np.random.Generator, mix: OrganicMix,
                      photos: list[PlantedImage]) -> list[str]:
    first = np.array(FIRST)[rng.integers(len(FIRST), size=n)]
    last = np.array(LAST)[rng.integers(len(LAST), size=n)]
    style = rng.random(n)
    cut = rng.integers(1, 6, size=n)
    small = rng.integers(1, 10 ** rng.integers(1, 5, size=n))
    long_digits = rng.integers(10 ** 7, 10 ** 8, size=n)
    age_days = rng.uniform(30, 14 * 365, size=n)
    if mix.signup_span_share != 1.0:
        age_days = 30 + (age_days - 30) * mix.signup_span_share
    age_secs = rng.uniform(0, 86400, size=n)
    bio_pick = rng.integers(len(BIOS), size=n)
    no_bio = rng.random(n) < 0.3
    link_roll = rng.random(n)
    common = rng.integers(len(COMMON_LINKS), size=n)
    followers = rng.lognormal(5, 1.5, size=n).astype(np.int64)
    following = rng.lognormal(5, 1, size=n).astype(np.int64)
    n_posts = rng.lognormal(4, 1.5, size=n).astype(np.int64)
    has_avatar = rng.random(n) < 0.95  # the rest show the platform's default picture: no stored avatar
    false_positive = rng.random(n) < 0.01  # the detector's ~1% false positives on real photos
    prob = np.where(false_positive, rng.uniform(0.5, 0.9, size=n), rng.beta(1, 30, size=n))
    phash = rng.integers(0, 2 ** 63, size=n, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, size=n).astype(np.uint64)
    busy_dates: list[str] = []
    if mix.busy_days:  # spikes: on each busy day busy_share of all organic accounts sign up
        busy_offsets = np.sort(rng.choice(np.arange(30, 2000), size=mix.busy_days, replace=False))
        on_busy = rng.random(n) < mix.busy_days * mix.busy_share
        which = rng.integers(mix.busy_days, size=n)
        age_days = np.where(on_busy, busy_offsets[which].astype(np.float64), age_days)
        age_secs = np.where(on_busy, rng.uniform(0, 86400, size=n), age_secs)
        busy_dates = [(AS_OF - timedelta(days=int(d))).date().isoformat() for d in busy_offsets]
    suggested = rng.random(n) < mix.common_template_share if mix.common_template_share else np.zeros(n, bool)
    suggested_digits = rng.integers(10 ** 7, 10 ** 8, size=n) if mix.common_template_share else long_digits
    for i in range(n):
        key = organic_key(i)
        f, la = first[i], last[i]
        if suggested[i]:  # the platform's suggestion at sign-up: first+last + 8 digits
            handle = f"{f}{la}{suggested_digits[i]}"
        elif style[i] < 0.35:
            handle = f"{f}{la}"
        elif style[i] < 0.65:
            handle = f"{f}.{la[:cut[i]]}"
        elif style[i] < 0.97:
            handle = f"{f}{la[0]}{small[i]}"
        else:  # some real people do have long digit runs
            handle = f"{f}_{la}{long_digits[i]}"
        roll = link_roll[i]
        url = (f"https://{f}{la}{i}.example.org" if roll < 0.3
               else f"https://www.{COMMON_LINKS[common[i]]}/" if roll < 0.4 else None)
        w.account(key, handle, AS_OF - timedelta(days=float(age_days[i]), seconds=float(age_secs[i])),
                  "" if no_bio[i] else BIOS[bio_pick[i]], url, int(followers[i]), int(following[i]), int(n_posts[i]),
                  f"{f.title()} {la.title()}")
        if has_avatar[i] and i < len(photos):
            w.photo(key, photos[i], float(prob[i]))
        elif has_avatar[i]:
            w.avatar(key, _sha(f"organic-{i}"), int(phash[i]), float(prob[i]), new=True)
    return busy_dates


def _organic_posts(w: _Writer, n: int, rng: np.random.Generator, per_account: float, span_days: float = 7.0) -> None:
    """Half reposts of popular posts (Zipf), half own posts, some with news links; spread over a week
    (``span_days``). An account reposts a post at most once, as platforms allow."""
    counts = rng.poisson(per_account, size=n)
    total = int(counts.sum())
    owner = np.repeat(np.arange(n), counts)
    seconds = rng.uniform(0, 7 * 86400, size=total) * (span_days / 7.0)
    repost = rng.random(total) < 0.5
    targets = max(50, n // 20)
    popular = rng.zipf(1.5, size=total) % targets
    # redrawn from a child stream, so every other draw of the population stays what it was
    popular[repost] = _one_repost_per_post(owner[repost], popular[repost], targets, rng.spawn(1)[0])
    with_link = rng.random(total) < 0.3
    link_site, link_story, salt = rng.integers(200, size=total), rng.integers(10 ** 6, size=total), rng.integers(10 ** 9, size=total)
    seq = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    for p in range(total):
        i = int(owner[p])
        at = AS_OF - timedelta(seconds=float(seconds[p]))
        if repost[p]:
            w.post(organic_key(i), f"o{i}-{seq[p]}", at, reposted=f"popular-{popular[p]}")
        else:
            w.post(organic_key(i), f"o{i}-{seq[p]}", at,
                   urls=[f"https://news{link_site[p]}.example.com/story/{link_story[p]}"] if with_link[p] else None,
                   text=f"organic post {i}-{seq[p]} {salt[p]}")


def _one_repost_per_post(owner: np.ndarray, target: np.ndarray, targets: int, rng: np.random.Generator) -> np.ndarray:
    """Each account's repost targets made distinct: a repeated one is drawn again (the same Zipf) until none is.
    Two reposts of one post by one account a few seconds apart gave a co-repost edge of weight 2 with everyone
    who reposted it once in between: stars of chance edges that flagged organic accounts at ten million
    (docs/benchmarks.md, "Ten million accounts"); a platform takes one repost of a post per account."""
    target = target.copy()
    for _ in range(10_000):
        key = owner.astype(np.int64) * targets + target
        order = np.argsort(key, kind="stable")
        repeated = np.zeros(key.size, dtype=bool)
        repeated[order[1:]] = key[order[1:]] == key[order[:-1]]
        if not repeated.any():
            return target
        target[repeated] = rng.zipf(1.5, size=int(repeated.sum())) % targets
    raise RuntimeError("an organic account has more reposts than there are popular posts; lower posts_per_account")


def _batch(w: _Writer, op: int, rng: np.random.Generator, size: int = 30) -> list[str]:
    day = AS_OF - timedelta(days=int(rng.integers(20, 400)))
    keys = []
    for i in range(size):
        key = f"{PLATFORM}:b{op}_{i:03d}"
        handle = f"{FIRST[rng.integers(len(FIRST))]}_{LAST[rng.integers(len(LAST))]}{rng.integers(10 ** 7, 10 ** 8)}"
        created = day + timedelta(seconds=float(rng.uniform(0, 20 * 3600)))
        w.account(key, handle, created, "", None, int(rng.integers(0, 8)), int(rng.integers(50, 300)),
                  int(rng.integers(0, 20)))
        w.avatar(key, _sha(f"batch-{op}-{i}"), int(rng.integers(0, 2 ** 63)), float(rng.beta(1, 20)))
        keys.append(key)
    return keys


def _avatar_ring(w: _Writer, op: int, rng: np.random.Generator, faces: int = 4, per_face: int = 6,
                 variants: int = 2) -> list[str]:
    keys = []
    start = AS_OF - timedelta(days=int(rng.integers(200, 600)))
    link = f"https://ring{op}-deals.example.net/join"
    n = 0
    for f in range(faces):
        base_hash = int(rng.integers(0, 2 ** 63))
        face_vec = rng.normal(size=EMBED_DIM)
        sha = _sha(f"ring-{op}-face-{f}")
        for k in range(per_face + variants):
            key = f"{PLATFORM}:r{op}_{n:03d}"
            n += 1
            first, last = FIRST[rng.integers(len(FIRST))], LAST[rng.integers(len(LAST))]
            created = start + timedelta(days=float(rng.uniform(0, 150)))
            w.account(key, f"{first}{last}{rng.integers(1, 100)}", created, BIOS[rng.integers(len(BIOS))], link,
                      int(rng.integers(20, 400)), int(rng.integers(100, 600)), int(rng.integers(10, 300)),
                      f"{first.title()} {last.title()}")
            if k < per_face:
                w.avatar(key, sha, base_hash, float(rng.uniform(0.8, 0.99)), face_vec)
            else:  # a re-encoded or slightly edited copy: a new sha, a few pHash bits off, the same face
                w.avatar(key, _sha(f"ring-{op}-face-{f}-v{k}"), _flip(base_hash, int(rng.integers(1, 4)), rng),
                         float(rng.uniform(0.8, 0.99)), face_vec + rng.normal(scale=0.05, size=EMBED_DIM))
            keys.append(key)
    return keys


def _corepost_ring(w: _Writer, op: int, rng: np.random.Generator, size: int = 20, targets: int = 15) -> list[str]:
    keys = [f"{PLATFORM}:c{op}_{i:03d}" for i in range(size)]
    for i, key in enumerate(keys):
        first, last = FIRST[rng.integers(len(FIRST))], LAST[rng.integers(len(LAST))]
        created = AS_OF - timedelta(days=float(rng.uniform(100, 3000)))
        w.account(key, f"{first}.{last}", created, BIOS[rng.integers(len(BIOS))], None, int(rng.lognormal(5, 1)),
                  int(rng.lognormal(5, 1)), int(rng.lognormal(5, 1)), f"{first.title()} {last.title()}")
        w.avatar(key, _sha(f"corepost-{op}-{i}"), int(rng.integers(0, 2 ** 63)), float(rng.beta(1, 30)))
    for t in range(targets):
        at = AS_OF - timedelta(seconds=float(rng.uniform(3600, 6 * 86400)))
        for i, key in enumerate(keys):
            w.post(key, f"c{op}-{i}-{t}", at + timedelta(seconds=float(rng.uniform(0, 30))), reposted=f"target-{op}-{t}")
    return keys


def _corepost_pair(w: _Writer, op: int, rng: np.random.Generator) -> list[str]:
    """Two organic-looking accounts (own handles, bios, avatars, creation dates and a few posts of their own,
    among the organic posters) that repost the same posts within seconds of each other 2 to 4 times: CooRTweet's
    24 real pairs share 2 (21 of them), 3 (2) or 4 (1) co-reposts, so most planted pairs are that weak."""
    keys = [f"{PLATFORM}:cp{op}_{i}" for i in range(2)]
    for i, key in enumerate(keys):
        first, last = FIRST[rng.integers(len(FIRST))], LAST[rng.integers(len(LAST))]
        created = AS_OF - timedelta(days=float(rng.uniform(100, 4000)))
        w.account(key, f"{first}{last[:int(rng.integers(1, 6))]}{rng.integers(1, 1000)}", created,
                  BIOS[rng.integers(len(BIOS))], None, int(rng.lognormal(5, 1.5)), int(rng.lognormal(5, 1)),
                  int(rng.lognormal(4, 1.5)), f"{first.title()} {last.title()}")
        w.avatar(key, _sha(f"corepost-pair-{op}-{i}"), int(rng.integers(0, 2 ** 63)), float(rng.beta(1, 30)))
        for p in range(int(rng.poisson(2))):  # their own posts, as an organic account's
            w.post(key, f"cp{op}-{i}-own{p}", AS_OF - timedelta(seconds=float(rng.uniform(0, 7 * 86400))),
                   text=f"my own post {op}-{i}-{p} {rng.integers(10 ** 9)}")
    for t in range(int(rng.choice([2, 3, 4], p=[0.6, 0.25, 0.15]))):
        at = AS_OF - timedelta(seconds=float(rng.uniform(3600, 6 * 86400)))
        for i, key in enumerate(keys):
            w.post(key, f"cp{op}-{i}-{t}", at + timedelta(seconds=float(rng.uniform(0, 40))),
                   reposted=f"pair-target-{op}-{t}")
    return keys


def _two_days(rng: np.random.Generator) -> datetime:
    return AS_OF - timedelta(days=int(rng.integers(20, 400)))


def _rare_batch(w: _Writer, op: int, rng: np.random.Generator, size: int = 60) -> list[str]:
    """A template no organic account uses, made on two days; everything else looks organic."""
    start = _two_days(rng)
    keys = []
    for i in range(size):
        key = f"{PLATFORM}:rb{op}_{i:03d}"
        first, last = FIRST[rng.integers(len(FIRST))], LAST[rng.integers(len(LAST))]
        created = start + timedelta(seconds=float(rng.uniform(0, 2 * 86400)))
        w.account(key, f"{first}_{last}_{rng.integers(10 ** 5, 10 ** 6)}", created, BIOS[rng.integers(len(BIOS))],
                  None, int(rng.lognormal(5, 1.5)), int(rng.lognormal(5, 1)), int(rng.lognormal(4, 1.5)),
                  f"{first.title()} {last.title()}")
        w.avatar(key, _sha(f"rare-batch-{op}-{i}"), int(rng.integers(0, 2 ** 63)), float(rng.beta(1, 30)))
        keys.append(key)
    return keys


def _profile_batch(w: _Writer, op: int, rng: np.random.Generator, size: int = 60) -> list[str]:
    """Hashed handles, no bio, no avatar, one count profile, made on two days."""
    start = _two_days(rng)
    alphabet = np.array(list("abcdefghijklmnopqrstuvwxyz0123456789"))
    keys = []
    for i in range(size):
        key = f"{PLATFORM}:pb{op}_{i:03d}"
        handle = "".join(alphabet[rng.integers(len(alphabet), size=int(rng.integers(10, 16)))])
        created = start + timedelta(seconds=float(rng.uniform(0, 2 * 86400)))
        w.account(key, handle, created, "", None, int(rng.integers(180, 211)), int(rng.integers(250, 301)),
                  int(rng.integers(30, 37)))
        keys.append(key)
    return keys


def _mass_signup(w: _Writer, op: int, rng: np.random.Generator, size: int = 300, spike_days: int = 8,
                 spike_share: float = 0.92) -> list[str]:
    """A takedown's sign-up spikes, as an IO users file shows them (issue 23): ``spike_share`` of the
    accounts made on ``spike_days`` days within three months (the largest day about a third of them,
    as 106 of the 926 of the release the issue describes), the rest one or two a day over half a year;
    74% with no follower, 73% without a bio, following a few dozen, one language (92% 'es'), hashed
    handles, date-only creation dates, no avatar, no post count."""
    start = AS_OF - timedelta(days=int(rng.integers(60, 1500)))
    days = np.sort(rng.choice(90, size=spike_days, replace=False))
    weights = np.array([106, 60, 45, 35, 30, 25, 20, 15][:spike_days], dtype=np.float64)
    spiked = rng.random(size) < spike_share
    when = np.where(spiked, days[rng.choice(spike_days, size=size, p=weights / weights.sum())],
                    rng.integers(-45, 135, size=size))
    keys = []
    for i in range(size):
        key = f"{PLATFORM}:ms{op}_{i:03d}"
        handle = hashed_handle(key)
        followers = 0 if rng.random() < 0.74 else int(rng.lognormal(1.0, 1.0))
        bio = "" if rng.random() < 0.73 else f"{BIOS[rng.integers(len(BIOS))]} {rng.integers(1, 10 ** 6)}"
        day = datetime.combine((start + timedelta(days=int(when[i]))).date(), datetime.min.time(), UTC)
        w.account(key, handle, day, bio, None, followers, int(rng.lognormal(2.3, 0.6)), None, handle,
                  language="es" if rng.random() < 0.92 else "en", avatar=False)
        keys.append(key)
    return keys


def io_users_accounts(w: _Writer, path: Path, run_key_prefix: str = "io") -> list[str]:
    """The accounts of a real X/Twitter IO users CSV (read by the project's reader), written as kind
    ``io_release``: their own dates, counts, bios and languages."""
    from pipeline.ingest.readers.base import AccountRecord
    from pipeline.ingest.readers.twitter_io import TwitterIOReader

    keys = []
    for item in TwitterIOReader().read(path):
        if isinstance(item, AccountRecord):
            key = f"{PLATFORM}:{run_key_prefix}_{hashlib.sha256(item.account_id.encode()).hexdigest()[:16]}"
            w.account(key, item.handle or key, item.created_at, item.bio or "", item.url, item.followers,
                      item.following, item.posts, item.display_name, language=item.language,
                      location=item.location, avatar=False)
            keys.append(key)
    return keys


def _photo_ring(w: _Writer, op: int, rng: np.random.Generator, originals: list[tuple[bytes, PlantedImage]],
                per_photo: int = 8) -> list[str]:
    """Each photo shown by ``per_photo`` accounts: one the original, the others crops, resizes and
    re-encodes. Handles, bios, dates and counts are organic."""
    keys = []
    for p, (data, original) in enumerate(originals):
        for k in range(per_photo):
            key = f"{PLATFORM}:pr{op}_{p}_{k}"
            first, last = FIRST[rng.integers(len(FIRST))], LAST[rng.integers(len(LAST))]
            created = AS_OF - timedelta(days=float(rng.uniform(30, 14 * 365)))
            w.account(key, f"{first}.{last[:int(rng.integers(1, 6))]}", created, BIOS[rng.integers(len(BIOS))], None,
                      int(rng.lognormal(5, 1.5)), int(rng.lognormal(5, 1)), int(rng.lognormal(4, 1.5)),
                      f"{first.title()} {last.title()}")
            w.photo(key, original if k == 0 else near_duplicate(data, rng), float(rng.beta(1, 30)))
            keys.append(key)
    return keys


def _cohashtag_ring(w: _Writer, op: int, rng: np.random.Generator, size: int = 20, posts: int = 15) -> list[str]:
    keys = [f"{PLATFORM}:h{op}_{i:03d}" for i in range(size)]
    for i, key in enumerate(keys):
        first, last = FIRST[rng.integers(len(FIRST))], LAST[rng.integers(len(LAST))]
        created = AS_OF - timedelta(days=float(rng.uniform(100, 3000)))
        w.account(key, f"{first}{last[0]}{rng.integers(1, 1000)}", created, BIOS[rng.integers(len(BIOS))], None,
                  int(rng.lognormal(5, 1)), int(rng.lognormal(5, 1)), int(rng.lognormal(5, 1)),
                  f"{first.title()} {last.title()}")
        w.avatar(key, _sha(f"cohashtag-{op}-{i}"), int(rng.integers(0, 2 ** 63)), float(rng.beta(1, 30)))
    for t in range(posts):
        at = AS_OF - timedelta(seconds=float(rng.uniform(3600, 6 * 86400)))
        tags = sorted({f"campaign{op}", f"topic{op}x{t % 5}", f"wave{op}x{t}"})
        for i, key in enumerate(keys):
            w.post(key, f"h{op}-{i}-{t}", at + timedelta(seconds=float(rng.uniform(0, 30))),
                   text=f"my own words {i} {t} {rng.integers(10 ** 9)}", hashtags=tags)
    return keys


# --- across platforms (issue 23): one persona on X, Mastodon and Bluesky ----------------------------------
XP_PLATFORMS = ("twitter", "mastodon", "bluesky")
XP_INSTANCES = ("mastodon.social", "fosstodon.org", "mstdn.social", "chaos.social")
XP_OPENED = {"twitter": 14 * 365, "mastodon": 9 * 365, "bluesky": 3 * 365}  # oldest sign-up, days before AS_OF
XP_COMMON = ("maria", "john", "anna", "david", "laura", "alex")
XP_WORDS = ("coffee", "maps", "cycling", "jazz", "books", "gardening", "science", "football", "photos", "cooking",
            "travel", "music", "teacher", "nurse", "engineer", "student", "dad", "mum", "runner", "painter")


def _xp_handle(platform: str, name: str, rng: np.random.Generator, instance: int | None = None) -> str:
    """``name`` as each platform writes a handle (as pipeline/testing/crossplatform.py's exports do): X as is,
    Mastodon ``name@instance``, Bluesky a domain (hyphens for underscores)."""
    if platform == "mastodon":
        return f"{name}@{XP_INSTANCES[int(rng.integers(len(XP_INSTANCES))) if instance is None else instance]}"
    if platform == "bluesky":
        return f"{name.replace('_', '-')}.bsky.social"
    return name


def _xp_account(w: _Writer, platform: str, handle: str, rng: np.random.Generator, bio: str,
                url: str | None = None) -> str:
    """An account keyed as the readers key it (``twitter:<userid>``, ``mastodon:<address>``,
    ``bluesky:<did>``) and with its platform in ``accounts.platform``; returns the key."""
    digest = hashlib.sha256(f"{platform}|{handle}".encode()).hexdigest()
    account_id = (str(10**15 + int(digest[:12], 16) % 10**15) if platform == "twitter" else handle.lower()
                  if platform == "mastodon" else
                  "did:plc:" + "".join("abcdefghijklmnopqrstuvwxyz234567"[int(c, 16) % 32] for c in digest[:24]))
    key = f"{platform}:{account_id}"
    created = AS_OF - timedelta(days=float(rng.uniform(30, XP_OPENED[platform])))
    w.account(key, handle, created, bio, url, int(rng.lognormal(4.5, 1.2)), int(rng.lognormal(5, 0.8)),
              int(rng.lognormal(4, 1.2)), handle.split("@")[0].split(".")[0].replace("_", " ").title())
    w.accounts[-1] = (key, platform, account_id, w.run_key)  # the writer's default is the planted platform
    return key


def _xp_bio(rng: np.random.Generator) -> str:
    return " ".join(rng.choice(XP_WORDS, size=3, replace=False)) + f" · {int(rng.integers(10, 99))}"


def _xp_persona(w: _Writer, op: int, rng: np.random.Generator, personas: int = 10, urls: int = 8) -> list[str]:
    """An operation of ``personas`` personas, each on X, Mastodon and Bluesky with one handle stem
    (``first_last`` + 4 digits) and one generated face, mirroring pipeline/testing/crossplatform.py's
    operations: even ``op`` as ``xp_colink`` (own bios; on X and Bluesky the personas post the operation's
    URLs within 20 seconds; Mastodon accounts carry no posts), odd ``op`` as ``xp_mirror`` (one bio for the
    operation, one profile link on X, the face re-encoded on Mastodon and Bluesky: near-duplicates)."""
    mirror = op % 2 == 1
    shared_bio = f"Independent voices for a free homeland {op}. Share the truth!"
    targets = [f"https://truth-now{op}.example.net/a/{i}" for i in range(urls)]
    times = [AS_OF - timedelta(seconds=float(rng.uniform(3600, 20 * 86400))) for _ in targets]
    keys = []
    for k in range(personas):
        name = f"{FIRST[(op * 5 + k) % len(FIRST)]}_{LAST[(op * 3 + k * 7) % len(LAST)]}{int(rng.integers(1000, 10000))}"
        face_hash = int(rng.integers(0, 2 ** 63))
        face_vec = rng.normal(size=EMBED_DIM)
        for p, platform in enumerate(XP_PLATFORMS):
            key = _xp_account(w, platform, _xp_handle(platform, name, rng), rng,
                              shared_bio if mirror else _xp_bio(rng),
                              "https://free-homeland.example.com" if mirror and platform == "twitter" else None)
            if mirror and p:  # a re-encode: another file, a few pHash bits off, the same face
                w.avatar(key, _sha(f"xp-{op}-{k}-{platform}"), _flip(face_hash, int(rng.integers(1, 4)), rng),
                         float(rng.uniform(0.8, 0.99)), face_vec)
            else:
                w.avatar(key, _sha(f"xp-{op}-{k}"), face_hash, float(rng.uniform(0.8, 0.99)), face_vec)
            if not mirror and platform != "mastodon":
                for t, (at, url) in enumerate(zip(times, targets)):
                    w.post(key, f"xp{op}-{k}-{platform}-{t}", at + timedelta(seconds=float(rng.uniform(0, 20))),
                           urls=[url], text=f"Must read {url}")
            keys.append(key)
    return keys


def _xp_organic(w: _Writer, rng: np.random.Generator, people: int = 20) -> dict[str, list[str]]:
    """The organic traps of the cross-platform operations: ``people`` persons each on two or three platforms
    with one distinctive handle and one real (non-generated) photo -- one identity, never a network -- and
    common first names (``maria`` on X, on two Mastodon instances and on Bluesky, ``maria12`` on two
    platforms), different people who must not be joined. Returns the keys of each trap."""
    multi, common = [], []
    for i in range(people):
        # a name and a birth year: no other kind's handle has this shape (the avatar rings' ``firstlast`` + 1 to
        # 99 once met ``chloe_tanaka24`` by chance at 1M and joined two of these accounts to a ring)
        name = f"{FIRST[i % len(FIRST)]}_{LAST[(i * 5 + 3) % len(LAST)]}{1960 + i}"
        photo, phash = _sha(f"xp-person-{i}"), int(rng.integers(0, 2 ** 63))
        probability = float(rng.beta(1, 30))
        bio = _xp_bio(rng)
        for platform in XP_PLATFORMS if i % 2 else XP_PLATFORMS[:2]:
            key = _xp_account(w, platform, _xp_handle(platform, name, rng), rng, bio)
            w.avatar(key, photo, phash, probability)
            multi.append(key)
    for c, name in enumerate(XP_COMMON):
        for platform in XP_PLATFORMS:
            for k in range(2 if platform == "mastodon" else 1):
                key = _xp_account(w, platform, _xp_handle(platform, name, rng, instance=k), rng, _xp_bio(rng))
                w.avatar(key, _sha(f"xp-common-{c}-{platform}-{k}"), int(rng.integers(0, 2 ** 63)), float(rng.beta(1, 30)))
                common.append(key)
        for platform in XP_PLATFORMS[:2]:
            key = _xp_account(w, platform, _xp_handle(platform, f"{name}12", rng, instance=3), rng, _xp_bio(rng))
            w.avatar(key, _sha(f"xp-common12-{c}-{platform}"), int(rng.integers(0, 2 ** 63)), float(rng.beta(1, 30)))
            common.append(key)
    return {"xp_organic_multi": multi, "xp_common_name": common}


def _lookalike(w: _Writer, op: int, rng: np.random.Generator, logos: list[PlantedImage] | None = None,
               regions: tuple[str, ...] = ("uk", "fr", "de", "es", "it", "nl", "br", "mx", "jp", "in", "au", "ca")
               ) -> list[str]:
    keys = []
    brand = f"acme{op}"
    logo_hash = int(rng.integers(0, 2 ** 63))
    for i, region in enumerate(regions):
        key = f"{PLATFORM}:l{op}_{region}"
        created = AS_OF - timedelta(days=float(rng.uniform(800, 4500)))
        w.account(key, f"{brand}_{region}", created, f"Official {brand.title()} account for {region.upper()}. Support: DM us.",
                  f"https://{brand}.example.com/{region}", int(rng.integers(20_000, 900_000)), int(rng.integers(50, 500)),
                  int(rng.integers(2000, 20000)), f"{brand.title()} {region.upper()}")
        if logos is None:
            w.avatar(key, _sha(f"logo-{op}"), logo_hash, float(rng.uniform(0.01, 0.08)))
        else:  # half the regions upload the logo itself, half a resized re-encode of it
            w.photo(key, logos[0] if i % 2 == 0 else logos[1 + i // 2 % (len(logos) - 1)], float(rng.uniform(0.01, 0.08)))
        keys.append(key)
    return keys


def generate(settings: Settings, run_key: str = "planted", organic: int = 2000, seed: int = 0,
             operations: dict[str, int] | None = None, posts_per_account: float = 2.0,
             policy: Policy | None = None, mix: OrganicMix | None = None,
             faces_dir: Path | None = None, predecessor: str | None = "latest", io_users: Path | None = None,
             organic_photos: list[PlantedImage] | None = None, chunk_rows: int = 200_000,
             bulk_checks: bool = True) -> Population:
    """Write a planted population as run ``run_key`` (replacing it); returns the ground truth.

    Kinds that need real pixels (``photo_ring``; real logos for ``lookalike``; ``mix.photos``) read
    ``faces_dir`` (default ``../shared/data/faces``); without it ``photo_ring`` is refused.
    ``organic_photos``: the organic avatars' photos as given (e.g. ``photos.folder_photos``: whole face sets,
    not de-duplicated), instead of the pool's (a photo that is also a ring's original is left out).
    ``predecessor`` is pinned on the run (its cluster ids and statuses are inherited): by default the
    latest succeeded other run, so generating day1, running it, then day2 makes day2 follow day1.
    ``io_users``: a real IO users CSV injected among the organic accounts (kind ``io_release``).
    ``chunk_rows``: rows (snapshots and posts) per COPY while generating, which bounds the memory; the
    rows are the same whatever it is. ``bulk_checks``: load without PostgreSQL's per-row foreign-key
    triggers (a superuser's ``session_replication_role = replica``, after the run's old rows are deleted)
    and check every foreign key of the written tables once at the end, set-based (``_check_references``);
    the per-row triggers were most of the server's time. Without superuser rights the triggers stay."""
    ensure_schema(settings)
    ops = {**DEFAULT_OPERATIONS, **(operations or {})}
    mix = mix or OrganicMix()
    policy = policy or settings.policy()
    faces_dir = faces_dir or default_faces_dir()
    needs_pixels = ops.get("photo_ring", 0) or mix.photos
    pool = photo_pool(faces_dir) if needs_pixels else []
    if needs_pixels and not pool:
        raise FileNotFoundError(f"photo rings and organic photos need real photos under {faces_dir}/real")
    if predecessor == "latest":
        with transaction(settings) as conn:
            existing = conn.execute(sa.text("select predecessor from runs where run_key = :k"), {"k": run_key}).first()
            predecessor = existing.predecessor if existing is not None else conn.execute(sa.text(
                "select run_key from runs where run_key <> :k and status = 'succeeded'"
                " order by finished_at desc nulls last, run_key desc limit 1"), {"k": run_key}).scalar()
    runs.start_run(settings, run_key, None, "planted",
                   {**policy.threshold_params(), "detector": DETECTOR_ID, "as_of": AS_OF.isoformat()},
                   predecessor=predecessor)
    with transaction(settings) as conn:
        _clear(conn, run_key)
        conn.execute(sa.text(
            "insert into detectors (detector_id, kind, version, backbone_id, spec) values"
            " (:d, 'simulated', '1', :b, cast(:s as jsonb)) on conflict (detector_id) do nothing"),
            {"d": DETECTOR_ID, "b": BACKBONE_ID, "s": json.dumps({"threshold": 0.5, "note": "planted populations"})})
        conn.execute(sa.text("update runs set detector_id = :d where run_key = :k"), {"d": DETECTOR_ID, "k": run_key})
        deferred = bulk_checks and _skip_row_triggers(conn)
        w = _Writer(run_key, np.random.default_rng(seed), conn, chunk_rows)
        pop = _populate(w, ops, mix, posts_per_account, organic, pool, organic_photos, io_users)
        w.flush(conn)
        if deferred:
            conn.execute(sa.text("set local session_replication_role = origin"))
            _check_references(conn, run_key)
    _store_files(settings, w.files)
    return pop


def _populate(w: _Writer, ops: dict[str, int], mix: OrganicMix, posts_per_account: float, organic: int,
              pool: list[tuple[bytes, PlantedImage]], organic_photos: list[PlantedImage] | None,
              io_users: Path | None) -> Population:
    """Every account and post of the population, in the generator's one order of random draws."""
    rng = w.rng
    pop = Population(w.run_key)
    ring_photos = 5 * ops.get("photo_ring", 0)
    order = rng.permutation(len(pool)) if pool else np.array([], dtype=np.int64)
    originals = [pool[int(k)] for k in order[:ring_photos]]
    if organic_photos is not None:
        ring_shas = {image.sha256 for _, image in originals}
        organic_photos = [p for p in organic_photos if p.sha256 not in ring_shas]
    else:
        organic_photos = [pool[int(k)][1] for k in order[ring_photos:]] if mix.photos else []
    pop.busy_days = _organic(w, organic, rng, posts_per_account, mix, organic_photos)
    pop.truth = dict.fromkeys(map(organic_key, range(organic)), "organic")  # the first keys: no copy of the dict
    builders = {"batch": _batch, "avatar_ring": _avatar_ring, "corepost_ring": _corepost_ring,
                "rare_batch": _rare_batch, "profile_batch": _profile_batch, "cohashtag_ring": _cohashtag_ring,
                "mass_signup": _mass_signup, "corepost_pair": _corepost_pair, "xp_persona": _xp_persona}
    for kind in KINDS:
        for op in range(ops.get(kind, 0)):
            if kind == "photo_ring":
                members = _photo_ring(w, op, rng, originals[5 * op:5 * op + 5])
            elif kind == "lookalike":
                logos = None if not pool else [flat_logo(op)] + [flat_logo(op, int(s), int(q)) for s, q in
                                                                  zip(rng.integers(96, 300, 3), rng.integers(60, 93, 3))]
                members = _lookalike(w, op, rng, logos)
            else:
                members = builders[kind](w, op, rng)
            pop.operations[kind].append(members)
            pop.truth.update({k: kind for k in members})
    if ops.get("xp_persona", 0):  # its organic traps: people on several platforms, common first names
        for trap, members in _xp_organic(w, rng).items():
            pop.operations[trap].append(members)
            pop.truth.update({k: "organic" for k in members})
    if io_users is not None:
        members = io_users_accounts(w, io_users)
        pop.operations["io_release"].append(members)
        pop.truth.update({k: "io_release" for k in members})
    pop.posts = w.post_count
    return pop


def _store_files(settings: Settings, files: dict[str, bytes]) -> None:
    """Write the avatars that have pixels under the images folder (once: the path names the sha256)."""
    from pipeline.core.storage import atomic_write

    for path, data in files.items():
        target = settings.image_dir / path
        if not target.exists():
            atomic_write(target, data)


def _copy_new(conn: sa.Connection, table: str, columns: tuple[str, ...], rows) -> None:
    """COPY through a temporary table, skipping rows whose key exists (images and accounts are shared
    across runs)."""
    conn.execute(sa.text(f"create temp table _planted_{table} (like {table}) on commit drop"))
    copy_rows(conn, f"_planted_{table}", columns, rows)
    cols = ", ".join(columns)
    conn.execute(sa.text(f"insert into {table} ({cols}) select {cols} from _planted_{table} on conflict do nothing"))
    conn.execute(sa.text(f"drop table _planted_{table}"))  # the next chunk creates it again


WRITTEN = ("accounts", "account_snapshots", "images", "account_avatars", "image_scores", "embeddings", "posts")


def _skip_row_triggers(conn: sa.Connection) -> bool:
    """Turn off the per-row foreign-key triggers for the rest of the transaction where the role may (a
    superuser, as on the embedded server); returns whether it did. Only after ``_clear``: its deletes need
    the cascades."""
    try:
        with conn.begin_nested():
            conn.execute(sa.text("set local session_replication_role = replica"))
    except sa.exc.DBAPIError:
        return False
    return True


def _check_references(conn: sa.Connection, run_key: str) -> None:
    """Every foreign key of the tables the generator writes (``WRITTEN``), checked with one anti-join per
    key over the table (over the run's rows where the table has a ``run_key``); raises on a dangling one."""
    fks = conn.execute(sa.text(
        "select c.conrelid::regclass::text as child, c.confrelid::regclass::text as parent,"
        " array(select a.attname::text from unnest(c.conkey) with ordinality k(n, i) join pg_attribute a"
        "       on a.attrelid = c.conrelid and a.attnum = k.n order by k.i) as cols,"
        " array(select a.attname::text from unnest(c.confkey) with ordinality k(n, i) join pg_attribute a"
        "       on a.attrelid = c.confrelid and a.attnum = k.n order by k.i) as parent_cols"
        " from pg_constraint c where c.contype = 'f' and c.conparentid = 0"
        " and c.conrelid = any(cast(:tables as regclass[])) order by 1, 2, 3"), {"tables": list(WRITTEN)}).all()
    run_tables = {fk.child for fk in fks if fk.cols == ["run_key"]}
    for fk in fks:
        where = [f"ch.{c} is not null" for c in fk.cols] + (["ch.run_key = :k"] if fk.child in run_tables else [])
        match = " and ".join(f"p.{pc} = ch.{c}" for c, pc in zip(fk.cols, fk.parent_cols))
        dangling = conn.execute(sa.text(
            f"select count(*) from {fk.child} ch where {' and '.join(where)}"
            f" and not exists (select 1 from {fk.parent} p where {match})"), {"k": run_key}).scalar()
        if dangling:
            raise ValueError(f"planted run {run_key}: {dangling} {fk.child} rows reference no {fk.parent}"
                             f" ({', '.join(fk.cols)})")


def _clear(conn: sa.Connection, run_key: str) -> None:
    """A rerun of the generator replaces the run's input rows, as a re-ingest would; flags (with their
    investigator statuses) are the flag stage's to keep or drop."""
    for table in ("clusters", "edges", "avatar_near_duplicates", "account_signals", "posts", "account_avatars",
                  "account_snapshots"):
        conn.execute(sa.text(f"delete from {table} where run_key = :k"), {"k": run_key})


def evaluate(settings: Settings, pop: Population) -> dict[str, dict[str, Any]]:
    """Per-kind precision and recall of the run's flags, counted in accounts.

    A flagged cluster is attributed to the kind most of its members have; every flag counts, whatever its
    size, so a pair flag (two accounts, kind ``pair``) counts for ``corepost_pair``. Precision of a kind: the
    share of the accounts in clusters attributed to it that truly are that kind. Recall: the share
    of the kind's accounts that sit in any flagged cluster. For ``lookalike`` (and ``organic``) the
    useful number is ``flagged``: how many of them were flagged at all; it should be 0.
    """
    with transaction(settings) as conn:
        rows = conn.execute(sa.text("select f.cluster_id, m.account_key from flags f join cluster_members m"
                                    " on m.run_key = f.run_key and m.cluster_id = f.cluster_id where f.run_key = :k"),
                            {"k": pop.run_key}).all()
    clusters: dict[str, list[str]] = defaultdict(list)
    for cid, key in rows:
        clusters[cid].append(key)
    flagged = {k for ms in clusters.values() for k in ms}
    attributed: dict[str, list[str]] = defaultdict(list)
    for members in clusters.values():
        kind = Counter(pop.truth.get(m, "organic") for m in members).most_common(1)[0][0]
        attributed[kind] += members
    result = {}
    for kind in (*KINDS, "organic"):
        truth = {k for k, v in pop.truth.items() if v == kind}
        if not truth:
            continue
        claimed = attributed.get(kind, [])
        result[kind] = {
            "planted": len(truth),
            "flagged": len(truth & flagged),
            "precision": round(sum(pop.truth.get(m) == kind for m in claimed) / len(claimed), 4) if claimed else None,
            "recall": round(len(truth & flagged) / len(truth), 4),
        }
    return result


def run_network_stages(settings: Settings, run_key: str, policy: Policy | None = None,
                       on_stage=None) -> dict[str, Any]:
    """aggregate -> networks -> flag on a planted run, then mark it succeeded (so a later run matches
    its clusters). ``on_stage(name, result, seconds)`` is called after each stage."""
    from pipeline.stages import RunContext, run_all

    ctx = (RunContext(settings, run_key, policy.network, policy=policy) if policy is not None
           else RunContext(settings, run_key, settings.network))
    out = run_all(ctx, ("aggregate", "networks", "flag"), on_stage=on_stage, record=False)
    runs.finish_run(settings, run_key, {"planted": True})
    return out
