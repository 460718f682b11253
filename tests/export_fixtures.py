"""Realistic small exports in each platform's own layout and field names (../shared/FORMATS.md),
written at test time so that each test can also damage them."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

from PIL import Image

from pipeline.testing.crossplatform import IO_TWEET_COLUMNS, IO_USER_COLUMNS

HASH_A = "Fa0nMj9dZ+zhLS9CHiXYwCOtryR8b6m5wMR+UQI9lQ="
HASH_B = "lphZn35n7SSfX5a1vbWlh13Vwmy0YeJLbypJl5QBhFI="
BIG_ID = "1095348051581644800"  # an account over 5,000 followers keeps its real id and names


def image_bytes(color=(120, 30, 200), fmt="JPEG", size=(48, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, fmt)
    return buf.getvalue()


def io_users_rows() -> list[dict]:
    return [
        {"userid": HASH_A, "user_display_name": HASH_A, "user_screen_name": HASH_A, "user_reported_location": "",
         "user_profile_description": "Joven Cubano.\n\n#Revolucionario, \"siempre\"", "user_profile_url": "",
         "follower_count": "1759", "following_count": "2120", "account_creation_date": "2019-04-29",
         "account_language": "es"},
        {"userid": HASH_B, "user_display_name": HASH_B, "user_screen_name": HASH_B, "user_reported_location": "Cuba",
         "user_profile_description": "Hasta la victoria siempre", "user_profile_url": "https://t.co/abc",
         "follower_count": "4", "following_count": "19", "account_creation_date": "2018-12-31",
         "account_language": "en"},
        {"userid": BIG_ID, "user_display_name": "Noticias Habana", "user_screen_name": "noticiashabana",
         "user_reported_location": "La Habana", "user_profile_description": "", "user_profile_url": "",
         "follower_count": "12003", "following_count": "150", "account_creation_date": "2019-02-12",
         "account_language": "es"},
    ]


def write_io_export(root: Path, avatar_url: str | None = "https://pbs.example.com/profile_images/1/a.jpg") -> Path:
    """A takedown release folder: users CSV, tweets CSV, a media zip and an avatar manifest."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / "cuba_092020_users_csv_hashed.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, IO_USER_COLUMNS, quoting=csv.QUOTE_ALL)
        writer.writeheader()
        writer.writerows(io_users_rows())
    users = {u["userid"]: u for u in io_users_rows()}
    tweets = [
        (HASH_A, {"tweetid": "1300000000000000001", "tweet_text": "Viva #Cuba https://t.co/x\nsegunda línea",
                  "tweet_time": "2020-05-01 13:45", "hashtags": "[Cuba, CubaViva]", "urls": "[https://granma.cu/a]"}),
        (HASH_B, {"tweetid": "1300000000000000002", "tweet_text": "RT @x: Viva #Cuba", "tweet_time": "2020-05-01 13:46",
                  "is_retweet": "True", "retweet_userid": HASH_A, "retweet_tweetid": "1300000000000000001",
                  "hashtags": "[Cuba]", "urls": "[]"}),
        (BIG_ID, {"tweetid": "1300000000000000003", "tweet_text": "@a de acuerdo", "tweet_time": "2020-05-02 08:00",
                  "in_reply_to_userid": HASH_A, "in_reply_to_tweetid": "1300000000000000001",
                  "quoted_tweet_tweetid": "1299999999999999999", "is_retweet": "False", "hashtags": "[]",
                  "urls": "['https://a.example/x', 'https://b.example/y']"}),
    ]
    with (root / "cuba_092020_tweets_csv_hashed.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, IO_TWEET_COLUMNS, quoting=csv.QUOTE_ALL, restval="")
        writer.writeheader()
        for userid, tweet in tweets:
            writer.writerow({**users[userid], "tweet_language": "es", "is_retweet": "False", **tweet})
    with zipfile.ZipFile(root / "cuba_092020_profile_images.zip", "w") as zf:
        zf.writestr(f"profile_images/{HASH_A.replace('/', '_').replace('+', '-')}.jpg", image_bytes((200, 0, 0)))
        zf.writestr(f"profile_images/{HASH_B}.png", image_bytes((0, 200, 0), "PNG"))
        zf.writestr("README.txt", "media for the Cuba release")
    if avatar_url:
        (root / "avatars.csv").write_text(f"userid,avatar\n{BIG_ID},{avatar_url}\n", encoding="utf-8")
    return root


def _js(name: str, value) -> str:
    return f"window.YTD.{name}.part0 = " + json.dumps(value, indent=2, ensure_ascii=False)


def personal_archive_members() -> dict[str, bytes]:
    account = [{"account": {"email": "a@example.com", "createdVia": "web", "username": "maria_lopez84",
                            "accountId": "1234567890", "createdAt": "2011-06-23T13:04:14.000Z",
                            "accountDisplayName": "María López"}}]
    profile = [{"profile": {"description": {"bio": "Periodista.\nOpiniones propias.", "website": "https://t.co/w",
                                            "location": "Madrid"},
                            "avatarMediaUrl": "https://pbs.twimg.com/profile_images/1/AbCd_400x400.jpg",
                            "headerMediaUrl": "https://pbs.twimg.com/profile_banners/1/2"}}]
    tweets = [
        {"tweet": {"id_str": "1500000000000000001", "created_at": "Wed Jun 23 13:04:14 +0000 2021",
                   "full_text": "Leyendo #prensa https://t.co/q", "in_reply_to_status_id_str": None,
                   "entities": {"hashtags": [{"text": "Prensa", "indices": ["8", "15"]}],
                                "urls": [{"url": "https://t.co/q", "expanded_url": "https://elpais.com/x"}]}}},
        {"tweet": {"id_str": "1500000000000000002", "created_at": "Thu Jun 24 09:00:00 +0000 2021",
                   "full_text": "@otra gracias", "in_reply_to_status_id_str": "1499999999999999999",
                   "entities": {"hashtags": [], "urls": []}}},
    ]
    manifest = {"userInfo": {"accountId": "1234567890", "userName": "maria_lopez84", "displayName": "María López"}}
    return {
        "data/account.js": _js("account", account).encode(),
        "data/profile.js": _js("profile", profile).encode(),
        "data/tweets.js": _js("tweets", tweets).encode(),
        "data/follower.js": _js("follower", [{"follower": {"accountId": str(i)}} for i in range(3)]).encode(),
        "data/following.js": _js("following", [{"following": {"accountId": "9"}}]).encode(),
        "data/manifest.js": ("window.__THAR_CONFIG = " + json.dumps(manifest)).encode(),
        "data/profile_media/1234567890-AbCd_400x400.jpg": image_bytes((10, 90, 160)),
    }


def write_personal_archive(path: Path, extra: dict[str, bytes] | None = None) -> Path:
    """The archive as X delivers it: one zip."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in {**personal_archive_members(), **(extra or {})}.items():
            zf.writestr(name, data)
    return path


def mastodon_accounts() -> list[dict]:
    return [
        {"id": "109382", "username": "ana", "acct": "ana", "display_name": "Ana :verified:", "locked": False,
         "bot": False, "group": False, "created_at": "2022-11-07T00:00:00.000Z", "last_status_at": "2024-01-02",
         "followers_count": 321, "following_count": 12, "statuses_count": 877,
         "note": "<p>Investigadora &amp; docente.</p><p>Línea 2<br>línea 3</p>",
         "url": "https://mastodon.social/@ana",
         "avatar": "https://files.mastodon.social/accounts/avatars/109/382/original/anim.gif",
         "avatar_static": "https://files.mastodon.social/accounts/avatars/109/382/static/still.png",
         "header": "", "header_static": "", "fields": [{"name": "web", "value": "<a href=\"x\">x</a>"}],
         "moved": None, "suspended": False, "limited": False},
        {"id": "5", "username": "bob", "acct": "bob@fosstodon.org", "display_name": "", "locked": False,
         "bot": True, "created_at": "2023-01-01T12:00:00Z", "followers_count": 0, "following_count": 0,
         "statuses_count": 1, "note": "", "url": "https://fosstodon.org/@bob",
         "avatar": "https://mastodon.social/avatars/original/missing.png",
         "avatar_static": "https://mastodon.social/avatars/original/missing.png", "fields": []},
    ]


BSKY_DID_A = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
BSKY_DID_B = "did:plc:z72i7hdynmk6r22z27h6tvur"
BSKY_CID = "bafkreihq6ezp5vnf7wlfx4vqpaqb36hz5a4s6mpm3ly4g3tc4fl2kk3g7a"


def write_bluesky_export(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    records = {"records": [
        {"uri": f"at://{BSKY_DID_A}/app.bsky.actor.profile/self", "cid": "bafyreiabc",
         "value": {"$type": "app.bsky.actor.profile", "displayName": "Ana 🌊", "description": "Hola.\nSegunda línea",
                   "avatar": {"$type": "blob", "ref": {"$link": BSKY_CID}, "mimeType": "image/jpeg", "size": 900},
                   "createdAt": "2023-04-05T10:11:12.000Z"}},
        {"uri": f"at://{BSKY_DID_B}/app.bsky.actor.profile/self", "cid": "bafyreidef",
         "value": {"$type": "app.bsky.actor.profile", "displayName": "Bob",
                   "avatar": {"$type": "blob", "ref": {"$link": "bafkreiaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"},
                              "mimeType": "image/png", "size": 1200}}},
    ]}
    (root / "profiles.json").write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    (root / "blobs").mkdir(exist_ok=True)
    (root / "blobs" / BSKY_CID).write_bytes(image_bytes((5, 5, 250)))
    return root


def reddit_about(name: str, id_: str | None, **data) -> dict:
    body = {"name": name, "is_suspended": id_ is None}
    if id_ is not None:
        body.update({"id": id_, "created_utc": 1325741702.0, "link_karma": 10, "comment_karma": 4, "verified": True,
                     "has_verified_email": False,
                     "icon_img": "https://styles.redditmedia.com/t5_abc/styles/profileIcon_x.png?width=256&amp;s=9f2",
                     "snoovatar_img": "",
                     "subreddit": {"title": f"{name} things", "public_description": "I post maps.",
                                   "subscribers": 42.0}})
    body.update(data)
    return {"kind": "t2", "data": body}


def write_reddit_export(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for about in (reddit_about("spez", "1w72"), reddit_about("mapmaker", "abc12"), reddit_about("gone_user", None)):
        folder = root / about["data"]["name"]
        folder.mkdir()
        (folder / "about.json").write_text(json.dumps(about), encoding="utf-8")
    return root


# --- Bluesky: profile views as the API wraps them, and CAR repository exports -----------------------

BSKY_AVATAR_URL = f"https://cdn.bsky.app/img/avatar/plain/{BSKY_DID_A}/{BSKY_CID}@jpeg"


def bluesky_views() -> dict[str, dict]:
    """getProfiles, getFollowers (with its subject) and a describeRepo response, as the API returns them."""
    ana = {"did": BSKY_DID_A, "handle": "ana.bsky.social", "displayName": "Ana", "avatar": BSKY_AVATAR_URL,
           "followersCount": 120, "followsCount": 80, "postsCount": 455, "createdAt": "2023-04-05T10:11:12.000Z",
           "description": "Hola", "indexedAt": "2024-01-01T00:00:00Z", "labels": []}
    bob = {"did": BSKY_DID_B, "handle": "bob.test", "displayName": "Bob", "labels": [],
           "createdAt": "2024-02-02T00:00:00Z"}
    return {
        "getProfiles.json": {"profiles": [ana]},
        "getFollowers.json": {"subject": ana, "followers": [bob], "cursor": "x"},
        "describeRepo.json": {"handle": "ana.bsky.social", "did": BSKY_DID_A, "didDoc": {"id": BSKY_DID_A},
                              "collections": ["app.bsky.feed.post"], "handleIsCorrect": True},
    }


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def car_cid(data: bytes) -> bytes:
    """A CIDv1 (DAG-CBOR, sha2-256) as the binary link DAG-CBOR carries."""
    import hashlib

    return bytes([1, 0x71, 0x12, 0x20]) + hashlib.sha256(data).digest()


def car_bytes(did: str, records: dict[str, dict], rev: str | None = "3k67up3j7hf2x",
              extra_blocks: tuple[bytes, ...] = ()) -> bytes:
    """A repository CAR as getRepo writes it: header, commit, the Merkle search tree's nodes, the records."""
    import io

    out = io.BytesIO()
    write_car(out, did, sorted(records.items()), rev)
    for block in extra_blocks:
        out.write(varint(len(block)) + block)
    return out.getvalue()


def write_car(out, did: str, records, rev: str | None = "3k67up3j7hf2x", fanout: int = 32) -> int:
    """Stream a CAR of (key, record) pairs, keys in sorted order, to a binary file; returns the record count.

    The tree is a search tree of nodes of at most ``fanout`` entries (``l`` the subtree before the
    first entry, each entry's ``t`` the subtree after it), as the reader walks it; keys are written
    whole (prefix length 0). Records are written as they come; only the keys and CIDs are kept.
    """
    import libipld

    def block(data: bytes) -> None:
        cid = car_cid(data)
        body.write(varint(len(cid) + len(data)) + cid + data)

    def tree(entries: list[tuple[bytes, bytes]]) -> bytes | None:
        if not entries:
            return None
        if len(entries) <= fanout:
            node = {"e": [{"k": k, "p": 0, "t": None, "v": v} for k, v in entries], "l": None}
        else:
            step = -(-len(entries) // fanout)
            seps = list(range(step - 1, len(entries), step))[: fanout]
            node = {"l": tree(entries[: seps[0]]), "e": [
                {"k": entries[i][0], "p": 0, "v": entries[i][1],
                 "t": tree(entries[i + 1: seps[j + 1] if j + 1 < len(seps) else len(entries)])}
                for j, i in enumerate(seps)]}
        data = libipld.encode_dag_cbor(node)
        block(data)
        return car_cid(data)

    import tempfile

    with tempfile.TemporaryFile() as body:
        entries = []
        for key, record in records:
            data = libipld.encode_dag_cbor(record)
            block(data)
            entries.append((key.encode(), car_cid(data)))
        root = tree(entries) or car_cid(libipld.encode_dag_cbor({"e": [], "l": None}))
        commit_body = {"did": did, "data": root, "prev": None, "sig": b"\x00" * 64, "version": 3}
        if rev:
            commit_body["rev"] = rev
        commit = libipld.encode_dag_cbor(commit_body)
        header = libipld.encode_dag_cbor({"roots": [car_cid(commit)], "version": 1})
        out.write(varint(len(header)) + header)
        out.write(varint(len(car_cid(commit)) + len(commit)) + car_cid(commit) + commit)
        if not entries:
            empty = libipld.encode_dag_cbor({"e": [], "l": None})
            out.write(varint(len(car_cid(empty)) + len(empty)) + car_cid(empty) + empty)
        body.seek(0)
        while chunk := body.read(1 << 20):
            out.write(chunk)
    return len(entries)


def bluesky_car_records(did: str, other: str = BSKY_DID_B) -> dict[str, dict]:
    return {
        "app.bsky.actor.profile/self": {"$type": "app.bsky.actor.profile", "displayName": "Ana",
                                        "avatar": {"$type": "blob", "mimeType": "image/jpeg", "size": 900,
                                                   "ref": libipld_cid(BSKY_CID)}},
        "app.bsky.feed.post/3kaaaaaaaaa22": {"$type": "app.bsky.feed.post", "text": "hola #Mar https://a.example/x",
                                             "createdAt": "2024-03-01T10:00:00.000Z", "langs": ["es"],
                                             "facets": [{"index": {"byteStart": 5, "byteEnd": 9},
                                                         "features": [{"$type": "app.bsky.richtext.facet#tag", "tag": "Mar"}]},
                                                        {"index": {"byteStart": 10, "byteEnd": 30},
                                                         "features": [{"$type": "app.bsky.richtext.facet#link",
                                                                       "uri": "https://a.example/x"}]}]},
        "app.bsky.feed.post/3kaaaaaaaab22": {"$type": "app.bsky.feed.post", "text": "de acuerdo",
                                             "createdAt": "2024-03-02T10:00:00.000Z",
                                             "reply": {"root": {"uri": f"at://{other}/app.bsky.feed.post/3kzz", "cid": "x"},
                                                       "parent": {"uri": f"at://{other}/app.bsky.feed.post/3kzz", "cid": "x"}}},
        "app.bsky.feed.repost/3kaaaaaaaac22": {"$type": "app.bsky.feed.repost", "createdAt": "2024-03-03T10:00:00.000Z",
                                               "subject": {"uri": f"at://{other}/app.bsky.feed.post/3kzz", "cid": "x"}},
        "app.bsky.feed.like/3kaaaaaaaad22": {"$type": "app.bsky.feed.like", "createdAt": "2024-03-03T10:00:00.000Z",
                                             "subject": {"uri": f"at://{other}/app.bsky.feed.post/3kzz", "cid": "x"}},
    }


def libipld_cid(text: str) -> bytes:
    import libipld

    cid = libipld.decode_cid(text)
    return bytes([cid["version"], cid["codec"], cid["hash"]["code"], cid["hash"]["size"]]) + cid["hash"]["digest"]


def write_bluesky_car(path: Path, did: str = BSKY_DID_A) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(car_bytes(did, bluesky_car_records(did)))
    return path


# --- Mastodon account archive ---------------------------------------------------------------------------
# The shape Mastodon's BackupService writes (one-line JSON, Oj.dump): actor.json, outbox.json (an
# OrderedCollection whose totalItems, the account's statuses_count, comes before orderedItems), likes.json,
# bookmarks.json, avatar and header files, and media under media_attachments/files/.

MASTO_ACTOR = "https://mastodon.social/users/ana"
MASTO_BOOSTED = "https://fosstodon.org/users/bob/statuses/111"
MASTO_PUBLIC = "https://www.w3.org/ns/activitystreams#Public"
MASTO_CONTEXT = ["https://www.w3.org/ns/activitystreams", {
    "ostatus": "http://ostatus.org#", "atomUri": "ostatus:atomUri", "inReplyToAtomUri": "ostatus:inReplyToAtomUri",
    "conversation": "ostatus:conversation", "sensitive": "as:sensitive", "toot": "http://joinmastodon.org/ns#",
    "votersCount": "toot:votersCount", "blurhash": "toot:blurhash",
    "focalPoint": {"@container": "@list", "@id": "toot:focalPoint"}, "Hashtag": "as:Hashtag"}]
MASTO_ACTOR_CONTEXT = ["https://www.w3.org/ns/activitystreams", "https://w3id.org/security/v1", {
    "manuallyApprovesFollowers": "as:manuallyApprovesFollowers", "toot": "http://joinmastodon.org/ns#",
    "featured": {"@id": "toot:featured", "@type": "@id"}, "featuredTags": {"@id": "toot:featuredTags", "@type": "@id"},
    "alsoKnownAs": {"@id": "as:alsoKnownAs", "@type": "@id"}, "schema": "http://schema.org#",
    "PropertyValue": "schema:PropertyValue", "value": "schema:value", "discoverable": "toot:discoverable",
    "indexable": "toot:indexable", "memorial": "toot:memorial", "focalPoint": {"@container": "@list",
                                                                                "@id": "toot:focalPoint"}}]


def mastodon_actor(actor: str = MASTO_ACTOR, avatar: str = "avatar.png") -> dict:
    """actor.json: the account's ActivityPub Person, its icon and image renamed to the archive's files."""
    user = actor.rsplit("/", 1)[-1]
    return {
        "@context": MASTO_ACTOR_CONTEXT, "id": actor, "type": "Person", "following": f"{actor}/following",
        "followers": f"{actor}/followers", "inbox": f"{actor}/inbox", "outbox": "outbox.json",
        "featured": f"{actor}/collections/featured", "featuredTags": f"{actor}/collections/tags",
        "preferredUsername": user, "name": "Ana", "summary": "<p>Investigadora</p>",
        "url": actor.replace("/users/", "/@"), "manuallyApprovesFollowers": False, "discoverable": True,
        "indexable": False, "published": "2019-03-01T00:00:00Z", "memorial": False, "devices": f"{actor}/collections/devices",
        "publicKey": {"id": f"{actor}#main-key", "owner": actor,
                      "publicKeyPem": "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA\n-----END PUBLIC KEY-----\n"},
        "tag": [], "attachment": [{"type": "PropertyValue", "name": "Web",
                                   "value": '<a href="https://ana.example" rel="me nofollow noopener">ana.example</a>'}],
        "endpoints": {"sharedInbox": actor.split("/users/")[0] + "/inbox"},
        "icon": {"type": "Image", "mediaType": "image/png", "url": avatar},
        "image": {"type": "Image", "mediaType": "image/jpeg", "url": "header.jpeg"},
        "likes": "likes.json", "bookmarks": "bookmarks.json",
    }


def mastodon_note(actor: str, n: int, content: str, published: str = "2024-05-01T10:00:00Z", *,
                  in_reply_to: str | None = None, hashtags: tuple[str, ...] = (), media: bool = False,
                  kind: str = "Note") -> dict:
    """A Create activity of a status, with every field Mastodon writes (cc, tag, attachment, contentMap, replies
    with its first CollectionPage, atomUri, conversation, sensitive, url, attributedTo, to)."""
    status = f"{actor}/statuses/{n}"
    host = actor.split("/users/")[0]
    tags = [{"type": "Hashtag", "href": f"{host}/tags/{h.lower()}", "name": f"#{h}"} for h in hashtags]
    attachment = [{"type": "Document", "mediaType": "image/png",
                   "url": f"media_attachments/files/112/{n:03d}/000/original/{n:016x}.png", "name": "a chart",
                   "blurhash": "UBL_:rOpGG-oBUNG,qRj2so|=eE1w^n4S5NH", "focalPoint": [0.0, 0.0],
                   "width": 48, "height": 48}] if media else []
    return {
        "id": f"{status}/activity", "type": "Create", "actor": actor, "published": published,
        "to": [MASTO_PUBLIC], "cc": [f"{actor}/followers"],
        "object": {
            "id": status, "type": kind, "summary": None, "inReplyTo": in_reply_to, "published": published,
            "url": f"{actor.replace('/users/', '/@')}/{n}", "attributedTo": actor, "to": [MASTO_PUBLIC],
            "cc": [f"{actor}/followers"], "sensitive": False, "atomUri": status, "inReplyToAtomUri": in_reply_to,
            "conversation": f"tag:{host.split('//')[1]},2024-05-01:objectId={n}:objectType=Conversation",
            "content": content, "contentMap": {"es": content}, "attachment": attachment, "tag": tags,
            "replies": {"id": f"{status}/replies", "type": "Collection",
                        "first": {"type": "CollectionPage", "next": f"{status}/replies?only_other_accounts=true&page=true",
                                  "partOf": f"{status}/replies", "items": []}},
        },
    }


def mastodon_announce(actor: str, n: int, target: str, published: str = "2024-05-03T10:00:00Z") -> dict:
    """A boost: Mastodon writes its object as the boosted status's URI."""
    return {"id": f"{actor}/statuses/{n}/activity", "type": "Announce", "actor": actor, "published": published,
            "to": [MASTO_PUBLIC], "cc": [target.rsplit("/statuses/", 1)[0], f"{actor}/followers"], "object": target}


def mastodon_activities(actor: str = MASTO_ACTOR) -> list[dict]:
    """Two statuses (one a reply), a boost, a Like (not Mastodon's, other servers' outboxes carry them) and
    a Create whose object has no id (a damaged record)."""
    damaged = mastodon_note(actor, 4, "<p>no id</p>", "2024-05-04T10:00:00Z")
    del damaged["object"]["id"]
    return [
        mastodon_note(actor, 1, '<p>Mirad <a href="https://news.example/a" rel="nofollow">news.example/a</a> '
                                '<a href="https://mastodon.social/tags/clima" class="mention hashtag" rel="tag">'
                                '#<span>clima</span></a></p>', hashtags=("Clima",), media=True),
        mastodon_note(actor, 2, "<p>de acuerdo</p>", "2024-05-02T10:00:00Z", in_reply_to=MASTO_BOOSTED),
        mastodon_announce(actor, 3, MASTO_BOOSTED),
        {"id": f"{actor}#likes/1", "type": "Like", "actor": actor, "object": MASTO_BOOSTED},
        damaged,
    ]


def mastodon_collection(name: str, items: list, total: int | None = None, context: object = None) -> dict:
    return {"@context": context or "https://www.w3.org/ns/activitystreams", "id": name, "type": "OrderedCollection",
            "totalItems": len(items) if total is None else total, "orderedItems": items}


def _masto_json(value: object, pretty: bool) -> bytes:
    return (json.dumps(value, indent=2, ensure_ascii=False) if pretty else
            json.dumps(value, separators=(",", ":"), ensure_ascii=False)).encode()


def mastodon_archive_members(actor: str = MASTO_ACTOR, avatar: str = "avatar.png", activities: list | None = None,
                             pretty: bool = False, total: int | None = None,
                             likes: list | None = None, bookmarks: list | None = None) -> dict[str, bytes]:
    """The archive's files by name; one-line JSON as Mastodon writes it, or pretty-printed."""
    items = mastodon_activities(actor) if activities is None else activities
    media = {a["url"] for item in items if isinstance(item, dict) and isinstance(item.get("object"), dict)
             for a in item["object"].get("attachment") or []}
    return {
        "actor.json": _masto_json(mastodon_actor(actor, avatar), pretty),
        "outbox.json": _masto_json(mastodon_collection("outbox.json", items, total, MASTO_CONTEXT), pretty),
        "likes.json": _masto_json(mastodon_collection("likes.json", [MASTO_BOOSTED] if likes is None else likes), pretty),
        "bookmarks.json": _masto_json(mastodon_collection(
            "bookmarks.json", [f"{MASTO_BOOSTED}0"] if bookmarks is None else bookmarks), pretty),
        avatar: image_bytes((30, 160, 90), "PNG"),
        "header.jpeg": image_bytes((200, 200, 200), "JPEG"),
        **{name: image_bytes((90, 90, 160), "PNG") for name in sorted(media)},
    }


def write_members(path: Path, members: dict[str, bytes], as_zip: bool) -> Path:
    """The members as a zip at ``path``, or as files under the folder ``path``."""
    if as_zip:
        path.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in members.items():
                zf.writestr(name, data)
        return path
    for name, data in members.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(data)
    return path


def write_mastodon_archive(path: Path, as_zip: bool = True, **members) -> Path:
    """The archive Mastodon's "Request your archive" delivers (a zip), or its unpacked folder;
    ``members`` as `mastodon_archive_members` takes them (activities, pretty, total, ...)."""
    return write_members(path, mastodon_archive_members(**members), as_zip)


# --- Reddit history listings ------------------------------------------------------------------------------

def reddit_listing(kind: str, children: list[dict]) -> dict:
    return {"kind": "Listing", "data": {"after": None, "dist": len(children), "modhash": "",
                                        "children": [{"kind": kind, "data": c} for c in children]}}


def write_reddit_history(root: Path) -> Path:
    """``/user/mapmaker/submitted.json`` and ``/comments.json`` beside the account's ``about.json``."""
    folder = root / "mapmaker"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "about.json").write_text(json.dumps(reddit_about(
        "mapmaker", "abc12", icon_img="https://www.redditstatic.com/avatars/defaults/v2/avatar_default_3.png")))
    submitted = reddit_listing("t3", [
        {"id": "p1", "name": "t3_p1", "author": "mapmaker", "author_fullname": "t2_abc12", "created_utc": 1700000000.0,
         "title": "A map", "selftext": "", "is_self": False, "url": "https://i.example/map.png?a=1&amp;b=2",
         "subreddit": "MapPorn"},
        {"id": "p2", "name": "t3_p2", "author": "mapmaker", "author_fullname": "t2_abc12", "created_utc": 1700000100.0,
         "title": "Crossposted", "selftext": "", "is_self": False, "url": "/r/maps/comments/zz/",
         "crosspost_parent": "t3_zz9", "subreddit": "maps"},
        {"id": "p3", "name": "t3_p3", "author": "[deleted]", "created_utc": 1700000200.0, "title": "gone"},
    ])
    comments = reddit_listing("t1", [
        {"id": "c1", "name": "t1_c1", "author": "mapmaker", "author_fullname": "t2_abc12", "created_utc": 1700000300,
         "body": "Nice one", "parent_id": "t3_zz9", "link_id": "t3_zz9", "subreddit": "maps"},
        {"id": "c2", "name": "t1_c2", "author": "lurker", "author_fullname": "t2_lurk1", "created_utc": 1700000400,
         "body": "agreed", "parent_id": "t1_c1", "link_id": "t3_zz9", "subreddit": "maps"},
    ])
    (folder / "submitted.json").write_text(json.dumps(submitted))
    (folder / "comments.json").write_text(json.dumps(comments))
    return root


def write_mastodon_archive_stream(root: Path, activities, actor: str = MASTO_ACTOR) -> int:
    """An unpacked Mastodon archive whose outbox streams ``activities`` to disk (for large outboxes). Its
    totalItems comes after the array, as the count is known only then (valid JSON: keys have no order)."""
    members = mastodon_archive_members(actor)
    root.mkdir(parents=True, exist_ok=True)
    for name in ("actor.json", "avatar.png"):
        (root / name).write_bytes(members[name])
    count = 0
    with (root / "outbox.json").open("w", encoding="utf-8") as fh:
        head = {k: v for k, v in mastodon_collection("outbox.json", [], 0, MASTO_CONTEXT).items()
                if k not in ("totalItems", "orderedItems")}
        fh.write(json.dumps(head)[:-1] + ', "orderedItems": [\n')
        for activity in activities:
            fh.write((",\n" if count else "") + json.dumps(activity))
            count += 1
        fh.write(f'\n], "totalItems": {count}}}\n')
    return count
