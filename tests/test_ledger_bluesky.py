"""Issue 24 for the Bluesky readers: every unit of a JSON response or a CAR repository is accounted for
(stored, quarantined with its reason, or ignored by reason), and a fault in one record, tree node or file
loses nothing else. Each fault is compared with the intact file it was made from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import SHARED_DATA
from export_fixtures import (
    BSKY_DID_A,
    BSKY_DID_B,
    bluesky_car_records,
    bluesky_views,
    car_cid,
    varint,
    write_bluesky_car,
    write_bluesky_export,
)
from ledger_checks import assert_ingest_balances, assert_reader_balances, read_counted

from pipeline.core.db import ensure_schema
from pipeline.core.runs import start_run
from pipeline.ingest.readers import READERS, AccountRecord, PostRecord, Rejection
from pipeline.ingest.readers.base import Ignored
from pipeline.ingest.readers.textio import MAX_JSON_RECORD_CHARS, TOO_DEEP

BLUESKY = SHARED_DATA / "exports" / "bluesky"
CARS = BLUESKY / "indigo-testdata-car"
CAR = READERS["bluesky_car"]
JSON = READERS["bluesky"]
DEEP_JSON = "[" * 10_000 + "]" * 10_000
DEEP_CBOR = b"\xa1\x61a" * 10_000 + b"\x01"  # {"a": {"a": ... 1}} nested 10,000 deep


def read(reader: Any, path: Path) -> tuple[list, list, list, list]:
    """Accounts, posts, rejections and ignored units; the reader's ledger checked to balance."""
    items, ledger = read_counted(reader, path)
    assert_reader_balances(ledger)
    return ([i for i in items if isinstance(i, AccountRecord)], [i for i in items if isinstance(i, PostRecord)],
            [i for i in items if isinstance(i, Rejection)], [i for i in items if isinstance(i, Ignored)])


def keys(records: list) -> set[tuple]:
    """What a record stands for, whatever its locator: an account's or a post's identity and content."""
    return {(type(r).__name__, r.account_id, getattr(r, "post_id", None), getattr(r, "text", None),
             getattr(r, "display_name", None)) for r in records}


def same_ignored(ignored: list, other: list) -> bool:
    return [(i.locator, i.reason) for i in ignored] == [(i.locator, i.reason) for i in other]


def ingest_balances(settings, run_key: str, path: Path) -> dict[str, dict]:
    ensure_schema(settings)
    start_run(settings, run_key, str(path), "auto")
    return assert_ingest_balances(settings, run_key, path)


# --- the real samples ---------------------------------------------------------------------------------

REAL = [BLUESKY / name for name in ("bskyr-actor-views", "bskyr-repo-records", "indigo-testdata-car")]
REAL_CARS = sorted(CARS.glob("*.car")) if CARS.exists() else []


@pytest.mark.parametrize("path", REAL + REAL_CARS, ids=lambda p: p.name)
def test_real_samples_balance_when_ingested(settings, path):
    if not path.exists():
        pytest.skip(f"the real sample is not at {path}")
    ledger = ingest_balances(settings, "2024-05-01", path)
    assert sum(row["stored"] for row in ledger.values()) > 0


@pytest.mark.skipif(not CARS.exists(), reason=f"the real sample is not at {CARS}")
def test_real_car_units_are_the_entries_of_the_current_tree():
    """seen = the tree's entries (an independent walk with libipld's whole-file decoder), + the missing node of
    the partial repo_slice.car; likes and follows are ignored by collection."""
    import libipld

    for car in REAL_CARS:
        header, blocks = libipld.decode_car(car.read_bytes())
        entries, missing, stack = [], 0, [blocks[header["roots"][0]]["data"]]
        while stack:
            link = stack.pop()
            if link is None:
                continue
            if link not in blocks:
                missing += 1
                continue
            key = b""
            stack.append(blocks[link]["l"])
            for entry in blocks[link]["e"]:
                key = key[:entry["p"]] + entry["k"]
                entries.append(key.decode().split("/")[0])
                stack.append(entry["t"])
        items, ledger = read_counted(CAR, car)
        assert_reader_balances(ledger)
        (row,) = ledger.files.values()
        assert row.seen == len(entries) + missing, car.name
        read_here = ("app.bsky.actor.profile", "app.bsky.feed.post", "app.bsky.feed.repost")
        assert dict(row.ignored) == {f"record {c}": entries.count(c) for c in set(entries) if c not in read_here}
        assert row.inferred == ("app.bsky.actor.profile" not in entries)


# --- the synthetic fixtures ---------------------------------------------------------------------------

