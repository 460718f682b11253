"""Issue 23, item 4: one investigation across platforms. Several exports of any formats are audited into one
run through the real CLI (``profile-audit audit A B C``), the same rows whatever the order of the paths; each
account keeps its platform; the ledger balances per file of each export; bad input (a path given twice, an
account in two exports, a format forced onto another's export, a path inside another) is one line or a
said-so merge. Cross-platform edges (pipeline/networks/crossplatform.py) and the planted population spread
over an X IO release, Mastodon API accounts and Bluesky profiles (pipeline/testing/crossplatform.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from export_fixtures import mastodon_accounts, write_bluesky_export, write_io_export
from test_cli import _one_line_error, run_cli

from pipeline.config import load_settings


def _base(database_url: str) -> tuple[str, ...]:
    return ("--database-url", database_url)


def _three_exports(root: Path) -> list[Path]:
    io = write_io_export(root / "x_io", avatar_url=None)
    masto = root / "mastodon"
    masto.mkdir()
    (masto / "accounts.json").write_text(json.dumps(mastodon_accounts()), encoding="utf-8")
    bsky = write_bluesky_export(root / "bluesky")
    return [io, masto, bsky]


def _audit_json(database_url: str, home: Path, *args: str) -> dict:
    out = run_cli(*_base(database_url), "audit", *args, "--json", home=home)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    return json.loads(out.stdout)


def _rows(database_url: str, home: Path, run_key: str) -> dict[str, list]:
    """The run's rows that the ingest and network stages wrote, without wall-clock columns."""
    import sqlalchemy as sa

    from pipeline.core.db import get_engine

    settings = load_settings(env={}, home=home, database_url=database_url)
    out = {}
    with get_engine(settings).connect() as conn:
        for table, order in (("account_snapshots", "account_key"), ("posts", "account_key, post_id"),
                             ("quarantine", "source_file, locator, reason"), ("ingest_ledger", "source_file"),
                             ("account_avatars", "account_key"), ("edges", "edge_type, a_key, b_key"),
                             ("cluster_members", "cluster_id, account_key")):
            out[table] = [tuple(r) for r in conn.execute(sa.text(
                f"select * from {table} where run_key = :k order by {order}"), {"k": run_key})]
        out["accounts"] = [tuple(r) for r in conn.execute(sa.text(
            "select account_key, platform, account_id from accounts order by 1"))]
    return out


@pytest.mark.slow
def test_three_formats_in_one_run_the_same_rows_in_any_order(tmp_path, database_url):
    paths = _three_exports(tmp_path / "exports")
    forward = _audit_json(database_url, tmp_path, *map(str, paths))
    key = forward["summary"]["run_key"]
    assert forward["summary"]["export_format"] == "bluesky+mastodon+twitter_io"
    rows = _rows(database_url, tmp_path, key)
    platforms = {platform for _, platform, _ in rows["accounts"]}
    assert platforms == {"twitter", "mastodon", "bluesky"}
    assert all(k.startswith(f"{p}:") for k, p, _ in rows["accounts"])  # the key is platform-namespaced
    ledger = forward["summary"]["ingest"]["ledger"]
    # each export's files under its label, each balancing on its own
    assert {name.split("/", 1)[0] for name in ledger} == {"x_io", "mastodon", "bluesky"}
    assert all(row["balanced"] for row in ledger.values()), ledger
    assert forward["summary"]["avatars_stored"] >= 3  # the IO zip's and the Bluesky blob, from their own folders

    backward = _audit_json(database_url, tmp_path, *map(str, reversed(paths)))
    assert backward["summary"]["run_key"] == key  # the same exports, the same run
    assert _rows(database_url, tmp_path, key) == rows


@pytest.mark.slow
def test_a_path_given_twice_is_read_once_and_said_so(tmp_path, database_url):
    paths = _three_exports(tmp_path / "exports")
    once = _audit_json(database_url, tmp_path, str(paths[1]), str(paths[2]), "--run-key", "once")
    twice = _audit_json(database_url, tmp_path, str(paths[1]), str(paths[2]), str(paths[1]) + "/",
                        "--run-key", "twice")
    assert twice["summary"]["accounts"] == once["summary"]["accounts"]
    assert twice["summary"]["quarantined"] == once["summary"]["quarantined"]  # (avatar URLs not fetched offline)
    assert twice["summary"]["ingest"]["ledger"] == once["summary"]["ingest"]["ledger"]
    assert any("was given more than once" in n and "it was read once" in n for n in twice["summary"]["notes"])


