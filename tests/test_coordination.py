"""co_repost / co_link / co_post edges on a real PostgreSQL: hand-made cases with exact expected edges,
idempotent reruns, and agreement with QUT's coordination-network-toolkit on generated data."""

from __future__ import annotations

import csv
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from pipeline.config import NetworkParams
from pipeline.core.db import ensure_schema, insert_rows, transaction
from pipeline.core.runs import start_run
from pipeline.errors import UserError
from pipeline.networks.coactivity import build_post_edges

T0 = datetime(2026, 1, 1, tzinfo=UTC)
RUN = "investigation:co"


def post(account: str, post_id: str, seconds: float, reposted: str | None = None, urls=(), text: str | None = None,
         replied: str | None = None, hashtags=()):
    return {"account": account, "post_id": post_id, "seconds": seconds, "reposted": reposted, "urls": list(urls),
            "text": text, "replied": replied, "hashtags": list(hashtags)}


def load_posts(settings, posts: list[dict], run_key: str = RUN) -> None:
    ensure_schema(settings)
    start_run(settings, run_key)
    with transaction(settings) as conn:
        accounts = sorted({p["account"] for p in posts})
        insert_rows(conn, "insert into accounts (account_key, platform, account_id, first_seen_run)"
                          " values (:k, 'x', :i, :r) on conflict do nothing",
                    ({"k": f"x:{a}", "i": a, "r": run_key} for a in accounts))
        insert_rows(conn, "insert into posts (run_key, account_key, post_id, posted_at, reposted_id, replied_id, urls,"
                          " hashtags, text, source_file, source_locator)"
                          " values (:r, :k, :p, :t, :rp, :rr, :u, :h, :tx, 'test', :p)",
                    ({"r": run_key, "k": f"x:{p['account']}", "p": p["post_id"],
                      "t": None if p["seconds"] is None else T0 + timedelta(seconds=p["seconds"]),
                      "rp": p["reposted"], "rr": p.get("replied"), "u": p["urls"], "h": p.get("hashtags") or [],
                      "tx": p["text"]} for p in posts))


def run_edges(settings, params: NetworkParams | None = None, run_key: str = RUN) -> dict[str, int]:
    with transaction(settings) as conn:
        return build_post_edges(conn, run_key, params or NetworkParams())


def edges(settings, edge_type: str, run_key: str = RUN) -> dict[tuple[str, str], dict]:
    with transaction(settings) as conn:
        rows = conn.execute(sa.text("select a_key, b_key, weight, params, evidence from edges"
                                    " where run_key = :k and edge_type = :t"), {"k": run_key, "t": edge_type})
        return {(r.a_key.removeprefix("x:"), r.b_key.removeprefix("x:")):
                {"weight": r.weight, "params": r.params, "evidence": r.evidence} for r in rows}


def weights(settings, edge_type: str) -> dict[tuple[str, str], float]:
    return {k: v["weight"] for k, v in edges(settings, edge_type).items()}


def test_co_repost_window_is_inclusive_and_symmetric(settings):
    load_posts(settings, [
        post("a", "a1", 0, "X1"), post("b", "b1", 60, "X1"), post("c", "c1", 61, "X1"),
        post("a", "a2", 1000, "X2"), post("b", "b2", 1060, "X2"), post("c", "c2", 1061, "X2"),
        # b before a: the window looks both ways
        post("d", "d1", 5000, "X3"), post("e", "e1", 4990, "X3"), post("d", "d2", 6000, "X4"), post("e", "e2", 5990, "X4"),
    ])
    counts = run_edges(settings)
    # a-b: 60 s apart (boundary, included); a-c: 61 s (out); b-c: 1 s; d-e: 10 s, e first.
    assert weights(settings, "co_repost") == {("a", "b"): 2.0, ("b", "c"): 2.0, ("d", "e"): 2.0}
    assert counts == {"co_repost": 3, "co_link": 0, "co_post": 0, "co_reply": 0, "co_hashtag": 0}
    edge = edges(settings, "co_repost")[("a", "b")]
    assert edge["params"] == {"co_window_seconds": 60.0, "co_min_weight": 2, "co_evidence_examples": 5}
    ev = edge["evidence"]
    assert ev["weight_a_to_b"] == ev["weight_b_to_a"] == ev["co_occurrences"] == 2
    assert [(x["reposted_id"], x["a_post"], x["b_post"], x["delta_seconds"]) for x in ev["examples"]] == [
        ("X1", "a1", "b1", 60.0), ("X2", "a2", "b2", 60.0)]
    assert ev["examples"][0]["a_at"] == "2026-01-01T00:00:00+00:00"


