"""Issue 24 for the Mastodon readers: every unit of an export is accounted for (stored, quarantined with a
reason, or ignored by reason), and no damaged record, field or file escapes as an exception.

The archive fixtures have the shape Mastodon's BackupService writes (tests/export_fixtures.py): one-line
JSON, ``@context`` a list with an object, ``totalItems`` before ``orderedItems``, activities with every field
a real outbox has. The real samples are Account entities (shared/data/exports/mastodon)."""

from __future__ import annotations

import io
import json
import logging
import zipfile

import pytest
import sqlalchemy as sa
from conftest import SHARED_DATA
from export_fixtures import (
    MASTO_ACTOR,
    MASTO_BOOSTED,
    MASTO_CONTEXT,
    mastodon_accounts,
    mastodon_activities,
    mastodon_announce,
    mastodon_archive_members,
    mastodon_note,
    write_mastodon_archive,
    write_members,
)
from ledger_checks import assert_ingest_balances, assert_reader_balances, read_counted

from pipeline.core.db import transaction
from pipeline.core.runs import start_run
from pipeline.ingest.ledger import ledger_warnings
from pipeline.ingest.readers import READERS
from pipeline.ingest.readers.base import AccountRecord, Ignored, PostRecord, Rejection
from pipeline.ingest.readers.mastodon import collection_items
from pipeline.ingest.readers.textio import MAX_JSON_DEPTH

ARCHIVE = READERS["mastodon_archive"]
ACCOUNTS = READERS["mastodon"]
REAL = SHARED_DATA / "exports" / "mastodon"
NOTES, BOOSTS = 1260, 326


def ingest_balanced(settings, run_key, path, fmt="auto") -> dict[str, dict]:
    start_run(settings, run_key, str(path), fmt)
    return assert_ingest_balances(settings, run_key, path, fmt)


def rows(settings, sql, **params) -> list:
    with transaction(settings) as conn:
        return conn.execute(sa.text(sql), params).all()


def quarantined(settings, run_key) -> dict[tuple[str, str], str]:
    return {(r.source_file, r.locator): r.reason for r in rows(
        settings, "select source_file, locator, reason from quarantine where run_key = :k and stage = 'ingest'",
        k=run_key)}


def real_shaped_activities() -> list[dict]:
    """1,260 Create of a Note (replies, hashtags, links, media among them) and 326 Announce, interleaved."""
    notes = [mastodon_note(MASTO_ACTOR, n, f'<p>toot {n} <a href="https://news.example/{n}">news</a> '
                                           f'<a href="https://mastodon.social/tags/t{n % 9}" class="mention hashtag" '
                                           f'rel="tag">#<span>t{n % 9}</span></a></p>',
                           f"2024-{1 + n % 12:02d}-{1 + n % 28:02d}T10:00:00Z", hashtags=(f"T{n % 9}",),
                           in_reply_to=f"{MASTO_BOOSTED}{n}" if n % 5 == 0 else None, media=n % 40 == 0)
             for n in range(1, NOTES + 1)]
    boosts = [mastodon_announce(MASTO_ACTOR, 10_000 + n, f"https://fosstodon.org/users/bob/statuses/{900 + n}")
              for n in range(BOOSTS)]
    out: list[dict] = []
    for i, note in enumerate(notes):  # a boost after about every fourth status, as a timeline has them
        out.append(note)
        if i % 4 == 3 and boosts:
            out.append(boosts.pop())
    return out + boosts


def outbox_members(activities: list, **kw) -> dict[str, bytes]:
    return mastodon_archive_members(activities=activities, **kw)


# --- the real-shaped archive of 1,586 activities ------------------------------------------------------------

