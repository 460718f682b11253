"""Issue 24 for the X/Twitter personal archive, X/Twitter IO, Reddit and generic manifest readers: every
unit of every file accounted for (the ingest ledger balances, at reader level and after the database),
and hostile input (bad bytes, out-of-range counts and dates, wrong JSON types, truncated files) costs
only the record it is in, never a traceback or another record."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import SHARED_DATA
from export_fixtures import (
    IO_USER_COLUMNS,
    io_users_rows,
    personal_archive_members,
    reddit_about,
    reddit_listing,
    write_io_export,
    write_personal_archive,
    write_reddit_export,
    write_reddit_history,
)
from ledger_checks import assert_ingest_balances, assert_reader_balances, read_counted

from pipeline.core.db import transaction
from pipeline.core.runs import start_run
from pipeline.errors import UserError
from pipeline.ingest.load import ingest_export
from pipeline.ingest.readers import READERS, AccountRecord, PostRecord, Rejection
from pipeline.ingest.readers.base import Ignored
from pipeline.ingest.readers.twitter_io import NOT_IO_CSV

CUBA = SHARED_DATA / "twitter_io" / "cuba_092020_users_csv_hashed.csv"
EXPORTS = SHARED_DATA / "exports"


def _kinds(items: list) -> dict[str, list]:
    out: dict[str, list] = {"accounts": [], "posts": [], "rejected": [], "ignored": []}
    for item in items:
        for key, kind in (("accounts", AccountRecord), ("posts", PostRecord), ("rejected", Rejection),
                          ("ignored", Ignored)):
            if isinstance(item, kind):
                out[key].append(item)
    return out


def balanced(settings, run_key: str, path: Path, fmt: str = "auto") -> dict[str, dict]:
    """Ingest for real under a started run, and check the stored ledger balances file by file."""
    start_run(settings, run_key, str(path), fmt)
    return assert_ingest_balances(settings, run_key, path, fmt)


def _quarantine(settings, run_key: str) -> list[tuple[str, str, str]]:
    with transaction(settings) as conn:
        return [tuple(r) for r in conn.execute(sa.text(
            "select source_file, locator, reason from quarantine where run_key = :k and stage = 'ingest'"
            " order by source_file, locator"), {"k": run_key})]


# --- every real sample of these formats, and each reader's synthetic fixture ---------------------------

def _real_samples() -> list:
    paths = [SHARED_DATA / "twitter_io", EXPORTS / "coordination" / "CooRTweet-russian-as-io",
             *sorted((EXPORTS / "coordination" / "QUT-cnt").glob("*-as-io")),
             *sorted(p for p in (EXPORTS / "reddit").glob("*") if p.is_dir())]
    named = [pytest.param(p, id=p.name, marks=[pytest.mark.slow] if "CooRTweet" in p.name else [])
             for p in paths if p.exists()]
    return named or [pytest.param(None, id="absent")]


@pytest.mark.parametrize("path", _real_samples())
def test_every_real_sample_ingests_with_a_balanced_ledger(settings, path):
    if path is None:
        pytest.skip(f"no real X IO or Reddit sample under {SHARED_DATA}")
    ledger = balanced(settings, "real", path)
    assert sum(row["stored"] for row in ledger.values()) > 0


def test_synthetic_fixtures_of_each_reader_balance(settings, tmp_path):
    manifest = tmp_path / "generic"
    manifest.mkdir()
    (manifest / "manifest.csv").write_text("platform,account_id,handle\nx,1,ana\nx,2,bob\nx,,noid\n")
    reddit = _reddit_with_history(tmp_path / "reddit")
    for fmt, path in (("twitter_archive", write_personal_archive(tmp_path / "a.zip")),
                      ("twitter_io", write_io_export(tmp_path / "io")), ("reddit", reddit), ("generic", manifest)):
        items, reader_ledger = read_counted(READERS[fmt], path)
        assert_reader_balances(reader_ledger)
        ledger = balanced(settings, fmt, path, fmt)
        assert sum(r["stored"] for r in ledger.values()) == len(_kinds(items)["accounts"]) + len(_kinds(items)["posts"])


# --- X/Twitter personal archive ---------------------------------------------------------------------

def test_personal_archive_counts_the_account_and_each_tweet_once(settings, tmp_path):
    """The tweets are read once (the account's post count is theirs); profile.js, manifest.js,
    follower.js and following.js are merged into the account, not units of their own."""
    members = personal_archive_members()
    tweets = json.loads(members["data/tweets.js"].decode().split("=", 1)[1])
    ledger = balanced(settings, "a", write_personal_archive(tmp_path / "a.zip"))
    assert set(ledger) == {"data/account.js", "data/tweets.js"}
    assert (ledger["data/account.js"]["seen"], ledger["data/account.js"]["stored"]) == (1, 1)
    assert (ledger["data/tweets.js"]["seen"], ledger["data/tweets.js"]["stored"]) == (len(tweets), len(tweets))
    with transaction(settings) as conn:
        assert conn.execute(sa.text("select posts, followers from account_snapshots")).one() == (len(tweets), 3)


def test_personal_archive_unsafe_members_are_counted(settings, tmp_path):
    extra = {"../../evil.js": b"x", "/etc/cron.d/x": b"x"}
    archive = write_personal_archive(tmp_path / "drop" / "a.zip", extra)
    ledger = balanced(settings, "a", archive)
    assert (ledger["a.zip"]["seen"], ledger["a.zip"]["quarantined"]) == (len(extra), len(extra))
    assert ledger["data/account.js"]["stored"] == 1


def _archive_folder(root: Path, changes: dict[str, bytes]) -> Path:
    for name, data in {**personal_archive_members(), **changes}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def test_personal_archive_damaged_auxiliary_files_cost_only_what_they_hold(settings, tmp_path):
    members = personal_archive_members()
    root = _archive_folder(tmp_path / "x", {
        "data/profile.js": members["data/profile.js"][:40],  # cut: the account is read without the profile
        "data/follower.js": members["data/follower.js"][:-30],  # cut: the follower count is unknown, not wrong
        "data/manifest.js": b"window.__THAR_CONFIG = {not json",
    })
    ledger = balanced(settings, "a", root)
    for name in ("data/profile.js", "data/follower.js", "data/manifest.js"):
        assert (ledger[name]["seen"], ledger[name]["quarantined"], ledger[name]["stored"]) == (1, 1, 0), name
    with transaction(settings) as conn:
        assert conn.execute(sa.text("select handle, bio, followers, following from account_snapshots")).one() == (
            "maria_lopez84", None, None, 1)
    reasons = {r[0]: r[2] for r in _quarantine(settings, "a")}
    assert reasons["data/manifest.js"].startswith("unreadable archive manifest")


def test_personal_archive_second_account_and_unattributable_tweets(settings, tmp_path):
    account = json.loads(personal_archive_members()["data/account.js"].decode().split("=", 1)[1])
    two = "window.YTD.account.part0 = " + json.dumps(account + [{"account": {"accountId": "2"}}])
    items, reader_ledger = read_counted(READERS["twitter_archive"], _archive_folder(tmp_path / "two", {
        "data/account.js": two.encode()}))
    assert_reader_balances(reader_ledger)
    got = _kinds(items)
    assert len(got["accounts"]) == 1 and [r.locator for r in got["rejected"]] == ["record 2"]
    assert got["rejected"][0].reason.startswith("a second account record")
    # no account id anywhere (account.js lacks it, no manifest): each tweet says why it was not kept
    no_id = "window.YTD.account.part0 = " + json.dumps([{"account": {"username": "x"}}])
    root = _archive_folder(tmp_path / "noid", {"data/account.js": no_id.encode()})
    (root / "data" / "manifest.js").unlink()
    ledger = balanced(settings, "noid", root)
    assert ledger["data/tweets.js"]["quarantined"] == ledger["data/tweets.js"]["seen"] == 2
    reasons = [r[2] for r in _quarantine(settings, "noid")]
    assert reasons.count("a tweet with no account to attribute it to (accountId is missing)") == 2
    assert "accountId is missing" in reasons


# --- X/Twitter IO ------------------------------------------------------------------------------------

def _tweets_only(root: Path) -> Path:
    export = write_io_export(root, avatar_url=None)
    (export / "cuba_092020_users_csv_hashed.csv").unlink()
    return export


def test_io_accounts_from_a_tweets_file_are_inferred(settings, tmp_path):
    export = _tweets_only(tmp_path / "io")
    with (export / "cuba_092020_tweets_csv_hashed.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    ledger = balanced(settings, "t", export)
    row = ledger["cuba_092020_tweets_csv_hashed.csv"]
    assert (row["seen"], row["inferred"]) == (len(rows), len({r["userid"] for r in rows}))
    assert row["stored"] == len(rows) + len({r["userid"] for r in rows})


def test_io_tweets_of_a_user_whose_users_row_is_lost_are_kept(settings, tmp_path):
    export = write_io_export(tmp_path / "io", avatar_url=None)
    users = export / "cuba_092020_users_csv_hashed.csv"
    lost = io_users_rows()[1]
    with users.open(newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["userid"] != lost["userid"]]
    with users.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, IO_USER_COLUMNS, quoting=csv.QUOTE_ALL)
        writer.writeheader()
        writer.writerows(rows)
    ledger = balanced(settings, "lost", export)
    tweets = ledger["cuba_092020_tweets_csv_hashed.csv"]
    assert (tweets["seen"], tweets["inferred"], tweets["stored"], tweets["quarantined"]) == (3, 1, 4, 0)
    with transaction(settings) as conn:
        row = conn.execute(sa.text("select handle, location, followers from account_snapshots"
                                   " where account_key = :k"), {"k": f"twitter:{lost['userid']}"}).one()
    assert tuple(row) == (lost["user_screen_name"], lost["user_reported_location"], int(lost["follower_count"]))


def test_io_author_account_that_cannot_be_made_is_counted(tmp_path):
    export = _tweets_only(tmp_path / "io")
    path = export / "cuba_092020_tweets_csv_hashed.csv"
    path.write_text(path.read_text(encoding="utf-8").replace('"12003"', '"1e+19"'), encoding="utf-8")
    items, ledger = read_counted(READERS["twitter_io"], export)
    assert_reader_balances(ledger)
    assert [r.reason for r in _kinds(items)["rejected"]] == ["follower_count '1e+19' is not a whole number"]


def test_io_csv_of_another_kind_is_ignored_not_lost(settings, tmp_path):
    export = write_io_export(tmp_path / "io")
    (export / "notes.csv").write_text("date,note\n2020-01-01,release notes\n")
    ledger = balanced(settings, "o", export)
    assert ledger["notes.csv"]["ignored"] == {NOT_IO_CSV: 1}
    assert "avatars.csv" not in ledger  # auxiliary: merged into the accounts


def test_io_auxiliary_files_count_only_their_rejections(settings, tmp_path):
    export = write_io_export(tmp_path / "io")
    (export / "avatars.csv").write_text("userid,avatar\n,https://x.example/a.jpg\nabc,https://x.example/b.jpg\n")
    (export / "broken_media.zip").write_bytes(b"PK\x03\x04 not really a zip")
    with zipfile.ZipFile(export / "more_media.zip", "w") as zf:
        zf.writestr("../../up.jpg", b"x")
    ledger = balanced(settings, "aux", export)
    assert {name: (row["seen"], row["quarantined"]) for name, row in ledger.items()
            if name.endswith((".zip", "avatars.csv"))} == {"avatars.csv": (1, 1), "broken_media.zip": (1, 1),
                                                          "more_media.zip": (1, 1)}
    assert sum(row["stored"] for row in ledger.values()) == 6  # 3 accounts and 3 posts, as without the damage


def _cut_header(text: str, keep: int) -> str:
    """The users CSV with its header cut after ``keep`` characters (the line end kept)."""
    header, rest = text.split("\n", 1)
    return header[:keep] + "\n" + rest


def test_io_users_file_with_a_truncated_header_is_said(settings, tmp_path):
    export = write_io_export(tmp_path / "io", avatar_url=None)
    users = export / "cuba_092020_users_csv_hashed.csv"
    original = users.read_text(encoding="utf-8")
    # the header's start lost (the first line cut in the middle): userid and user_screen_name are gone
    header = original.split("\n", 1)[0]
    users.write_text(header[header.index("screen_name") + 3:] + "\n" + original.split("\n", 1)[1], encoding="utf-8")
    ledger = balanced(settings, "h", export)
    (row,) = [r for r in _quarantine(settings, "h") if r[0] == users.name]
    assert row[1:] == ("file", "IO users CSV whose header lacks userid, user_screen_name (header truncated or "
                               "damaged?); its rows were not read")
    assert ledger[users.name]["seen"] == 1  # the file stands for its unread rows
    assert ledger["cuba_092020_tweets_csv_hashed.csv"]["seen"] == 3  # the tweets are still read
    # given alone, the file is the whole export: an error that names it and what its header lacks
    start_run(settings, "alone", str(users), "auto")
    with pytest.raises(UserError, match=r"cuba_092020_users_csv_hashed.csv: IO users CSV whose header lacks "
                                        r"userid, user_screen_name"):
        ingest_export(settings, "alone", users)
    # the header's end lost: a warning naming the missing columns; each row that no longer fits is rejected
    users.write_text(_cut_header(original, original.index(',"user_reported_location"')), encoding="utf-8")
    start_run(settings, "tail", str(users), "auto")
    result = ingest_export(settings, "tail", users)
    assert f"{users.name}: IO users CSV header lacks {', '.join(IO_USER_COLUMNS[3:])} (truncated or damaged " \
           "header?); its rows are read without those columns" in result.warnings
    rows = [r for r in _quarantine(settings, "tail") if r[0] == users.name]
    assert [r[2] for r in rows] == ["more cells than header columns (broken quoting?)"] * len(io_users_rows())


@pytest.mark.skipif(not CUBA.is_file(), reason=f"the real IO users file is not at {CUBA}")
@pytest.mark.parametrize("bad", [b"\xff", b"\x00"], ids=["invalid-utf8", "nul"])
def test_real_io_users_file_with_a_bad_byte_keeps_every_account(settings, tmp_path, bad):
    data = CUBA.read_bytes()
    with CUBA.open(newline="", encoding="utf-8") as fh:
        expected = sum(1 for _ in csv.DictReader(fh))
    at = data.index(b"Joven Cubano") + 3
    path = tmp_path / CUBA.name
    path.write_bytes(data[:at] + bad + data[at:])
    ledger = balanced(settings, "bad", path)
    assert ledger[CUBA.name]["stored"] == expected == 526
    assert ledger[CUBA.name]["repaired"] == 1 and ledger[CUBA.name]["quarantined"] == 0


# --- Reddit ------------------------------------------------------------------------------------------

def test_reddit_listing_children_are_units_and_other_things_ignored(settings, tmp_path):
    root = tmp_path / "reddit"
    root.mkdir()
    post = {"id": "p1", "name": "t3_p1", "author": "mapmaker", "author_fullname": "t2_abc12",
            "created_utc": 1700000000.0, "title": "A map", "is_self": True}
    listing = reddit_listing("t3", [post])
    listing["data"]["children"] += [{"kind": "more", "data": {"count": 4, "children": ["a", "b"]}},
                                    {"kind": "t5", "data": {"display_name": "maps"}},
                                    {"kind": "t2", "data": reddit_about("spez", "1w72")["data"]},
                                    "not a thing"]
    (root / "mixed.json").write_text(json.dumps(listing))
    (root / "empty.json").write_text(json.dumps(reddit_listing("t1", [])))
    ledger = balanced(settings, "r", root)
    mixed = ledger["mixed.json"]
    assert mixed["seen"] == len(listing["data"]["children"])
    assert mixed["inferred"] == 1  # mapmaker: known only as the author of t3_p1
    assert mixed["ignored"] == {"Listing 'more' stub (children not loaded)": 1, "subreddit (t5)": 1}
    assert (mixed["stored"], mixed["quarantined"]) == (3, 1)  # the post, spez (t2 child), mapmaker; "not a thing"
    assert ledger["empty.json"] == {**ledger["empty.json"], "seen": 1, "ignored": {"empty Listing": 1}}
    with transaction(settings) as conn:
        accounts = dict(conn.execute(sa.text("select account_key, handle from account_snapshots")).all())
    assert accounts == {"reddit:abc12": "mapmaker", "reddit:1w72": "spez"}


def test_reddit_history_ledger_counts_authors_as_inferred(settings, tmp_path):
    ledger = balanced(settings, "h", write_reddit_history(tmp_path / "r"))
    assert ledger["mapmaker/comments.json"]["inferred"] == 1  # lurker
    assert ledger["mapmaker/submitted.json"]["inferred"] == 0  # mapmaker has an about.json
    assert ledger["mapmaker/submitted.json"]["quarantined"] == 1  # the [deleted] author's post


# --- generic manifest ---------------------------------------------------------------------------------

def test_generic_header_only_file_is_registered(settings, tmp_path):
    (tmp_path / "manifest.csv").write_text("platform,account_id,handle\n")
    start_run(settings, "empty", str(tmp_path), "auto")
    result = ingest_export(settings, "empty", tmp_path)
    with transaction(settings) as conn:
        from pipeline.ingest.load import load_ledger

        ledger = load_ledger(conn, "empty")
    assert ledger["manifest.csv"]["seen"] == 0 and result.accounts == 0
    assert any("manifest.csv was read but nothing was stored" in w for w in result.warnings)


def test_generic_json_lines_of_other_shapes(settings, tmp_path):
    lines = [json.dumps({"platform": "x", "account_id": "1"}), "[1, 2]", "7", "{broken",
             json.dumps({"platform": "x", "account_id": "2", "followers": [3]})]
    (tmp_path / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    ledger = balanced(settings, "j", tmp_path)
    assert (ledger["manifest.jsonl"]["seen"], ledger["manifest.jsonl"]["stored"]) == (len(lines), 1)


# --- hostile values through ingest_export, for each reader --------------------------------------------

MARK = "@@X@@"
QUOTED = b'"' + MARK.encode() + b'"'
# benign value per field kind (the baseline), and the hostile mutations: (kind, bytes, outcome)
BENIGN = {"text": b'"Jose"', "count": b"7", "date": b'"2019-01-01 00:00:00"', "type": b'"Jose"'}
MUTATIONS = {
    "invalid-utf8": ("text", {"json": b'"Jos\xc3\xa9 \xff fin"', "csv": b'"Jos\xc3\xa9 \xff fin"'}, "repaired"),
    "nul": ("text", {"json": b'"Jo\\u0000se"', "csv": b'"Jo\x00se"'}, "repaired"),
    "nul-raw": ("text", {"json": b'"Jo\x00se"'}, "repaired"),  # a raw NUL byte inside a JSON string
    "count-2**70": ("count", {"json": str(2**70).encode(), "csv": str(2**70).encode()}, "quarantined"),
    "count-1e19": ("count", {"json": b"1e+19", "csv": b"1e+19"}, "quarantined"),
    "date-0001": ("date", {"json": b'"0001-01-01 00:00:00+05:00"', "csv": b'"0001-01-01 00:00:00+05:00"'},
                  "quarantined"),
    "date-9999": ("date", {"json": b'"9999-12-31 23:59:59-05:00"', "csv": b'"9999-12-31 23:59:59-05:00"'},
                  "quarantined"),
    "json-list": ("type", {"json": b'["a", "b"]'}, "quarantined"),
    "json-object": ("type", {"json": b'{"a": {"b": 1}}'}, "quarantined"),
    "json-number": ("type", {"json": b"5"}, "kept"),
    "truncated": ("text", {"json": b"", "csv": b""}, "quarantined"),
}


def _hostile_archive(root: Path, kind: str) -> tuple[Path, Path, str]:
    """An unpacked archive; the field is in the second (last) tweet."""
    members = personal_archive_members()
    tweets = json.loads(members["data/tweets.js"].decode().split("=", 1)[1])
    field = {"text": "full_text", "date": "created_at", "type": "full_text"}[kind]
    tweets[-1]["tweet"][field] = MARK
    changed = {"data/tweets.js": ("window.YTD.tweets.part0 = " + json.dumps(tweets, ensure_ascii=False)).encode()}
    return _archive_folder(root, changed), root / "data" / "tweets.js", field


def _hostile_io(root: Path, kind: str) -> tuple[Path, Path, str]:
    """The IO release with a fourth account (no tweets) last in the users file, the field in it."""
    export = write_io_export(root, avatar_url=None)
    field = {"text": "user_profile_description", "count": "follower_count", "date": "account_creation_date"}[kind]
    row = {**io_users_rows()[1], "userid": "target", "user_screen_name": "target",
           "user_profile_description": "Habana, café", field: MARK}
    buf = io.StringIO()
    csv.DictWriter(buf, IO_USER_COLUMNS, quoting=csv.QUOTE_ALL, lineterminator="\n").writerow(row)
    users = export / "cuba_092020_users_csv_hashed.csv"
    users.write_bytes(users.read_bytes() + buf.getvalue().encode())
    return export, users, field


def _reddit_with_history(root: Path) -> Path:
    """The about.json folder and mapmaker's listings (its about.json is the folder's: not twice)."""
    write_reddit_export(root)
    write_reddit_history(root / "history")
    (root / "history" / "mapmaker" / "about.json").unlink()
    return root


def _hostile_reddit(root: Path, kind: str) -> tuple[Path, Path, str]:
    """The about.json folder and a history, plus a target account in its own about.json."""
    _reddit_with_history(root)
    about = reddit_about("target", "tgt1")
    about["data"]["subreddit"]["public_description"] = "Mapas de la Habana, café"
    field = {"text": "public_description", "count": "subscribers", "date": "created_utc", "type": "title"}[kind]
    (about["data"] if field == "created_utc" else about["data"]["subreddit"])[field] = MARK
    (root / "target").mkdir()
    (root / "target" / "about.json").write_text(json.dumps(about, ensure_ascii=False), encoding="utf-8")
    return root, root / "target" / "about.json", field


def _hostile_generic(root: Path, kind: str) -> tuple[Path, Path, str]:
    """JSON lines: two plain accounts, the target last."""
    field = {"text": "bio", "count": "followers", "date": "created_at", "type": "handle"}[kind]
    rows = [{"platform": "x", "account_id": "1", "bio": "José"}, {"platform": "x", "account_id": "2"},
            {"platform": "x", "account_id": "3", "bio": "café", field: MARK}]
    root.mkdir(parents=True)
    path = root / "manifest.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    return root, path, field


HOSTILE = {"twitter_archive": (_hostile_archive, "json"), "twitter_io": (_hostile_io, "csv"),
           "reddit": (_hostile_reddit, "json"), "generic": (_hostile_generic, "json")}
CASES = [pytest.param(fmt, mutation, id=f"{fmt}-{mutation}")
         for fmt, (_, style) in HOSTILE.items() for mutation, (kind, values, _) in MUTATIONS.items()
         if style in values and not (fmt == "twitter_archive" and kind == "count")  # an archive has no counts
         ]


def _build(fmt: str, root: Path, kind: str, value: bytes | None) -> tuple[Path, Path, str]:
    build, _ = HOSTILE[fmt]
    export, target, field = build(root, kind)
    data = target.read_bytes()
    assert data.count(QUOTED) == 1
    if value == b"":  # truncated in the middle of the target record
        target.write_bytes(data[:data.index(QUOTED)])
    else:
        target.write_bytes(data.replace(QUOTED, value if value is not None else BENIGN[kind]))
    return export, target, field


@pytest.mark.parametrize(("fmt", "mutation"), CASES)
def test_hostile_value_costs_only_its_record(settings, tmp_path, fmt, mutation):
    kind, values, outcome = MUTATIONS[mutation]
    style = HOSTILE[fmt][1]
    baseline, _, _ = _build(fmt, tmp_path / "baseline", kind, None)
    before = _kinds(read_counted(READERS[fmt], baseline)[0])
    kept_before = len(before["accounts"]) + len(before["posts"])
    export, target, field = _build(fmt, tmp_path / "hostile", kind, values[style])
    items, reader_ledger = read_counted(READERS[fmt], export)  # nothing escapes as an exception
    assert_reader_balances(reader_ledger)
    ledger = balanced(settings, "hostile", export, fmt)
    stored = sum(row["stored"] for row in ledger.values())
    quarantined = sum(row["quarantined"] for row in ledger.values())
    if outcome in ("kept", "repaired"):
        assert (stored, quarantined) == (kept_before, len(before["rejected"]))
    else:
        assert (stored, quarantined) == (kept_before - 1, len(before["rejected"]) + 1)
        label = target.relative_to(export).as_posix()
        assert ledger[label]["quarantined"] == 1
        reasons = [r[2] for r in _quarantine(settings, "hostile") if r[0] == label]
        if mutation != "truncated":
            assert any(field in reason for reason in reasons), reasons
    if outcome == "repaired":
        assert sum(row["repaired"] for row in ledger.values()) == 1
        texts = [v for r in _kinds(items)["accounts"] + _kinds(items)["posts"] for v in vars(r).values()
                 if isinstance(v, str)]
        assert any("\ufffd fin" in t for t in texts) if mutation == "invalid-utf8" else "Jose" in texts
