"""The HTML evidence report (pipeline/reporting/html.py), read as HTML: no browser here (test_report_browser.py).

The module's audit is the demo export with hostile text planted in one ring account: a bio that is a
<script>, a display name that is an <img onerror>, and a javascript: link. The report must show them
as text.
"""

from __future__ import annotations

import csv
import html
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import fresh_settings

RUN_KEY = "investigation:report/<test>"  # characters that are unsafe in a path and in HTML
HOSTILE = {"bio": '<script>alert("bio")</script>', "display_name": "<img src=x onerror=alert(1)>",
           "url": "javascript:alert(document.cookie)"}
HOSTILE_ACCOUNT = "r000"


def hostile_export(source: Path, target: Path) -> Path:
    """A copy of the demo export whose account r000 (in the reused-face ring) carries hostile text."""
    shutil.copytree(source, target)
    manifest = target / "manifest.csv"
    with manifest.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields, rows = reader.fieldnames, list(reader)
    for row in rows:
        if row["account_id"] == HOSTILE_ACCOUNT:
            row.update(HOSTILE)
    with manifest.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return target


@pytest.fixture(scope="module")
def audited_report(server_url, demo_data, tmp_path_factory):
    """The hostile demo export audited once by the whole pipeline, which writes the report as a stage."""
    from pipeline.audit import audit_export
    from pipeline.core.db import dispose_engines
    from pipeline.flags.rules import list_flags

    root = tmp_path_factory.mktemp("report")
    settings = fresh_settings(server_url, root / "home")
    export = hostile_export(demo_data["export"], root / "export")
    summary = audit_export(settings, export, run_key=RUN_KEY, detector=str(demo_data["detector"]))
    flags = list_flags(settings, run_key=RUN_KEY)
    yield {"settings": settings, "summary": summary, "flags": flags}
    dispose_engines()