def test_synthetic_fixtures_balance(settings, tmp_path):
    export = write_bluesky_export(tmp_path / "json")
    for name, body in bluesky_views().items():
        (export / name).write_text(json.dumps(body))
    accounts, posts, rejected, ignored = read(JSON, export)
    assert [i.reason for i in ignored] == ["describeRepo response (no account)"] and rejected == []
    assert ingest_balances(settings, "2024-05-01", export)["getFollowers.json"]["seen"] == 2  # subject + follower
    car = write_bluesky_car(tmp_path / "car" / "repo.car")
    accounts, posts, rejected, ignored = read(CAR, car)
    assert (len(accounts), len(posts), rejected) == (1, 3, [])
    assert [(i.locator, i.reason) for i in ignored] == [
        ("record app.bsky.feed.like/3kaaaaaaaad22", "record app.bsky.feed.like")]
    ledger = ingest_balances(settings, "2024-05-02", car)
    assert ledger["repo.car"]["seen"] == 5 and ledger["repo.car"]["stored"] == 4


# --- CAR files built here, node by node ---------------------------------------------------------------

def node_cid(name: str) -> bytes:
    """A tree node's CID, fixed by its name rather than its content (the reader does not hash blocks), so a
    test can make a tree that loops."""
    return car_cid(f"node {name}".encode())


def encode(value: Any) -> bytes:
    import libipld

    return value if isinstance(value, bytes) else libipld.encode_dag_cbor(value)


def default_nodes(records: dict[str, Any]) -> dict[str, dict]:
    """A three-node tree over the sorted keys: ``left`` (keys 0-1) under the root's 'l', the root (key 2),
    ``right`` (the rest) under the root entry's 't'."""
    keys = sorted(records)

    def entry(key: str) -> dict:
        return {"k": key.encode(), "p": 0, "t": None, "v": car_cid(encode(records[key]))}

    root = {"e": [entry(keys[2])], "l": node_cid("left")}
    root["e"][0]["t"] = node_cid("right")
    return {"left": {"e": [entry(k) for k in keys[:2]], "l": None}, "root": root,
            "right": {"e": [entry(k) for k in keys[3:]], "l": None}}


def repo_car(path: Path, records: dict[str, Any], nodes: dict[str, Any] | None = None, header: Any = None,
             tail: bytes = b"", root: bytes | None = None, did: str = BSKY_DID_A) -> Path:
    """Header, commit, tree nodes, then records (so a cut at the end cuts a record)."""
    nodes = default_nodes(records) if nodes is None else nodes
    commit = encode({"did": did, "data": node_cid("root") if root is None else root, "prev": None,
                     "rev": "3k67up3j7hf2x", "sig": b"\x00" * 64, "version": 3})
    blocks = [(car_cid(commit), commit), *((node_cid(name), encode(node)) for name, node in nodes.items()),
              *((car_cid(encode(r)), encode(r)) for r in records.values())]
    head = encode({"roots": [car_cid(commit)], "version": 1} if header is None else header)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(varint(len(head)) + head + b"".join(varint(len(c) + len(d)) + c + d for c, d in blocks) + tail)
    return path


def records_of(did: str = BSKY_DID_A) -> dict[str, Any]:
    """A profile, three posts, a repost and two ignored records (a like, a follow)."""
    records = bluesky_car_records(did)
    records["app.bsky.feed.post/3kaaaaaaaae22"] = {"$type": "app.bsky.feed.post", "text": "tercero",
                                                   "createdAt": "2024-03-04T10:00:00.000Z"}
    records["app.bsky.graph.follow/3kaaaaaaaaf22"] = {"$type": "app.bsky.graph.follow", "subject": BSKY_DID_B,
                                                      "createdAt": "2024-03-04T10:00:00.000Z"}
    return records


def test_built_car_is_read_whole(tmp_path):
    accounts, posts, rejected, ignored = read(CAR, repo_car(tmp_path / "repo.car", records_of()))
    assert rejected == [] and len(accounts) == 1 and not accounts[0].inferred and len(posts) == 4
    assert sorted(i.reason for i in ignored) == ["record app.bsky.feed.like", "record app.bsky.graph.follow"]