@pytest.mark.slow
def test_an_account_in_two_exports_is_kept_once_and_said_so(tmp_path, database_url):
    one, two = tmp_path / "masto_a", tmp_path / "masto_b"
    for folder in (one, two):
        folder.mkdir()
    accounts = mastodon_accounts()
    (one / "accounts.json").write_text(json.dumps(accounts), encoding="utf-8")
    (two / "accounts.json").write_text(json.dumps(accounts[:1]), encoding="utf-8")  # ana again
    out = _audit_json(database_url, tmp_path, str(two), str(one))
    summary = out["summary"]
    ledger = summary["ingest"]["ledger"]
    # nothing lost: 3 records seen, 2 accounts kept, 1 quarantined at ingest
    assert summary["accounts"] == 2 and sum(r["quarantined"] for r in ledger.values()) == 1
    assert any("1 account in more than one export: each kept once" in n for n in summary["notes"]), summary["notes"]
    printed = run_cli(*_base(database_url), "audit", str(one), str(two), home=tmp_path).stdout
    assert "  export masto_a: mastodon at " in printed and "NOTE 1 account in more than one export" in printed
    assert ledger["masto_b/accounts.json"]["quarantined"] == 1 and all(r["balanced"] for r in ledger.values())
    listed = run_cli(*_base(database_url), "quarantine", "--run-key", summary["run_key"], home=tmp_path)
    assert "duplicate account mastodon:ana@mastodon.social (first at masto_a/accounts.json" in listed.stdout


def test_a_format_forced_onto_another_export_is_one_line(tmp_path, database_url):
    paths = _three_exports(tmp_path / "exports")
    out = run_cli(*_base(database_url), "audit", str(paths[1]), str(paths[2]), "--format", "mastodon", home=tmp_path)
    _one_line_error(out, "--format mastodon applies to every export path, but")
    assert "is a bluesky export" in out.stderr and "leave out --format" in out.stderr


def test_a_path_inside_another_is_one_line(tmp_path, database_url):
    paths = _three_exports(tmp_path / "exports")
    out = run_cli(*_base(database_url), "audit", str(paths[1]), str(paths[1] / "accounts.json"), home=tmp_path)
    _one_line_error(out, "is inside export")


def test_exports_are_sorted_and_labelled_uniquely_whatever_the_order(tmp_path):
    from pipeline.ingest.exports import resolve_exports

    a, b = tmp_path / "a" / "export", tmp_path / "b" / "export"
    for folder in (a, b):
        folder.mkdir(parents=True)
        (folder / "accounts.json").write_text(json.dumps(mastodon_accounts()), encoding="utf-8")
    forward, notes = resolve_exports([b, a])
    backward, _ = resolve_exports([a, b, a])
    assert forward == backward and not notes
    assert [(s.path, s.format, s.label) for s in forward] == [(a, "mastodon", "export"), (b, "mastodon", "export~2")]


# ------------------------------------------------------------------------------------- cross-platform edges


@pytest.mark.parametrize("platform,handle,stem", [
    ("twitter", "maria_garcia1234", "mariagarcia1234"),
    ("mastodon", "maria_garcia1234@mastodon.social", "mariagarcia1234"),
    ("mastodon", "@Maria_Garcia1234@fosstodon.org", "mariagarcia1234"),
    ("bluesky", "maria-garcia1234.bsky.social", "mariagarcia1234"),
    ("bluesky", "mariagarcia1234.example.com", "mariagarcia1234"),
    ("twitter", "", None),
])
def test_handle_stem_strips_instance_domain_and_separators(platform, handle, stem):
    from pipeline.networks.crossplatform import handle_stem

    assert handle_stem(platform, handle) == stem


def _handles(*rows):
    from pipeline.networks.crossplatform import Handle

    return [Handle(f"{p}:{h}", p, h) for p, h in rows]


def test_same_stem_joins_across_platforms_and_common_names_do_not():
    from pipeline.config import NetworkParams
    from pipeline.networks.crossplatform import same_handle_stem_edges

    edges = same_handle_stem_edges(_handles(
        ("twitter", "maria_garcia1234"), ("mastodon", "maria_garcia1234@mastodon.social"),
        ("bluesky", "maria-garcia1234.bsky.social"),
        ("twitter", "maria"), ("mastodon", "maria@mastodon.social"), ("bluesky", "maria.bsky.social"),  # too short
        ("twitter", "john1985"), ("mastodon", "john1985@fosstodon.org"),  # a name and a year: too short
        ("mastodon", "lena_fischer88@mastodon.social"), ("mastodon", "lena_fischer88@chaos.social"),  # one platform
        ("twitter", "lena_fischer88"),
        ("twitter", "20240101"), ("bluesky", "20240101.bsky.social"),  # digits only
    ), NetworkParams())
    assert {(e.a_key, e.b_key) for e in edges} == {
        ("bluesky:maria-garcia1234.bsky.social", "mastodon:maria_garcia1234@mastodon.social"),
        ("bluesky:maria-garcia1234.bsky.social", "twitter:maria_garcia1234"),
        ("mastodon:maria_garcia1234@mastodon.social", "twitter:maria_garcia1234")}
    assert all(e.edge_type == "same_handle_stem" and e.weight == 0.5 and e.evidence["stem"] == "mariagarcia1234"
               and len(set(e.evidence["platforms"])) == 2 for e in edges)