@pytest.mark.parametrize("as_zip", [True, False], ids=["zip", "folder"])
@pytest.mark.parametrize("pretty", [False, True], ids=["one-line", "pretty"])
def test_real_shaped_archive_stores_every_status_and_boost(settings, tmp_path, as_zip, pretty):
    activities = real_shaped_activities()
    assert len(activities) == NOTES + BOOSTS == 1586
    export = write_mastodon_archive(tmp_path / ("archive.zip" if as_zip else "archive"), as_zip=as_zip,
                                    activities=activities, pretty=pretty)
    outbox_text = mastodon_archive_members(activities=activities, pretty=pretty)["outbox.json"].decode()
    assert outbox_text.index('"totalItems"') < outbox_text.index('"orderedItems"') and ("\n" in outbox_text) == pretty
    ledger = ingest_balanced(settings, "arch", export)
    prefix = "archive.zip!" if as_zip else ""
    outbox = ledger[f"{prefix}outbox.json"]
    assert (outbox["seen"], outbox["stored"], outbox["quarantined"], outbox["ignored"]) == (1586, 1586, 0, {})
    assert ledger[f"{prefix}likes.json"]["ignored"] == {"liked status": 1}
    assert ledger[f"{prefix}bookmarks.json"]["ignored"] == {"bookmarked status": 1}
    assert ledger[f"{prefix}actor.json"]["stored"] == 1
    assert ledger_warnings({n: r | {"gap": 0} for n, r in ledger.items()}) == []
    (posts, reposts, replies, tagged), = rows(settings, (
        "select count(*) filter (where reposted_id is null), count(*) filter (where reposted_id is not null),"
        " count(*) filter (where replied_id is not null), count(*) filter (where cardinality(hashtags) > 0)"
        " from posts where run_key = 'arch'"))
    assert (posts, reposts) == (NOTES, BOOSTS)
    assert replies == NOTES // 5 and tagged == NOTES


@pytest.mark.parametrize("as_zip", [True, False], ids=["zip", "folder"])
def test_archive_avatar_is_acquired_from_zip_and_folder(settings, tmp_path, as_zip):
    from pipeline.images.acquire import acquire_avatars

    export = write_mastodon_archive(tmp_path / ("m.zip" if as_zip else "m"), as_zip=as_zip)
    ingest_balanced(settings, "av", export)
    (ref,), = rows(settings, "select avatar_ref from account_snapshots where run_key = 'av'")
    assert ref == ("zip:m.zip!avatar.png" if as_zip else "avatar.png")
    acquire_avatars(settings, "av")
    assert [tuple(r) for r in rows(settings, "select status, reason from account_avatars where run_key = 'av'")] == [
        ("stored", None)]


# --- the synthetic fixtures, and what each unit becomes ----------------------------------------------------

def test_synthetic_archive_balances_with_its_like_ignored_and_damaged_create_quarantined(settings, tmp_path):
    export = write_mastodon_archive(tmp_path / "m.zip")
    ledger = ingest_balanced(settings, "syn", export)
    outbox = ledger["m.zip!outbox.json"]
    assert (outbox["seen"], outbox["stored"], outbox["quarantined"]) == (5, 3, 1)
    assert outbox["ignored"] == {"activity Like": 1}
    assert quarantined(settings, "syn") == {("m.zip!outbox.json", "record 5"): "object.id is missing"}


def test_synthetic_account_entities_balance(settings, tmp_path):
    (tmp_path / "accounts.json").write_text(json.dumps(mastodon_accounts()))
    ledger = ingest_balanced(settings, "acc", tmp_path)
    assert ledger["accounts.json"]["seen"] == len(mastodon_accounts())


@pytest.mark.parametrize("sample", ["mastodonpy-cassettes", "mastodon-docs-examples"])
def test_real_samples_balance(settings, sample):
    path = REAL / sample
    if not path.is_dir():
        pytest.skip(f"the real sample {path} is absent")
    ledger = ingest_balanced(settings, "real", path)
    assert sum(r["stored"] for r in ledger.values()) > 0
    with transaction(settings) as conn:
        stored = conn.execute(sa.text("select count(*) from account_snapshots where run_key = 'real'")).scalar_one()
    units = sum(r["seen"] for r in ledger.values())
    assert stored + sum(r["quarantined"] for r in ledger.values()) + sum(
        sum(r["ignored"].values()) for r in ledger.values()) == units


