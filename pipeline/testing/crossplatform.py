"""A planted population spread over three exports of three formats, written as real export files, for one
investigation across platforms (issue 23, item 4): an X IO release (users and tweets CSVs, a media zip), Mastodon
API accounts (a JSON array, avatars downloaded beside it) and Bluesky profiles (``listRecords`` pages of
profile and post records with their handles, avatar blobs named by CID). `profile-audit audit X M B` reads
them into one run; `evaluate` scores the run's flags against the truth, per kind and per platform.

Kinds of account (``CrossPlatformPopulation.truth``):
- ``organic``: varied handles, bios and creation dates; each its own avatar (a textured image); X and Bluesky
  accounts post links from a shared pool of popular URLs at random times. Among them:
  - cross-posters: one person on two or three platforms with one distinctive handle (``lena_fischer88``,
    ``lena-fischer88.bsky.social``, ``lena_fischer88@mastodon.social``) and one photo: joined across
    platforms, one identity, and never flagged as a network;
  - common first names: ``maria`` on X, ``maria@mastodon.social`` and ``maria@fosstodon.org``,
    ``maria.bsky.social`` (and ``maria12`` on two platforms), different people: never joined.
- ``xp_colink``: an operation of 12 personas, each on X, Mastodon and Bluesky with one handle stem
  (``first_last`` + 4 digits) and one generated face (the same file); on X and Bluesky its personas post the
  operation's 8 URLs within 20 seconds of each other. Mastodon API accounts carry no posts: those accounts are
  reached only by the cross-platform edges (stem, avatar).
- ``xp_mirror``: an operation of 10 personas on the three platforms with one handle stem each, one bio
  for the whole operation and (on X) one profile link, the face re-encoded per platform (resized, JPEG), so
  the avatars are confirmed near-duplicates, not identical files.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import zipfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pipeline.ingest.readers.twitter_io import USER_COLUMNS

IO_USER_COLUMNS = list(USER_COLUMNS)  # a users file's columns, in a release's order (the reader's definition)
IO_TWEET_COLUMNS = ["tweetid", *IO_USER_COLUMNS, "tweet_language", "tweet_text", "tweet_time", "tweet_client_name",
                    "in_reply_to_userid", "in_reply_to_tweetid", "quoted_tweet_tweetid", "is_retweet",
                    "retweet_userid", "retweet_tweetid", "latitude", "longitude", "quote_count", "reply_count",
                    "like_count", "retweet_count", "hashtags", "urls", "user_mentions", "poll_choices"]
PLATFORMS = ("twitter", "mastodon", "bluesky")
FIRST = ["lena", "omar", "sofia", "jonas", "amira", "lucas", "chloe", "mateo", "nadia", "felix", "irene", "tomas",
         "yara", "pablo", "ines", "marta", "hugo", "elena", "dario", "noemi", "kofi", "aiko", "ravi", "sven"]
LAST = ["fischer", "haddad", "rossi", "berg", "mansour", "silva", "martin", "lopez", "petrova", "weber", "costa",
        "novak", "sato", "kumar", "larsen", "moreau", "ortega", "brandt", "dupont", "keller"]
COMMON = ["maria", "john", "anna", "david", "laura", "alex"]
INSTANCES = ["mastodon.social", "fosstodon.org", "mstdn.social", "chaos.social"]
WORDS = ["coffee", "maps", "cycling", "jazz", "books", "gardening", "science", "football", "photos", "cooking",
         "travel", "music", "teacher", "nurse", "engineer", "student", "dad", "mum", "runner", "painter"]
START = datetime(2024, 3, 1, tzinfo=UTC)
OPENED = {"twitter": datetime(2009, 1, 1, tzinfo=UTC), "mastodon": datetime(2017, 1, 1, tzinfo=UTC),
          "bluesky": datetime(2023, 3, 1, tzinfo=UTC)}  # sign-ups on each platform start here in the population


def created_on(platform: str, rng: np.random.Generator) -> datetime:
    """A sign-up day on the platform, between its opening (``OPENED``) and the posts' month."""
    days = (START - OPENED[platform]).days
    return OPENED[platform] + timedelta(days=int(rng.integers(0, days)))