@pytest.mark.parametrize("header, reason", [
    ({"roots": 7, "version": 1}, "the CAR header's roots is an integer, not a list of CIDs"),
    ({"roots": ["bafyrei-not-a-cid"], "version": 1}, "the CAR header's roots hold something that is not a CID"),
    ({"roots": [b"\x01\x71"], "version": 1}, "the CAR header's roots hold something that is not a CID"),
    ([1, 2], "the CAR header is a list, not a map"),
    ({"roots": [], "version": 1}, "the CAR header's roots is an empty list, not a list of CIDs"),
    (DEEP_CBOR, "not a CAR file: the header is not DAG-CBOR"),
])
def test_broken_header_is_one_rejection_and_the_intact_car_beside_it_is_read(tmp_path, header, reason):
    intact = read(CAR, repo_car(tmp_path / "alone" / "a.car", records_of()))
    repo_car(tmp_path / "both" / "a.car", records_of())
    repo_car(tmp_path / "both" / "b.car", records_of(BSKY_DID_B), header=header, did=BSKY_DID_B)
    accounts, posts, rejected, ignored = read(CAR, tmp_path / "both")
    assert keys(accounts + posts) == keys(intact[0] + intact[1]) and same_ignored(ignored, intact[3])
    assert [(r.source_file, r.locator, r.reason[:len(reason) + 16]) for r in rejected] == [
        ("b.car", "file", f"unreadable CAR: {reason}")]


def test_commit_nested_10000_deep_rejects_its_file_only(tmp_path):
    intact = read(CAR, repo_car(tmp_path / "alone" / "a.car", records_of()))
    repo_car(tmp_path / "both" / "a.car", records_of())
    deep = varint(len(car_cid(DEEP_CBOR)) + len(DEEP_CBOR)) + car_cid(DEEP_CBOR) + DEEP_CBOR
    head = encode({"roots": [car_cid(DEEP_CBOR)], "version": 1})
    (tmp_path / "both" / "b.car").write_bytes(varint(len(head)) + head + deep)
    accounts, posts, rejected, ignored = read(CAR, tmp_path / "both")
    assert keys(accounts + posts) == keys(intact[0] + intact[1])
    assert [(r.source_file, r.reason.split(" (")[0]) for r in rejected] == [
        ("b.car", "unreadable CAR: the root commit is not DAG-CBOR")]


def _break(nodes: dict[str, dict], fault: str) -> None:
    if fault == "e not a list":
        nodes["right"]["e"] = {"k": b"x"}
    elif fault == "k not bytes":
        nodes["right"]["e"][0]["k"] = "app.bsky.feed.post/3kaaaaaaaab22"
    elif fault == "p not an int":
        nodes["right"]["e"][0]["p"] = "0"
    elif fault == "v not a CID":
        nodes["right"]["e"][0]["v"] = "bafyrei"
    elif fault == "t not a CID":
        nodes["root"]["e"][0]["t"] = "right"
    elif fault == "l not a CID":
        nodes["root"]["l"] = 12
    elif fault == "entry not a map":
        nodes["right"]["e"][0] = ["k", "v"]


def _read_units(items: tuple) -> set[str]:
    """The tree entries a read kept: the locators of its records (not the commit's inferred account) and
    of its ignored units."""
    accounts, posts, _, ignored = items
    return {r.source_locator for r in accounts + posts if not getattr(r, "inferred", False)} | {
        i.locator for i in ignored}


# the default tree: left = profile, like; root = post a22; right = posts b22, e22, repost c22, follow f22
@pytest.mark.parametrize("fault, lost, locator, reason", [
    ("e not a list", 4, "tree node", "tree node's entries 'e' are a map, not a list"),
    ("k not bytes", 1, "tree node", "tree entry's key 'k' is text, not bytes"),
    ("p not an int", 1, "tree node", "tree entry's prefix length 'p' is '0', not a whole number"),
    ("v not a CID", 1, "record app.bsky.feed.post/3kaaaaaaaab22", "tree entry's record link 'v' is text, not a CID"),
    ("t not a CID", 4, "tree root entry 0 't'", "tree link is text, not a CID"),
    ("l not a CID", 2, "tree root 'l'", "tree link is an integer, not a CID"),
    ("entry not a map", 1, "tree node", "tree entry is a list, not a map"),
])
def test_tree_node_of_the_wrong_types_is_rejected_and_the_rest_walked(tmp_path, fault, lost, locator, reason):
    records = records_of()
    intact = read(CAR, repo_car(tmp_path / "intact.car", records))
    nodes = default_nodes(records)
    _break(nodes, fault)
    broken = read(CAR, repo_car(tmp_path / "broken.car", records, nodes))
    assert [(r.locator.split(" bafyrei")[0], r.reason.split(":")[0]) for r in broken[2]] == [(locator, reason)]
    kept, before = _read_units(broken), _read_units(intact)
    assert kept < before and len(before - kept) == lost  # the entries under the broken part, and no other