class Collector(HTMLParser):
    """Every start tag with its attributes, and the page's text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def parse(path: Path) -> Collector:
    collector = Collector()
    collector.feed(path.read_text(encoding="utf-8"))
    return collector


def _cluster_rows(settings, cluster_id: str) -> dict[str, dict]:
    from pipeline.core.db import transaction

    with transaction(settings) as conn:
        rows = conn.execute(sa.text(
            "select m.account_key, s.handle, g.avatar_sha256, g.avatar_probability from cluster_members m"
            " join account_snapshots s on s.run_key = m.run_key and s.account_key = m.account_key"
            " join account_signals g on g.run_key = m.run_key and g.account_key = m.account_key"
            " where m.run_key = :k and m.cluster_id = :c"), {"k": RUN_KEY, "c": cluster_id}).mappings().all()
    return {r["account_key"]: dict(r) for r in rows}


def _edge_count(settings, cluster_id: str) -> int:
    from pipeline.core.db import transaction

    with transaction(settings) as conn:
        return conn.execute(sa.text(
            "select count(*) from edges e"
            " join cluster_members a on a.run_key = e.run_key and a.account_key = e.a_key and a.cluster_id = :c"
            " join cluster_members b on b.run_key = e.run_key and b.account_key = e.b_key and b.cluster_id = :c"
            " where e.run_key = :k"), {"k": RUN_KEY, "c": cluster_id}).scalar_one()


@pytest.mark.slow
def test_the_report_stage_writes_index_and_one_page_per_flagged_cluster(audited_report):
    from pipeline.reporting.html import cluster_page_name, report_dir

    settings, flags = audited_report["settings"], audited_report["flags"]
    folder = report_dir(settings, RUN_KEY)
    assert folder.parent == settings.home / "reports" and "/" not in folder.name and "<" not in folder.name
    assert flags, "the demo export raises flags"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["index.html", *(cluster_page_name(f["cluster_id"]) for f in flags)])
    assert all(p.stat().st_mode & 0o444 == 0o444 for p in folder.iterdir()), "pages must be readable by others"
    index = parse(folder / "index.html")
    links = [a["href"] for tag, a in index.tags if tag == "a"]
    assert sorted(links) == sorted(cluster_page_name(f["cluster_id"]) for f in flags)
    text = " ".join(index.text)
    for f in flags:
        assert f["flag_id"] in text and f"{f['score']:.3f}" in text
        for rule, why in f["evidence"]["rules"].items():
            assert rule in text and why in text


@pytest.mark.slow
def test_cluster_pages_show_members_probabilities_thumbnails_and_edges(audited_report):
    from pipeline.reporting.html import cluster_page_name, report_dir

    settings = audited_report["settings"]
    folder = report_dir(settings, RUN_KEY)
    for flag in audited_report["flags"]:
        page = parse(folder / cluster_page_name(flag["cluster_id"]))
        text = " ".join(page.text)
        members = _cluster_rows(settings, flag["cluster_id"])
        for key, m in members.items():
            assert key in text and m["handle"] in text
        images = {m["avatar_sha256"]: m["avatar_probability"] for m in members.values() if m["avatar_sha256"]}
        tiles = [a for tag, a in page.tags if tag == "div" and a.get("class") == "tile"]
        assert sorted(t["title"] for t in tiles) == sorted(images)
        for sha, probability in images.items():
            assert f"p = {probability:.3f}" in text, sha
        # the tiles' pictures (the matched-pairs section above the sheet has pictures of its own)
        thumbs = [page.tags[i + 1][1]["src"] for i, (tag, a) in enumerate(page.tags)
                  if tag == "div" and a.get("class") == "tile" and page.tags[i + 1][0] == "img"]
        assert len(thumbs) == len(images) and all(src.startswith("data:image/jpeg;base64,") for src in thumbs)
        assert [a["href"] for tag, a in page.tags if tag == "a"] == ["index.html"]
        svgs = [a.get("aria-label") for tag, a in page.tags if tag == "svg"]
        assert [s for s in svgs if s in ("creation-date histogram", "cluster graph")] == [
            "creation-date histogram", "cluster graph"]
        circles = [a for tag, a in page.tags if tag == "circle"]
        assert len(circles) == len(members)
        lines = [a for tag, a in page.tags if tag == "line"]
        edges_total = _edge_count(settings, flag["cluster_id"])
        assert len(lines) - 2 == edges_total  # two axis lines in the histogram, one line per edge in the graph
        assert f"Edge evidence ({edges_total} edges)" in text
        for edge in flag["evidence"]["edges"]:
            assert edge["a_key"] in text and edge["b_key"] in text


@pytest.mark.slow
def test_the_demo_report_says_its_random_backbone_detector_is_not_a_real_detector(audited_report):
    from pipeline.reporting.detector_info import NOT_REAL_CAVEAT
    from pipeline.reporting.html import cluster_page_name, report_dir
    from pipeline.reporting.summary import format_summary

    folder = report_dir(audited_report["settings"], RUN_KEY)
    detector = audited_report["summary"]["detector"]  # the demo probe: pa-tiny-vit with random:0 weights
    assert detector["real_detector"] is False and detector["caveat"] == NOT_REAL_CAVEAT
    assert f"WARNING {NOT_REAL_CAVEAT}" in format_summary(audited_report["summary"], audited_report["flags"])
    index = parse(folder / "index.html")
    warnings = " ".join(index.text)
    assert "Detector" in index.text and detector["id"] in warnings and NOT_REAL_CAVEAT in warnings
    assert ("p", {"class": "warn"}) in index.tags
    for flag in audited_report["flags"]:
        assert flag["detector"]["id"] == detector["id"] and flag["detector"]["real_detector"] is False
        page = (folder / cluster_page_name(flag["cluster_id"])).read_text(encoding="utf-8")
        assert '<p class="warn">' in page and NOT_REAL_CAVEAT in page
        # the member rows' labels carry the caveat too
        assert ('<td><span class="syn">synthetic (not a real detector)</span></td>' in page
                or "<td>not labelled (not a real detector)</td>" in page)


@pytest.mark.slow
def test_hostile_export_text_is_escaped(audited_report):
    from pipeline.reporting.html import CSP, report_dir

    folder = report_dir(audited_report["settings"], RUN_KEY)
    ring_pages = [p for p in folder.glob("cluster-*.html") if f"demo:{HOSTILE_ACCOUNT}" in p.read_text()]
    assert len(ring_pages) == 1, "the hostile account is in a flagged cluster"
    raw = ring_pages[0].read_text()
    page = parse(ring_pages[0])
    assert not [t for t, _ in page.tags if t in ("script", "iframe", "object", "embed")]
    assert all(a.get("src", "").startswith("data:image/jpeg;base64,") for t, a in page.tags if t == "img")
    assert all(not a.get("href", "").lower().startswith("javascript") for _, a in page.tags)
    assert all(not any(k.startswith("on") for k in a) for _, a in page.tags), "an event-handler attribute got through"
    for value in HOSTILE.values():
        assert html.escape(value, quote=True) in raw  # shown as text, as written
        if html.escape(value, quote=True) != value:
            assert value not in raw
    assert f'href="{HOSTILE["url"]}' not in raw  # the link is shown, never followed
    assert HOSTILE["bio"] in " ".join(page.text)
    # and the run key, which has <, > and / in it, is escaped on every page
    for path in folder.iterdir():
        assert "<test>" not in path.read_text() and "&lt;test&gt;" in path.read_text()
    metas = [a for t, a in parse(folder / "index.html").tags if t == "meta" and a.get("http-equiv")]
    assert metas == [{"http-equiv": "Content-Security-Policy", "content": CSP}]


@pytest.mark.slow
def test_rewriting_gives_the_same_bytes_and_drops_stale_pages(audited_report):
    from pipeline.reporting.html import report_dir, write_report

    settings = audited_report["settings"]
    folder = report_dir(settings, RUN_KEY)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    (folder / "cluster-stale.html").write_text("from a run whose clusters changed")
    result = write_report(settings, RUN_KEY)
    assert result.path == folder / "index.html" and result.pages == len(before)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


@pytest.mark.slow
def test_missing_image_file_shows_a_placeholder(audited_report, tmp_path):
    from pipeline.reporting.html import write_report

    settings, flag = audited_report["settings"], audited_report["flags"][0]
    members = _cluster_rows(settings, flag["cluster_id"])
    sha = min(m["avatar_sha256"] for m in members.values() if m["avatar_sha256"])
    stored = next(settings.image_dir.rglob(f"{sha}.*"))
    moved = tmp_path / stored.name
    shutil.move(stored, moved)
    try:
        result = write_report(settings, RUN_KEY, cluster_id=flag["cluster_id"], out=tmp_path / "one")
    finally:
        shutil.move(moved, stored)
    page = parse(result.path)
    tile = next(i for i, (t, a) in enumerate(page.tags) if t == "div" and a.get("title") == sha)
    assert page.tags[tile + 1] == ("div", {"class": "missing"})
    assert result.pages == 1 and sorted(p.name for p in (tmp_path / "one").iterdir()) == [result.path.name]


@pytest.mark.slow
def test_cli_report_for_one_cluster_and_user_errors(audited_report, tmp_path):
    from test_cli import _one_line_error, run_cli

    settings, flag = audited_report["settings"], audited_report["flags"][0]
    base = ["--database-url", settings.database_url]
    out = run_cli(*base, "report", "--run-key", RUN_KEY, "--cluster", flag["cluster_id"], "--out", str(tmp_path / "r"),
                  home=settings.home)
    assert out.returncode == 0, out.stderr
    pages = list((tmp_path / "r").iterdir())
    assert len(pages) == 1 and str(pages[0]) in out.stdout and flag["flag_id"] in pages[0].read_text()
    assert 'href="index.html"' not in pages[0].read_text()  # no index beside it: no dead link
    out = run_cli(*base, "report", "--run-key", "nightly:1999-01-01", home=settings.home)
    assert out.returncode == 2
    _one_line_error(out, "no run 'nightly:1999-01-01'")
    out = run_cli(*base, "report", "--run-key", RUN_KEY, "--cluster", "nope", home=settings.home)
    assert out.returncode == 2
    _one_line_error(out, "no cluster 'nope'")
    (tmp_path / "file").write_text("x")
    out = run_cli(*base, "report", "--run-key", RUN_KEY, "--out", str(tmp_path / "file"), home=settings.home)
    _one_line_error(out, "is not a folder")


def test_histogram_bins_cover_the_span_and_count_every_account():
    import itertools
    from datetime import date, timedelta

    from pipeline.reporting.html import _day_bins, svg_histogram

    burst = [date(2019, 12, 8)] * 106 + [date(2020, 1, 9)] * 105  # the Thailand 2020 release's two creation days
    bins = _day_bins(burst)
    assert sum(n for _, _, n in bins) == len(burst)
    assert bins[0][0] == date(2019, 12, 8) and bins[-1][1] == date(2020, 1, 9)
    assert all(s == e for s, e, _ in bins) and len(bins) == 33  # one bar per day over 33 days
    assert {s: n for s, _, n in bins if n} == {date(2019, 12, 8): 106, date(2020, 1, 9): 105}
    spread = [date(2012, 1, 1) + timedelta(days=37 * i) for i in range(100)]
    wide = _day_bins(spread)
    assert len(wide) <= 60 and sum(n for _, _, n in wide) == 100
    assert all((b[0] - a[1]).days == 1 for a, b in itertools.pairwise(wide))  # contiguous, no gaps or overlaps
    one_day = _day_bins([date(2025, 12, 10)] * 16)  # a batch created on one day: a spike on a two-week axis
    assert len(one_day) == 15 and [(s, n) for s, _, n in one_day if n] == [(date(2025, 12, 10), 16)]
    svg = svg_histogram(burst)
    assert svg.count("<rect") == 2 and "2019-12-08: 106 accounts" in svg
    assert "No creation dates" in svg_histogram([None, None])


def test_graph_layout_is_deterministic_and_separates_communities():
    import itertools
    import math

    from pipeline.reporting.html import graph_layout

    # two 8-cliques joined by one edge
    pairs = [p for group in (range(8), range(8, 16)) for p in itertools.combinations(group, 2)] + [(0, 8)]
    pos = graph_layout(16, pairs)
    assert pos == graph_layout(16, pairs)
    assert all(0 <= x <= 1 and 0 <= y <= 1 for x, y in pos)
    dist = lambda i, j: math.dist(pos[i], pos[j])  # noqa: E731
    within = [dist(i, j) for i, j in pairs[:-1]]
    across = [dist(i, j) for i in range(8) for j in range(8, 16)]
    assert sum(within) / len(within) < 0.5 * sum(across) / len(across)


def _h2s(raw: str) -> list[str]:
    import re

    return [html.unescape(h) for h in re.findall(r"<h2>(.*?)</h2>", raw)]


def _outside_details(raw: str) -> str:
    import re

    return re.sub(r"<details>.*?</details>", "", raw, flags=re.S)


@pytest.mark.slow
def test_the_index_opens_with_the_flags_each_with_sentence_thumbnails_and_next_commands(audited_report):
    """Issue 25, item 3: the flags come first, each with one sentence of its facts, a few of its avatars, its
    score and status, its rules in plain words and the commands to run next; the run's metadata and
    parameters are collapsed at the end."""
    import shlex

    from pipeline.reporting.html import DEMO_BANNER, RULE_NAMES, next_commands, report_dir

    settings, flags = audited_report["settings"], audited_report["flags"]
    raw = (report_dir(settings, RUN_KEY) / "index.html").read_text(encoding="utf-8")
    heads = _h2s(raw)
    assert heads[0] == f"Flagged clusters ({len(flags)})", heads
    assert heads.index("Detector") < heads.index("Ingest ledger") < heads.index("Run details")
    shown = _outside_details(raw)
    assert "run kind" not in shown and "Run parameters" not in shown  # collapsed
    assert "<summary>Run parameters</summary>" in raw and "<summary>Run</summary>" in raw
    assert raw.index(f'<div class="banner" role="alert">{DEMO_BANNER}') < raw.index("<h1>")
    cards = raw.split('<div class="card">')[1:]
    assert len(cards) == len(flags)
    for flag, card in zip(flags, cards):  # in score order
        text = html.unescape(card)
        size = flag["evidence"]["features"]["size"]
        assert f"{size} accounts" in text and f"Score {flag['score']:.3f}" in html.unescape(
            card.replace("<b>", "").replace("</b>", "")) and flag["status"] in text
        images = {i["sha256"] for i in flag["evidence"]["images"]}
        thumbs = Collector()
        thumbs.feed(card)
        pictures = [a for t, a in thumbs.tags if t == "img"]
        assert 1 <= len(pictures) <= min(6, len(images))
        assert all(a["src"].startswith("data:image/jpeg;base64,") and "not a real detector" in a["title"]
                   for a in pictures)
        assert f"share {len(images)} distinct avatar" in text
        assert "generated" not in text.split("</p>")[0], "a demo detector's labels are never called generated"
        for command in next_commands(RUN_KEY, flag["flag_id"], flag["cluster_id"]):
            assert command in text
        assert f"profile-audit evidence {shlex.quote(flag['cluster_id'])} --run-key {shlex.quote(RUN_KEY)}" in text
        for rule in flag["rules"]:
            assert f"<b>{RULE_NAMES[rule]}</b> <code>{rule}</code>" in card


@pytest.mark.slow
def test_the_cluster_page_shows_the_evidence_first_and_readable_tables(audited_report):
    """Issue 25, item 3: contact sheet, creation dates and handle patterns come before the graph and the tables;
    raw features and run parameters are collapsed; contributions and edge evidence are not JSON; graph
    nodes carry handles; every label's section names the detector, and the page has the demo banner."""
    import re

    from pipeline.reporting.html import DEMO_BANNER, cluster_page_name, report_dir

    settings = audited_report["settings"]
    detector = audited_report["summary"]["detector"]
    for flag in audited_report["flags"]:
        raw = (report_dir(settings, RUN_KEY) / cluster_page_name(flag["cluster_id"])).read_text(encoding="utf-8")
        heads = [h.split(" (")[0] for h in _h2s(raw)]
        order = ["Why it was flagged", "Matched images", "Contact sheet", "Account creation dates", "Handle patterns", "Cluster graph",
                 "Members", "Edge evidence"]
        assert [h for h in heads if h in order] == order, heads
        shown = _outside_details(raw)
        assert "<summary>Cluster features (raw)</summary>" in raw and "<summary>Run parameters</summary>" in raw
        assert "score_contributions" not in shown and "synthetic_share" not in shown
        members = raw[raw.index("<h2>Members"):raw.index("<h2>Edge evidence")]
        edges = shown[shown.index("<h2>Edge evidence"):]
        assert "{&quot;" not in members and "{&quot;" not in edges, "raw JSON in a table"
        assert re.search(r"<div>[a-z_]+ [+-]\d\.\d{3}</div>", members), "risk contributions one per line"
        rows = _cluster_rows(settings, flag["cluster_id"])
        graph = raw[raw.index('aria-label="cluster graph"'):raw.index("</svg>", raw.index('aria-label="cluster graph"'))]
        labels = re.findall(r"<text [^>]*>([^<]*)</text>", graph)
        assert labels and all(html.unescape(t).rstrip("…") in {m["handle"][:16].rstrip("…") for m in rows.values()}
                              or any(m["handle"].startswith(html.unescape(t).rstrip("…")) for m in rows.values())
                              for t in labels)
        assert all(html.escape(m["handle"]) in graph for m in rows.values() if len(m["handle"]) <= 40)
        assert raw.count(detector["name"]) >= 3  # the contact sheet, the graph's legend, the members table
        assert f'<div class="banner" role="alert">{DEMO_BANNER}' in raw
        assert "flag set-status" in raw and f"--run-key {html.escape(__import__('shlex').quote(RUN_KEY))}" in raw