@dataclass
class Persona:
    """One account to write: its platform, handle, profile, avatar bytes and posts."""

    kind: str
    identity: str  # one person or one operation persona; the same across its platforms
    platform: str
    handle: str
    bio: str
    created: datetime
    avatar: bytes | None
    url: str = ""
    posts: list[tuple[datetime, str, str]] = field(default_factory=list)  # (time, text, url)
    common_name: bool = False

    @property
    def account_id(self) -> str:
        """The account id the reader keys it by: the IO userid, the Mastodon address, the Bluesky DID."""
        digest = hashlib.sha256(f"{self.platform}|{self.handle}".encode()).hexdigest()
        if self.platform == "twitter":
            return str(10**15 + int(digest[:12], 16) % 10**15)
        if self.platform == "mastodon":
            return self.handle.lower()
        return "did:plc:" + "".join("abcdefghijklmnopqrstuvwxyz234567"[int(c, 16) % 32] for c in digest[:24])

    @property
    def account_key(self) -> str:
        return f"{self.platform}:{self.account_id}"


@dataclass(frozen=True)
class CrossPlatformPopulation:
    exports: dict[str, Path]  # platform -> export folder
    truth: dict[str, str]  # account key -> kind
    identity: dict[str, str]  # account key -> identity
    common_names: frozenset[str]  # account keys of the common-first-name accounts