def test_each_activity_kind_is_a_post_an_ignored_unit_or_a_rejection(tmp_path):
    note = mastodon_note(MASTO_ACTOR, 1, "<p>hola</p>")
    question = mastodon_note(MASTO_ACTOR, 2, "<p>¿sí o no?</p>", kind="Question")
    page = mastodon_note(MASTO_ACTOR, 3, "<p>a page</p>", kind="Page")
    event = mastodon_note(MASTO_ACTOR, 4, "<p>an event</p>", kind="Event")
    odd = mastodon_note(MASTO_ACTOR, 5, "<p>odd</p>", kind="x" * 300)
    by_uri = {**mastodon_note(MASTO_ACTOR, 6, ""), "object": f"{MASTO_ACTOR}/statuses/6"}
    boost_without_object = {k: v for k, v in mastodon_announce(MASTO_ACTOR, 7, MASTO_BOOSTED).items() if k != "object"}
    items = [note, question, page, event, odd, by_uri, boost_without_object,
             {"id": "x#follow", "type": "Follow", "object": MASTO_BOOSTED}, {"type": "Like", "object": MASTO_BOOSTED},
             {"id": "y", "type": "Delete"}, "not an activity", 7, None, [], {"id": "no-type"}]
    write_members(tmp_path, outbox_members(items), as_zip=False)
    got, ledger = read_counted(ARCHIVE, tmp_path)
    assert_reader_balances(ledger)
    outbox = {i.source_locator if isinstance(i, PostRecord) else i.locator: i for i in got
              if i.source_file == "outbox.json"}
    assert [k for k, v in outbox.items() if isinstance(v, PostRecord)] == ["record 1", "record 2"]
    assert {k: v.reason for k, v in outbox.items() if isinstance(v, Ignored)} == {
        "record 3": "Create of a Page", "record 4": "Create of an Event",
        "record 5": "Create of an object of an unrecognised type", "record 8": "activity Follow",
        "record 9": "activity Like", "record 10": "activity Delete"}
    assert {k: v.reason for k, v in outbox.items() if isinstance(v, Rejection)} == {
        "record 6": "Create activity's object is a JSON str, not an embedded object",
        "record 7": "object is missing",
        "record 11": "expected an activity object, got a JSON str", "record 12": "expected an activity object, got a JSON int",
        "record 13": "expected an activity object, got a JSON NoneType",
        "record 14": "expected an activity object, got a JSON list", "record 15": "activity has no type"}
    assert ledger.files["outbox.json"].seen == len(items)


def test_likes_and_bookmarks_are_counted_and_ignored_and_other_json_files_are_registered(tmp_path):
    members = outbox_members(mastodon_activities()[:1], likes=[MASTO_BOOSTED, f"{MASTO_BOOSTED}2", 5],
                             bookmarks=[{"id": f"{MASTO_BOOSTED}3"}])
    members["notes/export-settings.json"] = b'{"theme": "dark"}'
    write_members(tmp_path, members, as_zip=False)
    got, ledger = read_counted(ARCHIVE, tmp_path)
    assert_reader_balances(ledger)
    assert dict(ledger.files["likes.json"].ignored) == {"liked status": 2}
    assert ledger.files["likes.json"].rejected == 1 and ledger.files["likes.json"].seen == 3
    assert dict(ledger.files["bookmarks.json"].ignored) == {"bookmarked status": 1}
    assert dict(ledger.files["notes/export-settings.json"].ignored) == {
        "JSON file that is not part of a Mastodon archive (not read)": 1}


# --- the outbox read structurally ------------------------------------------------------------------------

def _outbox_text(prefix: str, items: list, suffix: str = "") -> str:
    return "{" + prefix + '"orderedItems": ' + json.dumps(items) + suffix + "}"