def test_an_entry_of_the_wrong_types_loses_the_prefixed_key_after_it_only(tmp_path):
    records = records_of()
    nodes = default_nodes(records)
    right = nodes["right"]["e"]  # keys share prefixes: written compressed, as a real tree is
    full = [e["k"] for e in right]
    for previous, entry in zip(full, right[1:]):
        shared = next(i for i, (a, b) in enumerate(zip(previous, entry["k"])) if a != b)
        entry["p"], entry["k"] = shared, entry["k"][shared:]
    intact = read(CAR, repo_car(tmp_path / "ok.car", records, nodes))
    assert intact[2] == [] and len(intact[1]) == 4
    right[1]["k"] = 5  # the entries after it that continue its key cannot be known either
    continuing = next((i for i, e in enumerate(right[2:]) if e["p"] == 0), len(right) - 2)
    broken = read(CAR, repo_car(tmp_path / "broken.car", records, nodes))
    assert [r.reason for r in broken[2]] == ["tree entry's key 'k' is an integer, not bytes"] + [
        "tree entry's key continues a key that could not be read"] * continuing
    assert len(_read_units(intact) - _read_units(broken)) == 1 + continuing


def test_record_nested_10000_deep_is_rejected_and_the_others_kept(tmp_path):
    records = records_of()
    intact = read(CAR, repo_car(tmp_path / "intact.car", records))
    post = encode({"$type": "app.bsky.feed.post", "createdAt": "2024-03-05T10:00:00.000Z", "text": "x",
                   "zzzzzzzzzzzzz": 0})
    assert post.endswith(b"\x00")
    records["app.bsky.feed.post/3kaaaaaaaab22"] = post[:-1] + DEEP_CBOR
    accounts, posts, rejected, ignored = read(CAR, repo_car(tmp_path / "deep.car", records))
    assert [(r.locator, r.reason) for r in rejected] == [
        ("record app.bsky.feed.post/3kaaaaaaaab22", "record nested too deep to decode (DAG-CBOR)")]
    assert keys(intact[1]) - keys(posts) == {p for p in keys(intact[1]) if p[2].endswith("3kaaaaaaaab22")}
    assert keys(accounts) == keys(intact[0]) and same_ignored(ignored, intact[3])


def test_root_that_points_nowhere_is_a_quarantine_row(settings, tmp_path):
    car = repo_car(tmp_path / "e" / "nowhere.car", records_of(), root=car_cid(b"no such node"))
    accounts, posts, rejected, ignored = read(CAR, car)
    assert posts == [] and [(r.locator, r.reason.split(":")[0]) for r in rejected] == [
        ("tree root", f"the tree root {_text(car_cid(b'no such node'))} is not in the CAR")]
    assert [a.inferred for a in accounts] == [True]  # the commit names the account
    ledger = ingest_balances(settings, "2024-05-01", car.parent)
    assert ledger["nowhere.car"]["quarantined"] == 1


def _text(cid: bytes) -> str:
    import libipld

    return libipld.encode_cid(cid)


@pytest.mark.parametrize("loop", ["right to root", "right to itself", "left twice"])
def test_tree_that_loops_is_said_and_does_not_hang(tmp_path, loop):
    records = records_of()
    intact = read(CAR, repo_car(tmp_path / "intact.car", records))
    nodes = default_nodes(records)
    if loop == "right to root":
        nodes["right"]["l"] = node_cid("root")
    elif loop == "right to itself":
        nodes["right"]["e"][-1]["t"] = node_cid("right")
    else:
        nodes["right"]["l"] = node_cid("left")
    accounts, posts, rejected, ignored = read(CAR, repo_car(tmp_path / "loop.car", records, nodes))
    assert [r.reason.split(",")[0] for r in rejected] == ["tree node reached twice"]
    assert keys(accounts + posts) == keys(intact[0] + intact[1]) and same_ignored(ignored, intact[3])  # each entry once


def test_trailing_garbage_keeps_every_block_before_it(settings, tmp_path):
    records = records_of()
    intact = read(CAR, repo_car(tmp_path / "intact" / "repo.car", records))
    car = repo_car(tmp_path / "e" / "repo.car", records, tail=b"\x01\x02\x03")
    accounts, posts, rejected, ignored = read(CAR, car)
    assert keys(accounts + posts) == keys(intact[0] + intact[1]) and same_ignored(ignored, intact[3])
    size = car.stat().st_size
    assert [(r.locator, r.reason.split(" (")[0]) for r in rejected] == [
        (f"byte {size - 3}", "unreadable CAR tail: 3 bytes after block 11 are not a complete block")]
    ledger = ingest_balances(settings, "2024-05-01", car.parent)
    assert ledger["repo.car"]["quarantined"] == 1