def test_one_persona_across_platforms_counts_once():
    from pipeline.networks.crossplatform import personas

    members = ["twitter:a", "mastodon:a@x", "bluesky:a", "twitter:b"]
    edges = [{"edge_type": "same_handle_stem", "a_key": "mastodon:a@x", "b_key": "twitter:a"},
             {"edge_type": "same_handle_stem", "a_key": "bluesky:a", "b_key": "twitter:a"},
             {"edge_type": "identical_avatar", "a_key": "twitter:a", "b_key": "twitter:b"}]
    assert personas(members, edges) == 2


@pytest.mark.slow
def test_planted_population_over_three_formats_through_the_cli(tmp_path, database_url):
    """The planted operations spanning an X IO release, Mastodon API accounts and Bluesky records are found
    at recall and precision >= 0.9, through `profile-audit audit X M B`; organic accounts sharing a common
    first name across platforms are joined by no edge; one person across platforms is not flagged; the
    flags give their platforms; the evidence of each cross-platform edge names both platforms."""
    from pipeline.testing.crossplatform import evaluate, write_population

    pop = write_population(tmp_path / "exports", organic=150, seed=3)
    out = _audit_json(database_url, tmp_path, *(str(pop.exports[p]) for p in ("bluesky", "twitter", "mastodon")))
    key = out["summary"]["run_key"]
    assert all(row["balanced"] for row in out["summary"]["ingest"]["ledger"].values())
    flags = json.loads(run_cli(*_base(database_url), "flags", "--run-key", key, "--json", home=tmp_path).stdout)
    assert flags and all(f["platforms"] == ["bluesky", "mastodon", "twitter"] for f in flags)
    report = Path(out["report"]).parent
    pages = [p.read_text(encoding="utf-8") for p in report.rglob("*.html") if p.name != "index.html"]
    page = next(text for text in pages if "Across platforms" in text)
    assert "<th>platform</th>" in page and "Across platforms: bluesky" in page and "<td>mastodon</td>" in page
    import sqlalchemy as sa

    from pipeline.core.db import get_engine

    settings = load_settings(env={}, home=tmp_path, database_url=database_url)
    with get_engine(settings).connect() as conn:
        edges = [dict(r) for r in conn.execute(sa.text(
            "select edge_type, a_key, b_key, evidence from edges where run_key = :k"), {"k": key}).mappings()]
    m = evaluate(pop, flags, edges)
    for kind, k in m["kinds"].items():
        assert k["recall"] >= 0.9 and k["precision"] >= 0.9, (kind, k)
    assert m["organic_flagged"] == 0 and "same_handle_stem" not in m["common_name_edges"], m
    crossing = [e for e in edges if e["a_key"].split(":")[0] != e["b_key"].split(":")[0]]
    assert {"same_handle_stem", "identical_avatar", "confirmed_near_duplicate", "co_link"} <= {e["edge_type"] for e in crossing}
    assert all(sorted(e["evidence"]["platforms"]) == sorted({e["a_key"].split(":")[0], e["b_key"].split(":")[0]})
               for e in crossing)


@pytest.mark.slow
def test_investigate_dag_exports_param_makes_one_run_of_several_exports(airflow_db, settings, tmp_path, monkeypatch):
    """The investigate DAG's `exports` Param adds exports to the run of `export_path`; which path is which does
    not matter: the same pinned exports and rows as the CLI's run of the three paths."""
    from test_dags import _dagbag, _use_database

    from pipeline.audit import audit_export

    _use_database(monkeypatch, settings)
    paths = _three_exports(tmp_path / "exports")
    dag = _dagbag().get_dag("profile_audit_investigate")
    run = dag.test(run_conf={"export_path": str(paths[2]), "exports": [str(paths[0]), str(paths[1])],
                             "investigation_id": "xplat"})
    assert run.state == "success"
    cli = audit_export(settings, paths, run_key="investigation:cli")
    import sqlalchemy as sa

    from pipeline.core.db import transaction

    with transaction(settings) as conn:
        params = {k: conn.execute(sa.text("select params from runs where run_key = :k"), {"k": k}).scalar_one()
                  for k in ("investigation:xplat", "investigation:cli")}
        rows = {k: conn.execute(sa.text("select account_key, source_file, avatar_ref from account_snapshots"
                                        " where run_key = :k order by 1"), {"k": k}).all() for k in params}
    assert params["investigation:xplat"]["exports"] == params["investigation:cli"]["exports"]
    assert [e["label"] for e in params["investigation:cli"]["exports"]] == ["bluesky", "mastodon", "x_io"]
    assert rows["investigation:xplat"] == rows["investigation:cli"] and len(rows["investigation:cli"]) == 7
    assert cli["export_format"] == "bluesky+mastodon+twitter_io"
    assert [e["path"] for e in cli["exports"]] == sorted(str(p) for p in paths)