def test_co_repost_min_weight_and_window_parameters(settings):
    posts = [post("a", f"a{i}", 100 * i, f"X{i}") for i in range(3)]
    posts += [post("b", f"b{i}", 100 * i + 5, f"X{i}") for i in range(3)]
    posts += [post("c", f"c{i}", 100 * i + 30, f"X{i}") for i in range(2)]
    load_posts(settings, posts)
    run_edges(settings, NetworkParams(co_min_weight=3))
    assert weights(settings, "co_repost") == {("a", "b"): 3.0}  # a-c and b-c have 2 < 3
    run_edges(settings, NetworkParams(co_min_weight=2, co_window_seconds=10))
    assert weights(settings, "co_repost") == {("a", "b"): 3.0}  # c is 25-30 s away: outside 10 s
    run_edges(settings, NetworkParams(co_min_weight=2, co_window_seconds=30))
    assert weights(settings, "co_repost") == {("a", "b"): 3.0, ("a", "c"): 2.0, ("b", "c"): 2.0}
    assert edges(settings, "co_repost")[("a", "c")]["params"]["co_window_seconds"] == 30.0


def test_same_account_repeats_make_no_self_edge_and_count_per_direction(settings):
    load_posts(settings, [
        # a reposts X twice within the window: no a-a edge
        post("a", "a1", 0, "X"), post("a", "a2", 10, "X"),
        # b reposts X once, near both of a's reposts: w(a->b) = 2 distinct posts of a, w(b->a) = 1
        post("b", "b1", 20, "X"),
        # an account reposting its own post counts like any repost; a lone account makes no edge
        post("c", "c1", 0, "c0"), post("c", "c2", 1, "c0"), post("c", "c0", 0, None, text="original"),
    ])
    run_edges(settings)
    got = edges(settings, "co_repost")
    assert list(got) == [("a", "b")]
    ev = got[("a", "b")]["evidence"]
    assert got[("a", "b")]["weight"] == 2.0
    assert (ev["weight_a_to_b"], ev["weight_b_to_a"], ev["co_occurrences"]) == (2, 1, 2)
    # min weight applies per direction, as QUT: neither direction reaches 3
    run_edges(settings, NetworkParams(co_min_weight=3))
    assert edges(settings, "co_repost") == {}


def test_posts_without_time_are_skipped(settings):
    load_posts(settings, [post("a", "a1", None, "X"), post("b", "b1", None, "X"),
                          post("a", "a2", 0, "Y"), post("b", "b2", 1, "Y")])
    run_edges(settings, NetworkParams(co_min_weight=1))
    assert weights(settings, "co_repost") == {("a", "b"): 1.0}