def test_truncated_last_block_keeps_the_complete_ones(tmp_path):
    records = records_of()
    last = "app.bsky.feed.post/3kaaaaaaaah22"  # the last block written is the last record
    records[last] = {"$type": "app.bsky.feed.post", "text": "cut", "createdAt": "2024-03-05T10:00:00.000Z"}
    intact = read(CAR, repo_car(tmp_path / "intact.car", records))
    full = repo_car(tmp_path / "full.car", records).read_bytes()
    (tmp_path / "cut.car").write_bytes(full[:-5])
    cut = read(CAR, tmp_path / "cut.car")
    assert sorted((r.locator.split(" ")[0], r.reason.split(" bafyrei")[0].split(":")[0]) for r in cut[2]) == [
        ("byte", "unreadable CAR tail"), ("record", "record block")]
    assert _read_units(intact) - _read_units(cut) == {f"record {last}"}


def test_wrong_types_in_car_records_are_rejected_or_repaired(tmp_path):
    records = records_of()
    records["app.bsky.actor.profile/self"] = {"$type": "app.bsky.actor.profile", "displayName": "Ana",
                                              "avatar": "https://not.a/blob.jpg"}
    records["app.bsky.feed.post/3kaaaaaaaaa22"] = {"$type": "app.bsky.feed.post", "text": "x", "createdAt": ["2024"]}
    records["app.bsky.feed.post/3kaaaaaaaab22"] = {"$type": "app.bsky.feed.post", "text": "nul\x00here",
                                                   "createdAt": "9999-12-31T23:59:59-05:00"}
    records["app.bsky.feed.post/3kaaaaaaaae22"] = {"$type": "app.bsky.feed.like", "text": "x"}
    bad_utf8 = encode({"$type": "app.bsky.feed.repost", "createdAt": "2024-03-03T10:00:00.000Z", "zzzzzzzzzzz": "ab"})
    records["app.bsky.feed.repost/3kaaaaaaaac22"] = bad_utf8[:-2] + b"\xff\xfe"
    accounts, posts, rejected, ignored = read(CAR, repo_car(tmp_path / "types.car", records))
    assert sorted((r.locator.split("/")[-1], r.reason.split(" (")[0]) for r in rejected) == [
        ("3kaaaaaaaaa22", "createdAt is a JSON list, not a date"),
        ("3kaaaaaaaab22", "createdAt '9999-12-31T23:59:59-05:00' is outside 1970-01-01 to 2100-01-01"),
        ("3kaaaaaaaac22", "record is not DAG-CBOR"),
        ("3kaaaaaaaae22", "record $type 'app.bsky.feed.like' is not its collection app.bsky.feed.post"),
        ("self", "avatar is text, not a blob")]
    assert [(a.inferred, a.source_locator) for a in accounts] == [(True, "commit")]
    records["app.bsky.feed.post/3kaaaaaaaab22"]["createdAt"] = "2024-01-01T00:00:00Z"
    _, posts, _, _ = read(CAR, repo_car(tmp_path / "nul.car", records))
    assert [p.text for p in posts] == ["nulhere"]  # NUL removed, the post kept


def test_record_block_missing_from_a_partial_car_is_rejected(tmp_path):
    records = records_of()
    path = repo_car(tmp_path / "partial.car", records)
    data = path.read_bytes()
    block = encode(records["app.bsky.feed.post/3kaaaaaaaae22"])
    framed = varint(len(car_cid(block)) + len(block)) + car_cid(block) + block
    assert data.count(framed) == 1
    path.write_bytes(data.replace(framed, b""))
    accounts, posts, rejected, ignored = read(CAR, path)
    assert len(posts) == 3 and [(r.locator, r.reason.split(" bafyrei")[0]) for r in rejected] == [
        ("record app.bsky.feed.post/3kaaaaaaaae22", "record block")]


def test_identical_records_under_two_keys_are_both_read(tmp_path):
    records = records_of()
    records["app.bsky.feed.post/3kaaaaaaaag22"] = dict(records["app.bsky.feed.post/3kaaaaaaaae22"])
    accounts, posts, rejected, ignored = read(CAR, repo_car(tmp_path / "twice.car", records))
    assert rejected == [] and {p.post_id.rsplit("/", 1)[1] for p in posts} >= {"3kaaaaaaaae22", "3kaaaaaaaag22"}


# --- JSON responses -----------------------------------------------------------------------------------

def follower(i: int) -> dict:
    return {"did": "did:plc:" + f"{i:024d}".translate(str.maketrans("0123456789", "abcdefghij")),
            "handle": f"f{i}.bsky.social", "displayName": f"F {i}", "createdAt": "2024-01-01T00:00:00Z"}


def get_followers(n: int = 48) -> dict:
    subject = {"did": BSKY_DID_A, "handle": "ana.bsky.social", "displayName": "Ana"}
    return {"followers": [follower(i) for i in range(n)], "subject": subject, "cursor": "abc"}