def test_the_flag_sentence_says_what_the_detector_is():
    from pipeline.reporting.html import flag_sentence

    demo = {"name": "CLIP probe on pa-tiny-vit", "real_detector": False}
    real = {"name": "CLIP probe on ViT-B-16", "real_detector": True}
    faces = [{"label": True, "accounts": 6}] * 4
    days = {"2024-03-01": 12, "2024-03-02": 12}
    text = flag_sentence(24, days, 1.0, faces, ["templated_handles"], demo)
    assert text.startswith("24 accounts created on 2 days with templated handles share 4 distinct avatars")
    assert "demo detector labels synthetic" in text and "generated" not in text
    text = flag_sentence(24, days, 0.5, faces, ["coordinated_activity"], real)
    assert "12 of them with templated handles" in text and "generated-looking faces per the CLIP probe on ViT-B-16" in text
    assert "post or repost together" in text
    spread = {f"2024-01-{d:02d}": 1 for d in range(1, 20)} | {"2024-02-01": 5}
    assert flag_sentence(24, spread, 0.0, [], [], None).startswith("24 accounts, 5 of them created on 2024-02-01,")


def test_quarantined_records_are_listed_by_reason_with_escaped_examples():
    from pipeline.reporting.html import EXCERPT_CHARS, ledger_section

    hostile = "<script>alert(1)</script>"
    rows = [{"stage": "ingest", "source_file": f"users{i}.csv", "locator": f"line {i}", "reason": f"bad row {hostile}",
             "excerpt": "x" * 500 + hostile} for i in range(5)]
    summary = {"run_key": "k", "ingest": {}, "quarantined_by_reason": {"ingest: bad row": 5, "images: gone": 1}}
    text = ledger_section(summary, {"ingest: bad row": rows[:3]})
    assert "<script>" not in text and text.count("&lt;script&gt;alert(1)") == 3  # the reasons; excerpts are cut
    assert all(f"users{i}.csv line {i}" in text for i in range(3)) and "users3.csv" not in text
    assert "x" * (EXCERPT_CHARS - 1) + "…" in text and "x" * EXCERPT_CHARS not in text
    assert "images: gone" in text