def test_co_post_normalises_text_like_qut(settings):
    load_posts(settings, [
        post("a", "a1", 0, text="Vote  for @bob NOW!"), post("b", "b1", 30, text="vote for now!"),
        post("a", "a2", 100, text="Ünïcode\u00a0TEXT"), post("b", "b2", 110, text="ünïcode text"),
        # only mentions: empty after normalisation, never matched (QUT would match empty texts)
        post("a", "a3", 200, text="@x"), post("b", "b3", 200, text="@y @z"),
        post("a", "a4", 300, text="@x"), post("c", "c4", 300, text="@y"),
        # reposts are not co_post material even with the same text
        post("a", "a5", 400, "R", text="same words"), post("c", "c5", 400, "R", text="same words"),
        post("a", "a6", 500, "S", text="same words"), post("c", "c6", 500, "S", text="same words"),
    ])
    run_edges(settings)
    got = edges(settings, "co_post")
    assert {k: v["weight"] for k, v in got.items()} == {("a", "b"): 2.0}
    assert [x["text"] for x in got[("a", "b")]["evidence"]["examples"]] == ["vote for now!", "ünïcode text"]
    assert weights(settings, "co_repost") == {("a", "c"): 2.0}


def test_co_link_normalises_urls_and_ignores_reposts(settings):
    load_posts(settings, [
        post("a", "a1", 0, urls=["https://www.Example.com/a/?utm_source=x&id=7#top"]),
        post("b", "b1", 5, urls=["http://example.com/a?id=7"]),
        # two URLs of one post matching two of the other's: one post each way, weight counts posts
        post("a", "a2", 100, urls=["https://news.example/x", "https://news.example/y"]),
        post("b", "b2", 101, urls=["https://news.example/y/", "https://NEWS.example/x"]),
        # URLs in reposts do not count (as QUT)
        post("a", "a3", 200, "R", urls=["https://z.example/"]), post("c", "c3", 200, "R", urls=["https://z.example/"]),
        post("a", "a4", 300, "S", urls=["https://z.example/"]), post("c", "c4", 300, "S", urls=["https://z.example/"]),
        # one post naming one page twice (two spellings) is one URL of that post
        post("d", "d7", 600, urls=["https://dup.example/p", "http://www.dup.example/p/"]),
        post("e", "e7", 601, urls=["https://dup.example/p"]),
        post("d", "d8", 700, urls=["https://dup.example/q"]), post("e", "e8", 701, urls=["https://dup.example/q"]),
        # the path keeps its case: different pages
        post("a", "a5", 400, urls=["https://q.example/A"]), post("c", "c5", 400, urls=["https://q.example/a"]),
        post("a", "a6", 500, urls=["https://q.example/B"]), post("c", "c6", 500, urls=["https://q.example/b"]),
    ])
    run_edges(settings)
    got = edges(settings, "co_link")
    assert {k: v["weight"] for k, v in got.items()} == {("a", "b"): 2.0, ("d", "e"): 2.0}
    assert got[("d", "e")]["evidence"]["co_occurrences"] == 2
    ev = got[("a", "b")]["evidence"]
    assert (ev["weight_a_to_b"], ev["weight_b_to_a"], ev["co_occurrences"]) == (2, 2, 3)
    assert {x["url"] for x in ev["examples"]} == {"example.com/a?id=7", "news.example/x", "news.example/y"}


def test_normalise_functions(settings):
    ensure_schema(settings)
    from coordination_network_toolkit.similarity import message_preprocessor

    texts = ["Hello  @World how\tARE you", "@a @b", "  Mixed\u3000space\u2003here ", "x@y.z mail", "É @É é"]
    with transaction(settings) as conn:
        for text in texts:
            ours = conn.execute(sa.text("select normalise_post_text(:t)"), {"t": text}).scalar()
            assert ours == (message_preprocessor(text) or None), text
        urls = {
            "https://WWW.Example.COM:443/Path/?utm_medium=a&b=1&fbclid=z#f": "example.com/Path?b=1",
            "example.com/Path?b=1": "example.com/Path?b=1",
            "http://example.com": "example.com",
            "https://example.com/?utm_source=a": "example.com",
            "  ": None,
        }
        for url, expected in urls.items():
            assert conn.execute(sa.text("select normalise_url(:u)"), {"u": url}).scalar() == expected, url