def _with_deep_follower(indent: int | None, at: int = 7) -> str:
    text = json.dumps(get_followers(), indent=indent)
    marker = json.dumps(follower(at), indent=indent)
    if indent is not None:  # the follower's lines are indented inside the list
        marker = "\n".join((" " * (2 * indent) if n else "") + line for n, line in enumerate(marker.split("\n")))
    assert text.count(marker) == 1
    return text.replace(marker, '{"did": "did:plc:deep", "handle": ' + DEEP_JSON + "}")


@pytest.mark.parametrize("indent", [None, 2], ids=["one line", "pretty"])
def test_one_follower_nested_10000_deep_loses_only_itself(settings, tmp_path, indent):
    (tmp_path / "intact").mkdir()
    (tmp_path / "intact" / "getFollowers.json").write_text(json.dumps(get_followers(), indent=indent))
    intact = read(JSON, tmp_path / "intact")
    assert len(intact[0]) == 49  # the subject and 48 followers
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "getFollowers.json").write_text(_with_deep_follower(indent))
    accounts, posts, rejected, ignored = read(JSON, tmp_path / "e")
    where = "line 1" if indent is None else "file"
    assert [(r.locator, r.reason) for r in rejected] == [(f"{where} followers[7]", TOO_DEEP)]
    assert keys(intact[0]) - keys(accounts) == {k for k in keys(intact[0]) if k[1] == follower(7)["did"]}
    assert len(accounts) == 48
    ledger = ingest_balances(settings, "2024-05-01", tmp_path / "e")
    assert ledger["getFollowers.json"]["seen"] == 49 and ledger["getFollowers.json"]["quarantined"] == 1


def test_json_lines_of_responses_each_item_alone(tmp_path):
    lines = [json.dumps(get_followers(3)), _with_deep_follower(None, at=2), json.dumps({"profiles": []}), "{broken"]
    (tmp_path / "pages.jsonl").write_text("\n".join(lines) + "\n")
    accounts, posts, rejected, ignored = read(JSON, tmp_path / "pages.jsonl")
    assert [(r.locator, r.reason.split(":")[0]) for r in rejected] == [
        ("line 2 followers[2]", TOO_DEEP), ("line 4", "not JSON")]
    assert [(i.locator, i.reason) for i in ignored] == [("line 3", "response with empty lists (no records or views)")]
    assert len(accounts) == 4 + 48  # line 1: subject + 3; line 2: subject + 47


def test_truncated_response_keeps_the_items_before_the_cut(tmp_path):
    text = json.dumps(get_followers(), indent=1)
    (tmp_path / "getFollowers.json").write_text(text[:text.index('"f30.bsky.social"')])
    accounts, posts, rejected, ignored = read(JSON, tmp_path / "getFollowers.json")
    assert [a.handle for a in accounts] == [f"f{i}.bsky.social" for i in range(30)]  # the subject came after
    assert [(r.locator, r.reason.split(" at ")[0].split(" (")[0]) for r in rejected] == [
        ("file after followers[29]", "not JSON: the JSON value is not closed")]


@pytest.mark.parametrize("field, value, reason", [
    ("did", 12345, "'12345' is not a did:plc or did:web identifier"),
    ("createdAt", ["2024"], "createdAt is a JSON list, not a date"),
    ("avatar", ["x"], "avatar is a list, not a blob"),
    ("followersCount", 2**70, f"followersCount {2**70} is out of range"),
    ("followsCount", 1e19, "followsCount 10000000000000000000 is out of range"),
    ("createdAt", "0001-01-01T00:00:00+05:00", "createdAt '0001-01-01T00:00:00+05:00' is outside 1970-01-01"),
    ("createdAt", "9999-12-31T23:59:59-05:00", "createdAt '9999-12-31T23:59:59-05:00' is outside 1970-01-01"),
    ("displayName", {"a": 1}, "displayName is a JSON object, not text"),
])
def test_wrong_types_in_a_view_quarantine_that_view_only(tmp_path, field, value, reason):
    body = get_followers(5)
    body["followers"][2][field] = value
    (tmp_path / "getFollowers.json").write_text(json.dumps(body))
    accounts, posts, rejected, ignored = read(JSON, tmp_path / "getFollowers.json")
    assert [(r.locator, r.reason[:len(reason)]) for r in rejected] == [("line 1 followers[2]", reason)]
    assert len(accounts) == 5


def test_invalid_utf8_and_nul_are_repaired_in_place(tmp_path):
    body = get_followers(3)
    body["followers"][0]["displayName"] = "Zoë"  # UTF-8 elsewhere: the file is read as UTF-8
    body["followers"][1]["description"] = "bio\x00 PLACEHOLDER"
    data = json.dumps(body, ensure_ascii=False).encode().replace(b"PLACEHOLDER", b"caf\xe9 \xff")
    (tmp_path / "getFollowers.json").write_bytes(data)
    items, ledger = read_counted(JSON, tmp_path / "getFollowers.json")
    assert_reader_balances(ledger)
    (bio,) = [a.bio for a in items if isinstance(a, AccountRecord) and a.bio]
    assert "\x00" not in bio and bio.startswith("bio caf") and "\ufffd" in bio
    assert ledger.files["getFollowers.json"].repaired == 1