def face(rng: np.random.Generator, size: int = 160) -> bytes:
    """A textured picture (smooth colour fields plus mid-scale texture), distinct from every other one in
    pHash and dHash, and detailed enough for the image-ring test (``min_image_detail``)."""
    low = rng.integers(0, 256, (6, 6, 3)).astype(np.uint8)
    base = np.asarray(Image.fromarray(low).resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)
    grain = np.clip(rng.normal(128, 40, (32, 32)), 0, 255).astype(np.uint8)
    tex = np.asarray(Image.fromarray(grain).resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32) - 128
    buf = io.BytesIO()
    Image.fromarray(np.clip(base + tex[..., None], 0, 255).astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def reencoded(data: bytes, side: int = 128, quality: int = 88) -> bytes:
    """The picture resized and saved as JPEG: another file (sha256) of the same picture."""
    rgb = Image.open(io.BytesIO(data)).convert("RGB").resize((side, side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    rgb.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def platform_handle(platform: str, name: str, rng: np.random.Generator) -> str:
    """``name`` as each platform writes a handle: X as is, Mastodon ``name@instance``, Bluesky a domain
    (no underscores: hyphens)."""
    if platform == "mastodon":
        return f"{name}@{INSTANCES[int(rng.integers(len(INSTANCES)))]}"
    if platform == "bluesky":
        return f"{name.replace('_', '-')}.bsky.social"
    return name


def _organic_name(rng: np.random.Generator, i: int) -> str:
    first, last = FIRST[int(rng.integers(len(FIRST)))], LAST[int(rng.integers(len(LAST)))]
    style = int(rng.integers(4))
    return [f"{first}{last[0]}{i}", f"{first}.{last}{i}", f"{last}_{first[0]}{i}", f"{first}_{i}"][style]


def _organic_posts(rng: np.random.Generator, pool: list[str], n: int) -> list[tuple[datetime, str, str]]:
    out = []
    for _ in range(n):
        url = pool[min(int(rng.zipf(1.6)) - 1, len(pool) - 1)]
        at = START + timedelta(seconds=int(rng.integers(0, 30 * 86400)))
        out.append((at, f"worth reading {url}", url))
    return out


def build(organic: int = 400, seed: int = 0) -> list[Persona]:
    """Every account of the population (``organic`` per platform, plus the operations), deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    pool = [f"https://news{i % 40}.example.org/story/{i}" for i in range(300)]
    people: list[Persona] = []

    def bio() -> str:
        return " ".join(rng.choice(WORDS, size=3, replace=False)) + f" · {int(rng.integers(10, 99))}"

    for platform in PLATFORMS:  # organic background
        for i in range(organic):
            posts = _organic_posts(rng, pool, int(rng.integers(0, 5))) if platform != "mastodon" else []
            name = _organic_name(rng, i)
            people.append(Persona("organic", f"{platform}-org-{i}", platform, platform_handle(platform, name, rng),
                                  bio(), created_on(platform, rng), face(rng) if rng.random() < 0.9 else None, posts=posts))
    for i in range(organic // 10):  # cross-posters: one person, one handle and one photo on two or three platforms
        name = f"{FIRST[i % len(FIRST)]}_{LAST[(i * 7) % len(LAST)]}{10 + i}"  # unique: one person each
        photo, where = face(rng), PLATFORMS if i % 2 else PLATFORMS[:2]
        for platform in where:
            people.append(Persona("organic", f"xposter-{i}", platform, platform_handle(platform, name, rng), bio(),
                                  created_on(platform, rng), photo))
    for c, name in enumerate(COMMON):  # common first names, different people on each platform and instance
        for platform in PLATFORMS:
            copies = 2 if platform == "mastodon" else 1
            for k in range(copies):
                handle = f"{name}@{INSTANCES[k]}" if platform == "mastodon" else platform_handle(platform, name, rng)
                people.append(Persona("organic", f"common-{c}-{platform}-{k}", platform, handle, bio(), created_on(platform, rng),
                                      face(rng), common_name=True))
        for platform in PLATFORMS[:2]:  # a common name with a short number, on two platforms: too short to join
            people.append(Persona("organic", f"common12-{c}-{platform}", platform,
                                  platform_handle(platform, f"{name}12", rng), bio(), created_on(platform, rng), face(rng),
                                  common_name=True))
    people += _xp_colink(rng)
    people += _xp_mirror(rng)
    return people


def _stem_name(rng: np.random.Generator, op: int, k: int) -> str:
    return f"{FIRST[(op * 5 + k) % len(FIRST)]}_{LAST[(op * 3 + k * 7) % len(LAST)]}{int(rng.integers(1000, 10000))}"


def _xp_colink(rng: np.random.Generator, personas: int = 12, urls: int = 8) -> list[Persona]:
    targets = [f"https://truth-now.example.net/a/{i}" for i in range(urls)]
    times = [START + timedelta(seconds=int(rng.integers(0, 30 * 86400))) for _ in targets]
    out = []
    for k in range(personas):
        name, photo = _stem_name(rng, 1, k), face(rng)
        for platform in PLATFORMS:
            posts = [] if platform == "mastodon" else [
                (t + timedelta(seconds=int(rng.integers(0, 20))), f"Must read {u}", u) for t, u in zip(times, targets)]
            out.append(Persona("xp_colink", f"colink-{k}", platform, platform_handle(platform, name, rng),
                               " ".join(rng.choice(WORDS, size=3, replace=False)),
                               created_on(platform, rng),
                               photo, posts=posts))
    return out


def _xp_mirror(rng: np.random.Generator, personas: int = 10) -> list[Persona]:
    out = []
    shared_bio = "Independent voices for a free homeland. Share the truth!"
    for k in range(personas):
        name, photo = _stem_name(rng, 2, k), face(rng)
        for platform in PLATFORMS:
            avatar = photo if platform == "twitter" else reencoded(photo, side=128 if platform == "mastodon" else 144)
            out.append(Persona("xp_mirror", f"mirror-{k}", platform, platform_handle(platform, name, rng), shared_bio,
                               created_on(platform, rng), avatar,
                               url="https://free-homeland.example.com" if platform == "twitter" else ""))
    return out


def _ext(data: bytes) -> str:
    return "png" if data[:4] == b"\x89PNG" else "jpg"


# --- writing the three exports in their platforms' formats ------------------------------------------------


def _write_io(root: Path, people: list[Persona]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    rows = {}
    for p in people:
        rows[p.account_id] = {"userid": p.account_id, "user_display_name": p.handle.replace("_", " ").title(),
                              "user_screen_name": p.handle, "user_reported_location": "",
                              "user_profile_description": p.bio, "user_profile_url": p.url,
                              "follower_count": "120", "following_count": "180",
                              "account_creation_date": p.created.strftime("%Y-%m-%d"), "account_language": "en"}
    with (root / "xplat_092024_users_csv_hashed.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, IO_USER_COLUMNS, quoting=csv.QUOTE_ALL)
        writer.writeheader()
        writer.writerows(rows[p.account_id] for p in people)
    n = 0
    with (root / "xplat_092024_tweets_csv_hashed.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, IO_TWEET_COLUMNS, quoting=csv.QUOTE_ALL, restval="")
        writer.writeheader()
        for p in people:
            for at, text, url in sorted(p.posts):
                n += 1
                writer.writerow({**rows[p.account_id], "tweetid": str(1_700_000_000_000_000_000 + n),
                                 "tweet_language": "en", "tweet_text": text, "tweet_time": at.strftime("%Y-%m-%d %H:%M"),
                                 "is_retweet": "False", "hashtags": "[]", "urls": f"[{url}]"})
    with zipfile.ZipFile(root / "xplat_092024_profile_images.zip", "w") as zf:
        for p in people:
            if p.avatar is not None:
                zf.writestr(f"profile_images/{p.account_id}.{_ext(p.avatar)}", p.avatar)


def _write_mastodon(root: Path, people: list[Persona]) -> None:
    (root / "avatars").mkdir(parents=True, exist_ok=True)
    accounts = []
    for i, p in enumerate(people):
        user, instance = p.handle.split("@", 1)
        avatar = ""
        if p.avatar is not None:
            avatar = f"avatars/{i}.{_ext(p.avatar)}"
            (root / avatar).write_bytes(p.avatar)
        accounts.append({"id": str(100000 + i), "username": user, "acct": p.handle, "display_name": user.title(),
                         "locked": False, "bot": False, "created_at": p.created.strftime("%Y-%m-%dT00:00:00.000Z"),
                         "followers_count": 120, "following_count": 180, "statuses_count": 300,
                         "note": f"<p>{p.bio}</p>", "url": f"https://{instance}/@{user}",
                         "avatar": avatar or f"https://{instance}/avatars/original/missing.png",
                         "avatar_static": avatar or f"https://{instance}/avatars/original/missing.png",
                         "header": "", "header_static": "", "fields": []})
    (root / "accounts.json").write_text(json.dumps(accounts, ensure_ascii=False, indent=1), encoding="utf-8")


def blob_cid(data: bytes) -> str:
    """The CIDv1 (raw codec, sha2-256) of a blob, in base32, as Bluesky names avatar blobs."""
    import base64

    raw = bytes([0x01, 0x55, 0x12, 0x20]) + hashlib.sha256(data).digest()
    return "b" + base64.b32encode(raw).decode().lower().rstrip("=")


def _write_bluesky(root: Path, people: list[Persona]) -> None:
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    records = []
    for p in people:
        did = p.account_id
        profile: dict[str, Any] = {"$type": "app.bsky.actor.profile", "displayName": p.handle.split(".")[0].title(),
                                   "description": p.bio, "createdAt": p.created.strftime("%Y-%m-%dT00:00:00.000Z")}
        if p.avatar is not None:
            cid = blob_cid(p.avatar)
            (root / "blobs" / f"{cid}.{_ext(p.avatar)}").write_bytes(p.avatar)
            profile["avatar"] = {"$type": "blob", "ref": {"$link": cid},
                                 "mimeType": f"image/{'png' if _ext(p.avatar) == 'png' else 'jpeg'}",
                                 "size": len(p.avatar)}
        records.append({"uri": f"at://{did}/app.bsky.actor.profile/self", "cid": "bafyrei" + did[8:30],
                        "handle": p.handle, "value": profile})
        for n, (at, text, url) in enumerate(sorted(p.posts)):
            records.append({"uri": f"at://{did}/app.bsky.feed.post/3k{n:011d}", "cid": "bafyrei" + did[8:30],
                            "value": {"$type": "app.bsky.feed.post", "text": text,
                                      "createdAt": at.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                                      "embed": {"$type": "app.bsky.embed.external",
                                                "external": {"uri": url, "title": "", "description": ""}}}})
    (root / "records.json").write_text(json.dumps({"records": records}, ensure_ascii=False), encoding="utf-8")


def write_population(root: Path, organic: int = 400, seed: int = 0) -> CrossPlatformPopulation:
    """Write the three exports under ``root`` (``x_io``, ``mastodon``, ``bluesky``) and return the truth."""
    people = build(organic, seed)
    by_platform: dict[str, list[Persona]] = defaultdict(list)
    for p in people:
        by_platform[p.platform].append(p)
    exports = {"twitter": root / "x_io", "mastodon": root / "mastodon", "bluesky": root / "bluesky"}
    _write_io(exports["twitter"], by_platform["twitter"])
    _write_mastodon(exports["mastodon"], by_platform["mastodon"])
    _write_bluesky(exports["bluesky"], by_platform["bluesky"])
    return CrossPlatformPopulation(exports, {p.account_key: p.kind for p in people},
                                   {p.account_key: p.identity for p in people},
                                   frozenset(p.account_key for p in people if p.common_name))


def evaluate(pop: CrossPlatformPopulation, flags: list[dict[str, Any]], edges: list[dict[str, Any]]
             ) -> dict[str, Any]:
    """Per-kind recall and precision of the flags (an account is found when a flag holds it; a kind's precision is
    its share of the members of the flags that hold any of it), recall per platform, and the false joins of the
    cross-platform edges: pairs of different identities joined by a same-stem edge, and the edges (by type) that
    touch a common-first-name account."""
    flagged: dict[str, int] = {}
    for i, f in enumerate(flags):
        for m in f["members"]:
            flagged[f"{m['platform']}:{m['account_id']}"] = i
    kinds = Counter(pop.truth.values())
    out: dict[str, Any] = {"kinds": {}}
    for kind in sorted(kinds):
        if kind == "organic":
            continue
        found = [k for k, v in pop.truth.items() if v == kind and k in flagged]
        holding = {flagged[k] for k in found}
        members = [k for k, i in flagged.items() if i in holding]
        per_platform = {p: round(sum(1 for k in found if k.startswith(p + ":"))
                                 / max(1, sum(1 for k, v in pop.truth.items() if v == kind and k.startswith(p + ":"))), 3)
                        for p in PLATFORMS}
        out["kinds"][kind] = {"accounts": kinds[kind], "recall": round(len(found) / kinds[kind], 3),
                              "precision": round(sum(pop.truth.get(k) == kind for k in members) / max(1, len(members)), 3),
                              "recall_by_platform": per_platform}
    planted = [k for k in flagged if pop.truth.get(k, "organic") != "organic"]
    total_planted = sum(v for k, v in kinds.items() if k != "organic")
    out["recall"] = round(len(planted) / max(1, total_planted), 3)
    out["precision"] = round(len(planted) / max(1, len(flagged)), 3)
    out["organic_flagged"] = len(flagged) - len(planted)
    stem = [e for e in edges if e["edge_type"] == "same_handle_stem"]
    out["stem_edges"] = len(stem)
    out["stem_false_joins"] = sum(pop.identity.get(e["a_key"]) != pop.identity.get(e["b_key"]) for e in stem)
    out["common_name_edges"] = dict(sorted(Counter(
        e["edge_type"] for e in edges if e["a_key"] in pop.common_names or e["b_key"] in pop.common_names).items()))
    out["cross_platform_edges"] = dict(sorted(Counter(e["edge_type"] for e in edges
                                                      if e["a_key"].split(":")[0] != e["b_key"].split(":")[0]).items()))
    return out