def test_only_the_top_level_ordered_items_are_read(tmp_path):
    items = mastodon_activities()[:3]
    decoy = {"@context": [*MASTO_CONTEXT, {"orderedItems": {"@id": "as:items", "@container": "@list"}}],
             "id": "outbox.json", "type": "OrderedCollection",
             "first": {"type": "OrderedCollectionPage", "orderedItems": []}, "totalItems": 3}
    text = json.dumps(decoy)[:-1] + ', "orderedItems": ' + json.dumps(items) + "}"
    members = outbox_members([])
    members["outbox.json"] = text.encode()
    write_members(tmp_path, members, as_zip=False)
    got, ledger = read_counted(ARCHIVE, tmp_path)
    assert_reader_balances(ledger)
    assert len([i for i in got if isinstance(i, PostRecord)]) == 3


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 1 << 20])
@pytest.mark.parametrize("pretty", [False, True])
def test_collection_items_do_not_depend_on_where_chunks_end(chunk, pretty):
    items = [*mastodon_activities(), "tricky \" ] } [ { \\ \u00e9 \U0001f600", 12345678901234567890, -1.5e-3, True,
             None, {"nested": [[[]]], "s": "}]"}]
    collection = {"@context": MASTO_CONTEXT, "id": "outbox.json", "type": "OrderedCollection", "totalItems": len(items),
                  "orderedItems": items, "after": {"orderedItems": ["not these"]}}
    text = json.dumps(collection, indent=2 if pretty else None)
    assert [v for _, v in collection_items(io.StringIO(text), "outbox.json", chunk=chunk)] == items


@pytest.mark.parametrize("content, reason", [
    ("[1, 2]", "not a JSON object"),
    ("", "the file is empty"),
    ('{"type": "OrderedCollection", "totalItems": 0}', "no top-level orderedItems array"),
    ('{"orderedItems": {"type": "Create"}}', "its top-level orderedItems is an object, not an array"),
    ('{"@context": "x", "orderedItems": null}', "its top-level orderedItems is not an array, not an array"),
    ('{"@context": ["x", {"a": ', "the file ends"),
])
def test_an_outbox_without_top_level_items_is_one_rejection_and_the_account_is_kept(tmp_path, content, reason):
    members = outbox_members([])
    members["outbox.json"] = content.encode()
    write_members(tmp_path, members, as_zip=False)
    got, ledger = read_counted(ARCHIVE, tmp_path)
    assert_reader_balances(ledger)
    (rejection,) = [i for i in got if isinstance(i, Rejection)]
    assert (rejection.source_file, rejection.locator) == ("outbox.json", "file") and reason in rejection.reason
    assert [i.account_key for i in got if isinstance(i, AccountRecord)] == ["mastodon:ana@mastodon.social"]


def test_total_items_that_disagree_with_the_items_are_a_warning(tmp_path, caplog):
    write_members(tmp_path, outbox_members(mastodon_activities()[:2], total=1586), as_zip=False)
    with caplog.at_level(logging.WARNING, logger="pipeline.ingest.readers.mastodon"):
        got, ledger = read_counted(ARCHIVE, tmp_path)
    assert_reader_balances(ledger)
    assert "outbox.json: totalItems says 1586, but its orderedItems array holds 2 items" in caplog.text
    assert any("totalItems says 1586" in n for n in ledger.files["outbox.json"].notes)


def test_an_empty_array_before_the_real_one_loses_nothing(tmp_path, caplog):
    """Two top-level orderedItems (a serializer that wrote a placeholder and the real list): both are read."""
    items = mastodon_activities()[:3]
    members = outbox_members([])
    members["outbox.json"] = _outbox_text('"orderedItems": [], "totalItems": 3, ', items).encode()
    write_members(tmp_path, members, as_zip=False)
    with caplog.at_level(logging.WARNING, logger="pipeline.ingest.readers.mastodon"):
        got, ledger = read_counted(ARCHIVE, tmp_path)
    assert_reader_balances(ledger)
    assert len([i for i in got if isinstance(i, PostRecord)]) == 3 and "2 top-level orderedItems arrays" in caplog.text


# --- hostile records and files through ingest ---------------------------------------------------------------