def test_repo_records_of_other_collections_are_ignored_and_feeds_are_posts(tmp_path):
    uri = f"at://{BSKY_DID_A}/app.bsky.feed.post/3k1"
    post = {"$type": "app.bsky.feed.post", "text": "hola", "createdAt": "2024-01-01T00:00:00Z"}
    (tmp_path / "listRecords.json").write_text(json.dumps({"records": [
        {"uri": uri, "cid": "x", "value": post},
        {"uri": f"at://{BSKY_DID_A}/app.bsky.feed.like/3k2", "cid": "y",
         "value": {"$type": "app.bsky.feed.like", "subject": {"uri": uri, "cid": "x"}}},
        {"uri": f"at://{BSKY_DID_A}/app.bsky.graph.block/3k3", "cid": "z", "value": {"subject": BSKY_DID_B}},
        {"uri": f"at://{BSKY_DID_A}/x/3k4", "cid": "z", "value": {"$type": 5}},
    ]}, indent=2))
    (tmp_path / "getAuthorFeed.json").write_text(json.dumps({"feed": [
        {"post": {"uri": f"at://{BSKY_DID_B}/app.bsky.feed.post/3k9", "cid": "c",
                  "author": {"did": BSKY_DID_B, "handle": "bob.test"}, "record": post}},
        {"post": "not a view"}]}))
    accounts, posts, rejected, ignored = read(JSON, tmp_path)
    assert sorted(p.post_id for p in posts) == sorted([uri, f"at://{BSKY_DID_B}/app.bsky.feed.post/3k9"])
    assert sorted(i.reason for i in ignored) == ["record app.bsky.feed.like", "record app.bsky.graph.block"]
    assert sorted((r.locator, r.reason.split(" (")[0]) for r in rejected) == [
        ("file records[3]", "record $type '5' is not a collection name"),
        ("line 1 feed[1]", "record has no DID")]
    assert sorted((a.account_id, a.inferred) for a in accounts) == [(BSKY_DID_A, True), (BSKY_DID_B, True)]


def test_large_json_array_of_records_still_streams_and_balances(tmp_path):
    records = [{"uri": f"at://{BSKY_DID_A}/app.bsky.feed.post/3k{i}", "cid": "x",
                "value": {"$type": "app.bsky.feed.post", "text": f"t{i}", "createdAt": "2024-01-01T00:00:00Z"}}
               for i in range(300)]
    text = json.dumps(records)
    (tmp_path / "records.json").write_text(text[:-1] + ", " + '{"did": ' + DEEP_JSON + "}, 5]")
    accounts, posts, rejected, ignored = read(JSON, tmp_path / "records.json")
    assert len(posts) == 300 and [(r.locator, r.reason.split(" (")[0]) for r in rejected] == [
        ("record 301", TOO_DEEP), ("record 302", "expected a record or profile view object, got a JSON int")]
    assert [a.inferred for a in accounts] == [True]


# --- responses larger than MAX_JSON_RECORD_CHARS: read item by item, streamed ----------------------------