def test_rerun_is_idempotent_and_keeps_other_edges(settings):
    from conftest import table_contents

    rng = random.Random(3)
    posts = [post(f"u{rng.randrange(12)}", f"p{n}", rng.randrange(0, 600), f"T{rng.randrange(8)}") for n in range(300)]
    load_posts(settings, posts)
    with transaction(settings) as conn:
        conn.execute(sa.text("insert into edges values (:k, 'identical_avatar', 'x:u0', 'x:u1', 1, '{}', '{}')"),
                     {"k": RUN})
    first_counts = run_edges(settings)
    first = table_contents(settings)
    assert first_counts["co_repost"] > 0
    assert run_edges(settings) == first_counts
    assert table_contents(settings) == first
    assert len([r for r in first["edges"] if ("edge_type", "'identical_avatar'") in r]) == 1


def test_partitioned_pairs_equal_single_pass(settings, caplog):
    """Over the pair budget the pairs are spilled to one file per account partition and reduced one
    partition at a time; the edges, weights and evidence must equal those of one pass."""
    rng = random.Random(5)
    posts = [post(f"u{rng.randrange(40)}", f"p{n}", rng.randrange(0, 900), f"T{rng.randrange(15)}",
                  text=None) for n in range(1500)]
    # co_link: a post with several URLs has several rows, possibly in different partitions' pairs
    posts += [post(f"u{rng.randrange(40)}", f"l{n}", rng.randrange(0, 900),
                   urls=[f"https://e.org/{rng.randrange(12)}" for _ in range(rng.randrange(1, 4))]) for n in range(800)]
    load_posts(settings, posts)
    with transaction(settings) as conn:
        build_post_edges(conn, RUN, NetworkParams(), ["co_repost", "co_link"])
    single = {t: edges(settings, t) for t in ("co_repost", "co_link")}
    caplog.set_level("INFO", logger="pipeline.networks.coactivity")
    with transaction(settings) as conn:
        build_post_edges(conn, RUN, NetworkParams(), ["co_repost", "co_link"], pair_budget=300)
    assert sum("partitions" in r.getMessage() for r in caplog.records) == 2  # both types went through partitions
    assert {t: edges(settings, t) for t in ("co_repost", "co_link")} == single
    assert len(single["co_repost"]) > 20 and len(single["co_link"]) > 20


def _qut_csv(path: Path, posts: list[dict]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["message_id", "user_id", "username", "repost_id", "reply_id", "message", "timestamp", "urls"])
        for p in posts:
            writer.writerow([p["post_id"], p["account"], p["account"], p["reposted"] or "", p.get("replied") or "",
                             p["text"] or "", int(p["seconds"]), " ".join(p["urls"])])


def _qut_directed(db: Path, command: str, window: int, min_weight: int) -> set[tuple[str, str, int]]:
    import sqlite3

    from coordination_network_toolkit import compute_networks as cn

    fn = {"co_retweet": cn.compute_co_retweet_parallel, "co_link": cn.compute_co_link_network,
          "co_tweet": cn.compute_co_tweet_network, "co_reply": cn.compute_co_reply_network}[command]
    if command in ("co_tweet", "co_reply"):
        fn(str(db), window, min_edge_weight=min_weight, n_threads=1)
    else:
        fn(str(db), window, n_threads=1, min_edge_weight=min_weight)
    with sqlite3.connect(db) as con:
        return {(u1, u2, w) for u1, u2, w in con.execute(f"select user_1, user_2, weight from {command}_network"
                                                         " where user_1 != user_2")}


def _ours_directed(settings, edge_type: str) -> set[tuple[str, str, int]]:
    out = set()
    for (a, b), e in edges(settings, edge_type).items():
        ev = e["evidence"]
        for u1, u2, w in ((a, b, ev["weight_a_to_b"]), (b, a, ev["weight_b_to_a"])):
            if w >= e["params"]["co_min_weight"]:
                out.add((u1, u2, w))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("window,min_weight", [(30, 2), (120, 3)])