def _hostile_outbox_archive(tmp_path, as_zip: bool):
    good = [mastodon_note(MASTO_ACTOR, n, f"<p>bien {n} — ok</p>") for n in range(1, 4)]
    early = mastodon_note(MASTO_ACTOR, 10, "<p>early</p>", "0001-01-01 00:00:00+05:00")
    late = mastodon_note(MASTO_ACTOR, 11, "<p>late</p>", "9999-12-31 23:59:59-05:00")
    items = [json.dumps(a, ensure_ascii=False) for a in (  # UTF-8 as Mastodon writes it (the dash is multi-byte)
        good[0], mastodon_note(MASTO_ACTOR, 20, "<p>ESCAPED</p>"), mastodon_note(MASTO_ACTOR, 21, "<p>RAWNUL</p>"),
        early, late)]
    items[1] = items[1].replace("ESCAPED", "bad \\u0000 nul")  # the JSON escape of a NUL
    items[2] = items[2].replace("RAWNUL", "raw \x00 nul")  # a NUL byte inside the string
    items.append('{"type":"Create","deep":' + "[" * 10_000 + "]" * 10_000 + "}")
    items += [json.dumps(good[1], ensure_ascii=False), json.dumps(mastodon_note(MASTO_ACTOR, 22, "<p>BADBYTE</p>"))]
    text = ('{"@context":' + json.dumps(MASTO_CONTEXT) + ',"id":"outbox.json","type":"OrderedCollection",'
            '"totalItems":8,"orderedItems":[' + ",".join(items) + "]}")
    data = text.encode().replace(b"BADBYTE", b"bad \xff byte")  # one byte that is not UTF-8
    members = outbox_members([])
    members["outbox.json"] = data
    return write_members(tmp_path / ("h.zip" if as_zip else "h"), members, as_zip)


@pytest.mark.parametrize("as_zip", [True, False], ids=["zip", "folder"])
def test_hostile_outbox_records_are_repaired_or_quarantined_one_by_one(settings, tmp_path, as_zip):
    export = _hostile_outbox_archive(tmp_path, as_zip)
    ledger = ingest_balanced(settings, "hostile", export)
    prefix = "h.zip!" if as_zip else ""
    outbox = ledger[f"{prefix}outbox.json"]
    assert (outbox["seen"], outbox["stored"], outbox["quarantined"], outbox["repaired"]) == (8, 5, 3, 3)
    reasons = quarantined(settings, "hostile")
    assert set(reasons) == {(f"{prefix}outbox.json", f"record {n}") for n in (4, 5, 6)}
    assert "published '0001-01-01 00:00:00+05:00' is outside" in reasons[(f"{prefix}outbox.json", "record 4")]
    assert "published '9999-12-31 23:59:59-05:00' is outside" in reasons[(f"{prefix}outbox.json", "record 5")]
    assert f"nested deeper than {MAX_JSON_DEPTH}" in reasons[(f"{prefix}outbox.json", "record 6")]
    texts = dict(rows(settings, "select source_locator, text from posts where run_key = 'hostile'"))
    assert texts["record 2"] == "bad  nul" and texts["record 3"] == "raw  nul"
    assert texts["record 8"] == "bad \ufffd byte" and texts["record 7"].startswith("bien 2")


@pytest.mark.parametrize("as_zip", [True, False], ids=["zip", "folder"])
@pytest.mark.parametrize("pretty", [False, True], ids=["one-line", "pretty"])
def test_a_truncated_outbox_keeps_the_posts_before_the_cut(settings, tmp_path, as_zip, pretty):
    activities = real_shaped_activities()[:40]
    members = outbox_members(activities, pretty=pretty)
    whole = members["outbox.json"]
    members["outbox.json"] = whole[:whole.index(activities[30]["id"].encode()) + 10]  # cut inside record 31
    export = write_members(tmp_path / ("t.zip" if as_zip else "t"), members, as_zip)
    ledger = ingest_balanced(settings, "cut", export)
    prefix = "t.zip!" if as_zip else ""
    outbox = ledger[f"{prefix}outbox.json"]
    assert (outbox["seen"], outbox["stored"], outbox["quarantined"]) == (31, 30, 1)
    ((locator, reason),) = [(k[1], v) for k, v in quarantined(settings, "cut").items()]
    assert locator == "record 31" and "truncated" in reason


def test_a_rejected_actor_still_accounts_for_every_post(settings, tmp_path):
    members = outbox_members(mastodon_activities()[:3])
    actor = json.loads(members["actor.json"])
    actor["published"] = "0001-01-01 00:00:00+05:00"
    members["actor.json"] = json.dumps(actor).encode()
    export = write_members(tmp_path, members, as_zip=False)
    ledger = ingest_balanced(settings, "noactor", export)
    assert (ledger["actor.json"]["quarantined"], ledger["outbox.json"]["quarantined"]) == (1, 3)
    reasons = quarantined(settings, "noactor")
    assert "which is not among the export's accounts" in reasons[("outbox.json", "record 1")]