def _suggestions(n: int = 50, huge_at: int = 17, chars: int = 17 * 1024 * 1024) -> dict:
    """A getSuggestions response of ``n`` actors, the one at ``huge_at`` with a ``chars``-long description
    (quotes, brackets and backslashes in it, so that a scanner that does not follow strings ends it early)."""
    actors = [follower(i) for i in range(n)]
    actors[huge_at]["description"] = ('a"]},{[\\' * (chars // 8 + 1))[:chars]
    return {"actors": actors, "cursor": "c"}


@pytest.mark.slow
@pytest.mark.parametrize("indent", [None, 1], ids=["one line", "pretty"])
def test_response_over_16_mb_loses_only_its_oversize_actor(settings, tmp_path, indent):
    """Before: a 17 MB actor made the whole 50-actor response one rejection (0 of 50 kept)."""
    path = tmp_path / "getSuggestions.json"
    path.write_text(json.dumps(_suggestions(), indent=indent))
    assert path.stat().st_size > MAX_JSON_RECORD_CHARS
    accounts, posts, rejected, ignored = read(JSON, path)
    where = "line 1" if indent is None else "file"
    assert [(r.locator, r.reason) for r in rejected] == [
        (f"{where} actors[17]", f"item larger than {MAX_JSON_RECORD_CHARS} characters; skipped")]
    assert sorted(a.handle for a in accounts) == sorted(f"f{i}.bsky.social" for i in range(50) if i != 17)
    ledger = ingest_balances(settings, "2024-05-01", path)
    assert ledger["getSuggestions.json"]["seen"] == 50 and ledger["getSuggestions.json"]["quarantined"] == 1


@pytest.fixture
def small_limit(monkeypatch) -> int:
    """MAX_JSON_RECORD_CHARS made 2,000 characters, so that the streamed path is tested on small files."""
    from pipeline.ingest.readers import bluesky

    monkeypatch.setattr(bluesky, "MAX_JSON_RECORD_CHARS", 2000)
    return 2000


@pytest.mark.parametrize("layout", ["one line", "pretty", "array", "json lines"])
def test_streamed_response_keeps_every_item_but_the_oversize_one(tmp_path, small_limit, layout):
    body = get_followers(10)
    body["followers"][4]["description"] = "x" * small_limit  # this follower alone is over the limit
    other = {"profiles": [follower(60)]}
    text = {"one line": json.dumps(body), "pretty": json.dumps(body, indent=2),
            "array": json.dumps([other, body], indent=1),
            "json lines": "\n".join([json.dumps(other), json.dumps(body), "{broken", json.dumps(other)])}[layout]
    path = tmp_path / "getFollowers.json"
    path.write_text(text)
    assert len(text) > small_limit  # the file is streamed, not held
    items, ledger = read_counted(JSON, path)
    assert_reader_balances(ledger)
    where = {"one line": "line 1", "pretty": "file", "array": "record 2", "json lines": "line 2"}[layout]
    rejected = [(i.locator, i.reason.split(":")[0]) for i in items if isinstance(i, Rejection)]
    assert rejected == [(f"{where} followers[4]", f"item larger than {small_limit} characters; skipped")] + (
        [("line 3", "not JSON")] if layout == "json lines" else [])
    handles = {a.handle for a in items if isinstance(a, AccountRecord)}
    assert handles == {f"f{i}.bsky.social" for i in range(10) if i != 4} | {"ana.bsky.social"} | (
        set() if layout in ("one line", "pretty") else {"f60.bsky.social"})
    units = 11 + {"one line": 0, "pretty": 0, "array": 1, "json lines": 3}[layout]
    assert ledger.files["getFollowers.json"].seen == units


def test_streamed_response_cut_inside_an_oversize_item_keeps_those_before(tmp_path, small_limit):
    body = get_followers(10)
    body["followers"][6]["description"] = "x" * (3 * small_limit)
    text = json.dumps(body, indent=1)
    path = tmp_path / "getFollowers.json"
    path.write_text(text[:text.index("x" * 100) + 2 * small_limit])
    accounts, posts, rejected, ignored = read(JSON, path)
    assert [a.handle for a in accounts] == [f"f{i}.bsky.social" for i in range(6)]
    assert [(r.locator, r.reason.split(",")[0]) for r in rejected] == [
        ("file after followers[5]", f"not JSON: a value larger than {small_limit} characters")]


def test_streamed_value_with_no_list_is_one_rejection(tmp_path, small_limit):
    """An oversize object that is no response (a huge profile view) is one unit; the lines after it are read."""
    huge = {**follower(1), "description": "x" * small_limit}
    path = tmp_path / "profiles.jsonl"
    path.write_text("\n".join([json.dumps(huge), json.dumps(follower(2)), json.dumps({"profiles": []})]) + "\n")
    items, ledger = read_counted(JSON, path)
    assert_reader_balances(ledger)
    assert [(i.locator, i.reason.split(" with no")[0]) for i in items if isinstance(i, (Rejection, Ignored))] == [
        ("line 1", f"value larger than {small_limit} characters"),
        ("line 3", "response with empty lists (no records or views)")]
    assert [a.handle for a in items if isinstance(a, AccountRecord)] == ["f2.bsky.social"]
    assert ledger.files["profiles.jsonl"].seen == 3


def test_array_element_response_is_read_item_by_item(tmp_path):
    """A getFollowers response inside an array: one deep follower loses only itself (not the element)."""
    (tmp_path / "pages.json").write_text("[" + _with_deep_follower(None) + ", " + json.dumps(get_followers(2)) + "] x")
    accounts, posts, rejected, ignored = read(JSON, tmp_path / "pages.json")
    assert [(r.locator, r.reason.split(" (")[0]) for r in rejected] == [
        ("record 1 followers[7]", TOO_DEEP), ("after the array", "data after the end of the JSON array")]
    assert len(accounts) == 2 + 47 + 2  # Ana, the subject of each response, and the followers