def test_agrees_with_qut_toolkit(settings, tmp_path, window, min_weight):
    """Same CSV into QUT's toolkit and into posts: the directed edge lists must be identical."""
    from coordination_network_toolkit.preprocess import preprocess_csv_files

    rng = random.Random(window)
    words = ["vote", "now", "Vote", "@alice", "@bob", "today", "TODAY", "free", "win"]
    hosts = ["a.example/x", "b.example/y", "c.example/z", "a.example/w"]
    posts = []
    for n in range(1200):
        account = f"u{rng.randrange(25)}"
        seconds = rng.randrange(0, 1800)
        if rng.random() < 0.5:
            posts.append(post(account, f"m{n}", seconds, f"T{rng.randrange(20)}", text="RT something"))
        else:  # every original post has a URL: QUT's CSV reader turns an empty urls cell into the URL ''
            text = " ".join(rng.choice(words) for _ in range(rng.randrange(1, 4)))
            urls = rng.sample(hosts, rng.randrange(1, 3))
            posts.append(post(account, f"m{n}", seconds, None, urls, text if "@" not in text.split()[-1] else text + " x"))
    csv_path = tmp_path / "posts.csv"
    _qut_csv(csv_path, posts)
    db = tmp_path / "qut.db"
    preprocess_csv_files(str(db), [str(csv_path)])
    load_posts(settings, posts)
    run_edges(settings, NetworkParams(co_window_seconds=window, co_min_weight=min_weight))
    for ours, theirs in (("co_repost", "co_retweet"), ("co_link", "co_link"), ("co_post", "co_tweet")):
        expected = _qut_directed(db, theirs, window, min_weight)
        assert len(expected) > 10, theirs  # the generated data must exercise the comparison
        assert _ours_directed(settings, ours) == expected, ours


def _reply_and_hashtag_posts(seed: int) -> list[dict]:
    """Replies to a few posts, reposts, and originals carrying 0 to 3 hashtags from a small vocabulary."""
    rng = random.Random(seed)
    tags = ["vote", "Vote", "#election", "news", "now"]
    posts = []
    for n in range(1200):
        account, seconds, kind = f"u{rng.randrange(25)}", rng.randrange(0, 1800), rng.random()
        chosen = rng.sample(tags, rng.randrange(0, 4))
        if kind < 0.35:
            posts.append(post(account, f"m{n}", seconds, replied=f"R{rng.randrange(15)}", text=f"reply {n}",
                              hashtags=chosen))
        elif kind < 0.55:  # a repost replying to something: neither QUT nor we count it as a reply
            posts.append(post(account, f"m{n}", seconds, f"T{rng.randrange(10)}", text="RT", hashtags=chosen,
                              replied=f"R{rng.randrange(15)}" if rng.random() < 0.3 else None))
        else:
            posts.append(post(account, f"m{n}", seconds, text=f"original {n}", hashtags=chosen))
    return posts


def _tag_set(tags: list[str]) -> str | None:
    """The set our hashtag_set() matches on: distinct, lower case, without '#', sorted."""
    distinct = sorted({t.lower().lstrip("#") for t in tags} - {""})
    return " ".join(distinct) if len(distinct) >= NetworkParams().co_hashtag_min_tags else None