# --- API Account entities --------------------------------------------------------------------------------

def _account(n: int, **fields) -> dict:
    row = {**mastodon_accounts()[0], "id": str(n), "username": f"user{n}", "acct": f"user{n}",
           "url": f"https://mastodon.social/@user{n}"}
    row.update(fields)
    return row


HOSTILE_ACCOUNTS = {  # record number -> (fields, what becomes of it)
    2: ({"note": 42}, "stored"),
    3: ({"note": ["<p>a</p>"]}, "note is a JSON array, not text"),
    4: ({"note": {"html": "<p>a</p>"}}, "note is a JSON object, not text"),
    5: ({"url": "https://[mastodon.social/@user5", "acct": "user5"}, "url 'https://[mastodon.social/@user5' is not a valid URL"),
    6: ({"url": "https://[mastodon.social/@user6", "acct": "user6@mastodon.social"}, "is not a valid URL"),
    7: ({"display_name": "nul \u0000 here"}, "stored"),
    8: ({"followers_count": 2**70}, "followers_count 1180591620717411303424 is out of range"),
    9: ({"following_count": 1e19}, "following_count 10000000000000000000 is out of range"),
    10: ({"created_at": "0001-01-01 00:00:00+05:00"}, "created_at '0001-01-01 00:00:00+05:00' is outside"),
    11: ({"created_at": "9999-12-31 23:59:59-05:00"}, "created_at '9999-12-31 23:59:59-05:00' is outside"),
    12: ({"display_name": "BADBYTE"}, "stored"),
}


def _hostile_accounts_file(path) -> None:
    records = [json.dumps(_account(1, display_name="Investigación"), ensure_ascii=False)]  # UTF-8, as exported
    records += [json.dumps(_account(n, **fields)) for n, (fields, _) in sorted(HOSTILE_ACCOUNTS.items())]
    records.append('{"username": "deep", "x": ' + "[" * 10_000 + "]" * 10_000 + "}")
    records.append(json.dumps(_account(14)))
    path.write_bytes(("[" + ",\n".join(records) + "]").encode().replace(b"BADBYTE", b"bad \xff byte"))


@pytest.mark.parametrize("layout", ["folder", "zip"])
def test_hostile_account_records_are_repaired_or_quarantined_one_by_one(settings, tmp_path, layout):
    folder = tmp_path / "export"
    folder.mkdir()
    _hostile_accounts_file(folder / "accounts.json")
    (folder / "cut.json").write_text(json.dumps([_account(30), _account(31)])[:-40])  # truncated array
    (folder / "lines.jsonl").write_text(json.dumps(_account(40)) + "\n" + "[" * 10_000 + "]" * 10_000 + "\n"
                                        + json.dumps(_account(41, note=[1])) + "\n")
    export = folder
    if layout == "zip":
        export = tmp_path / "export.zip"
        with zipfile.ZipFile(export, "w") as zf:
            for p in sorted(folder.iterdir()):
                zf.write(p, p.name)
    ledger = ingest_balanced(settings, "acc", export, "mastodon")
    prefix = "export.zip!" if layout == "zip" else ""
    reasons = {(f, loc): r for (f, loc), r in quarantined(settings, "acc").items()}
    accounts = f"{prefix}accounts.json"
    for n, (_, outcome) in HOSTILE_ACCOUNTS.items():
        if outcome != "stored":
            assert outcome in reasons[(accounts, f"record {n}")], (n, reasons)
    assert f"nested deeper than {MAX_JSON_DEPTH}" in reasons[(accounts, "record 13")]
    assert ledger[accounts]["seen"] == 14 and ledger[accounts]["stored"] == 5 and ledger[accounts]["repaired"] == 2
    stored = dict(rows(settings, "select source_locator, coalesce(display_name, '') || '|' || coalesce(bio, '')"
                                 " from account_snapshots where run_key = 'acc' and source_file = :f", f=accounts))
    assert stored["record 2"].endswith("|42") and stored["record 7"].startswith("nul  here|")
    assert stored["record 12"].startswith("bad \ufffd byte|")
    cut = ledger[f"{prefix}cut.json"]
    assert (cut["stored"], cut["quarantined"]) == (1, 1)
    lines = ledger[f"{prefix}lines.jsonl"]
    assert (lines["seen"], lines["stored"], lines["quarantined"]) == (3, 1, 2)