@pytest.mark.slow
def test_set_status_updates_the_report_at_once(audited_report):
    """Issue 25, item 4: after `flag set-status` the cluster's page and the index show the new status and note,
    without running `report` again; the other pages are untouched. (Last in this module: it changes a flag of
    the shared audited run, and puts it back.)"""
    from test_cli import run_cli

    from pipeline.reporting.html import cluster_page_name, report_dir

    settings, flags = audited_report["settings"], audited_report["flags"]
    flag, other = flags[0], (flags[1] if len(flags) > 1 else None)
    folder = report_dir(settings, RUN_KEY)
    untouched = (folder / cluster_page_name(other["cluster_id"])).read_bytes() if other else None
    note = "same four faces; takedown filed"
    base = ["--database-url", settings.database_url]
    try:
        out = run_cli(*base, "flag", "set-status", flag["flag_id"], "escalated", "--note", note, home=settings.home)
        assert out.returncode == 0, out.stderr
        assert f"cluster {flag['cluster_id']} of run {RUN_KEY}" in out.stdout and "report updated:" in out.stdout
        for page in (folder / cluster_page_name(flag["cluster_id"]), folder / "index.html"):
            text = "".join(parse(page).text)
            assert "escalated" in text and note in text, page.name
        if other:
            assert (folder / cluster_page_name(other["cluster_id"])).read_bytes() == untouched
    finally:
        run_cli(*base, "flag", "set-status", flag["flag_id"], flag["status"], home=settings.home)


def test_cluster_pages_state_the_detectors_measured_quality(audited_report):
    """Issue 25, item 1: where a cluster page shows labels, it says what was measured on the detector, from
    the detector's own file (or that nothing was), beside its kind."""
    from pipeline.reporting.detector_info import rates_text
    from pipeline.reporting.html import cluster_page_name, report_dir

    settings, flag = audited_report["settings"], audited_report["flags"][0]
    text = " ".join("".join(parse(report_dir(settings, RUN_KEY) / cluster_page_name(flag["cluster_id"])).text).split())
    measured = audited_report["summary"]["detector"]["measured"]
    if measured.get("tpr_by_generator") or measured.get("fpr_by_real_source"):
        assert f"TPR by generator {rates_text(measured.get('tpr_by_generator') or {})}" in text
    else:
        assert "Nothing was measured on it." in text