@pytest.mark.parametrize("window,min_weight", [(30, 2), (120, 3)])
def test_co_reply_agrees_with_qut_and_co_hashtag_with_qut_co_tweet_on_tag_sets(settings, tmp_path, window, min_weight):
    """co_reply against QUT's co_reply network; co_hashtag (QUT has none) against QUT's co_tweet network on
    a CSV whose message is each post's hashtag set: the directed edge lists must be identical."""
    from coordination_network_toolkit.preprocess import preprocess_csv_files

    posts = _reply_and_hashtag_posts(window)
    load_posts(settings, posts)
    run_edges(settings, NetworkParams(co_window_seconds=window, co_min_weight=min_weight))
    replies_csv, tags_csv = tmp_path / "replies.csv", tmp_path / "tags.csv"
    _qut_csv(replies_csv, posts)
    # as messages, the tag set or a text of its own (QUT matches equal messages: co_tweet is co_hashtag here)
    _qut_csv(tags_csv, [{**p, "text": _tag_set(p["hashtags"]) or f"no set {p['post_id']}"} for p in posts])
    for name, path, theirs, ours in (("r", replies_csv, "co_reply", "co_reply"), ("h", tags_csv, "co_tweet", "co_hashtag")):
        db = tmp_path / f"{name}.db"
        preprocess_csv_files(str(db), [str(path)])
        expected = _qut_directed(db, theirs, window, min_weight)
        assert len(expected) > 10, theirs  # the generated data must exercise the comparison
        assert _ours_directed(settings, ours) == expected, ours
    edge = next(iter(edges(settings, "co_hashtag").values()))
    assert edge["params"]["co_hashtag_min_tags"] == 2 and edge["params"]["co_window_seconds"] == window
    example = edge["evidence"]["examples"][0]
    assert set(example) >= {"hashtags", "a_post", "b_post", "a_at", "b_at", "delta_seconds"}
    assert example["hashtags"] == _tag_set(example["hashtags"].split())
    reply = next(iter(edges(settings, "co_reply").values()))
    assert reply["evidence"]["examples"][0]["replied_id"].startswith("R")


def test_co_hashtag_needs_the_same_set_not_one_shared_tag(settings):
    posts = []
    for i in range(3):  # a and b: the same set (in another order and case) three times; c shares one tag
        posts += [post("a", f"a{i}", 100 * i, text="x", hashtags=["Vote", "now"]),
                  post("b", f"b{i}", 100 * i + 5, text="y", hashtags=["#now", "vote", "vote"]),
                  post("c", f"c{i}", 100 * i + 6, text="z", hashtags=["vote"]),
                  post("d", f"d{i}", 100 * i + 7, f"a{i}", text="RT", hashtags=["vote", "now"])]  # reposts: not counted
    load_posts(settings, posts)
    counts = run_edges(settings)
    assert counts["co_hashtag"] == 1 and weights(settings, "co_hashtag") == {("a", "b"): 3.0}
    assert edges(settings, "co_hashtag")[("a", "b")]["evidence"]["examples"][0]["hashtags"] == "now vote"


def test_co_reply_ignores_reposts_and_other_targets(settings):
    posts = []
    for i in range(2):
        posts += [post("a", f"a{i}", 50 * i, text="r", replied=f"P{i}"),
                  post("b", f"b{i}", 50 * i + 10, text="r", replied=f"P{i}"),
                  post("c", f"c{i}", 50 * i + 10, f"X{i}", text="RT", replied=f"P{i}"),  # a repost
                  post("d", f"d{i}", 50 * i + 10, text="r", replied=f"Q{i}")]  # another post
    load_posts(settings, posts)
    run_edges(settings)
    assert weights(settings, "co_reply") == {("a", "b"): 2.0}


def test_evidence_is_bounded(settings):
    posts = []
    for i in range(12):
        posts += [post("a", f"a{i}", 100 * i, f"X{i}"), post("b", f"b{i}", 100 * i + 1, f"X{i}")]
    load_posts(settings, posts)
    run_edges(settings, NetworkParams(co_evidence_examples=3))
    ev = edges(settings, "co_repost")[("a", "b")]["evidence"]
    assert ev["co_occurrences"] == 12 and ev["weight_a_to_b"] == 12
    assert [x["a_post"] for x in ev["examples"]] == ["a0", "a1", "a2"]  # the earliest, in time order


def test_bad_parameters_are_refused(settings):
    load_posts(settings, [post("a", "a1", 0, "X")])
    with pytest.raises(UserError, match="co_min_weight"):
        run_edges(settings, NetworkParams(co_min_weight=0))
    with pytest.raises(UserError, match="co_window_seconds"):
        run_edges(settings, NetworkParams(co_window_seconds=-1))