def test_entities_that_carry_an_account_and_search_results_are_read(tmp_path):
    admin = {"id": "9", "username": "user9", "domain": None, "created_at": "2020-01-01T00:00:00Z", "email": "a@b.c",
             "account": _account(9)}
    status = {"id": "1", "content": "<p>x</p>", "account": _account(8)}
    (tmp_path / "admin.json").write_text(json.dumps([admin, status]))
    (tmp_path / "search.json").write_text(json.dumps({"accounts": [_account(7), "junk"], "statuses": [],
                                                      "hashtags": []}))
    got, ledger = read_counted(ACCOUNTS, tmp_path)
    assert_reader_balances(ledger)
    assert sorted(i.account_id for i in got if isinstance(i, AccountRecord)) == [
        "user7@mastodon.social", "user8@mastodon.social", "user9@mastodon.social"]
    assert ledger.files["search.json"].seen == 3 and ledger.files["search.json"].rejected == 1
    assert dict(ledger.files["search.json"].ignored) == {"search result (its accounts read one by one)": 1}


def test_one_unreadable_file_does_not_stop_the_others(tmp_path):
    """A member that inflates like a zip bomb is refused while it is read: that file's one rejection, after
    the record read before it; the files after it are read."""
    export = tmp_path / "e.zip"
    with zipfile.ZipFile(export, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.json", json.dumps([_account(1)]))
        zf.writestr("b.json", b"[" + json.dumps(_account(2)).encode() + b"," + b" " * (17 << 20) + b"]")
        zf.writestr("c.json", json.dumps([_account(3)]))
    got, ledger = read_counted(ACCOUNTS, export)
    assert_reader_balances(ledger)
    assert sorted(i.account_id for i in got if isinstance(i, AccountRecord)) == [
        "user1@mastodon.social", "user2@mastodon.social", "user3@mastodon.social"]
    (rejection,) = [i for i in got if isinstance(i, Rejection)]
    assert (rejection.source_file, rejection.locator) == ("e.zip!b.json", "file") and "UnsafeMember" in rejection.reason


def test_two_archives_in_one_folder_and_an_outbox_unpacked_elsewhere(tmp_path, caplog):
    """Each actor.json reads the files beside it; a single actor takes its outbox wherever it was unpacked;
    an actor with no outbox is said in the log (there is no unit to count)."""
    bob = "https://fosstodon.org/users/bob"
    for folder, actor in (("ana", MASTO_ACTOR), ("bob", bob)):
        write_members(tmp_path / "two" / folder, mastodon_archive_members(
            actor, activities=[mastodon_note(actor, 1, "<p>hola</p>")]), as_zip=False)
    got, ledger = read_counted(ARCHIVE, tmp_path / "two")
    assert_reader_balances(ledger)
    assert sorted((p.account_id, p.source_file) for p in got if isinstance(p, PostRecord)) == [
        ("ana@mastodon.social", "ana/outbox.json"), ("bob@fosstodon.org", "bob/outbox.json")]
    members = mastodon_archive_members(activities=[mastodon_note(MASTO_ACTOR, 1, "<p>hola</p>")])
    members["data/outbox.json"] = members.pop("outbox.json")
    write_members(tmp_path / "moved", members, as_zip=False)
    got, ledger = read_counted(ARCHIVE, tmp_path / "moved")
    assert_reader_balances(ledger)
    assert [p.source_file for p in got if isinstance(p, PostRecord)] == ["data/outbox.json"]
    del members["data/outbox.json"]
    write_members(tmp_path / "none", members, as_zip=False)
    with caplog.at_level(logging.WARNING, logger="pipeline.ingest.readers.mastodon"):
        got, ledger = read_counted(ARCHIVE, tmp_path / "none")
    assert_reader_balances(ledger)
    assert "actor.json: no outbox.json beside it" in caplog.text
    assert ledger.files["actor.json"].notes, "the note is a warning of the run, not only a log line"
