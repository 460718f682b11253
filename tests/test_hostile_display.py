"""Hostile text on screens (issue 13, items 3, 7 and 8): the report's layout stays bounded in a real
browser, bidi and control characters show as visible escapes in the report, the CLI and the CSV, CSV
cells never start a formula, and report writes are atomic with the index last."""

from __future__ import annotations

import contextlib
import csv
import os
import re
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from test_report import RUN_KEY, audited_report  # noqa: F401  (module-scoped: one audit for this module)

from pipeline.core.visible import csv_cell, visible
from pipeline.reporting.evidence import write_evidence
from pipeline.reporting.html import render_cluster_page

RLO_HANDLE = "admin\u202egnp.exe"  # shows as "adminexe.png" when the override is honoured
LONG = "W" * 65_536  # one unbroken field: made a cluster page 1.28 million px wide


def _member(i: int, **over) -> dict:
    row = {"account_key": f"x:{i}", "platform": "x", "account_id": str(i), "handle": f"user{i}",
           "display_name": f"User {i}", "created_at": datetime(2024, 1, 1 + i % 20, tzinfo=UTC),
           "bio": "hi", "url": "https://example.org", "followers": 1, "following": 2,
           "avatar_sha256": f"{i:064x}", "avatar_probability": 0.9, "avatar_label": True, "avatar_reuse_count": 1,
           "near_duplicate_count": 0, "handle_template": None, "risk": 0.5, "contributions": {"avatar": 0.5},
           "storage_path": None}
    row.update(over)
    return row


def hostile_cluster(n: int = 30) -> dict:
    members = [_member(i) for i in range(n)]
    members[0].update(handle=LONG, display_name=LONG, bio=LONG, url="https://" + LONG)
    members[1].update(handle=RLO_HANDLE, display_name="\x1b[31mred\x07", bio="line1\nline2\u200b")
    edges = [{"edge_type": "identical_bio", "a_key": "x:0", "b_key": f"x:{i}", "weight": 1.0,
              "params": {"max_group": 50}, "evidence": {"bio": LONG}} for i in range(1, n)]
    return {"run_key": "r", "cluster_id": "c1", "size": n, "score": 0.8, "features": {"size": n, "note": LONG},
            "flag": None, "members": members, "edges": edges}


def test_visible_escapes_controls_bidi_and_invisibles_and_keeps_the_rest():
    assert visible(RLO_HANDLE) == "admin\\u202egnp.exe"
    assert visible("\x1b[2J\x07bell\x00") == "\\x1b[2J\\x07bell\\x00"
    assert visible("a\u200bb\ufeffc\u2066d") == "a\\u200bb\\ufeffc\\u2066d"
    assert visible("Ana 🌊 Línea\tx\ny", keep="\n") == "Ana 🌊 Línea\\x09x\ny"
    assert visible(None) == ""


@pytest.mark.parametrize("cell, shown", [
    ("=HYPERLINK(\"http://evil\",\"x\")", "'=HYPERLINK(\"http://evil\",\"x\")"),
    ("+1+cmd|' /C calc'!A0", "'+1+cmd|' /C calc'!A0"),
    ("-2+3", "'-2+3"),
    ("@SUM(A1)", "'@SUM(A1)"),
    ("\t=1", "'\\x09=1"),
    ("\r=1", "'\\x0d=1"),
    ("plain bio", "plain bio"),
    ("a=b", "a=b"),
])
def test_csv_cells_never_start_a_formula(cell, shown):
    assert csv_cell(cell) == shown


def test_csv_numbers_stay_numbers():
    assert csv_cell(-0.25) == -0.25 and csv_cell(3) == 3 and csv_cell(None) == ""


def test_evidence_csv_defuses_hostile_members(tmp_path):
    data = {"run_key": "r", "cluster_id": "c1", "size": 2, "score": 0.5, "features": {"k": "=1"}, "flag": None,
            "members": [{**{c: None for c in ("account_key", "platform", "account_id", "handle", "display_name",
                                              "created_at", "bio", "url", "followers", "following", "avatar_sha256",
                                              "avatar_probability", "avatar_label", "avatar_reuse_count",
                                              "near_duplicate_count", "handle_template", "risk", "contributions")},
                         "account_key": "x:1", "handle": "=cmd|'/c calc'!A1", "display_name": "@evil",
                         "bio": "+SUM(1)\u202e", "url": "-1", "risk": -0.5}],
            "edges": [{"edge_type": "identical_bio", "a_key": "x:1", "b_key": "x:2", "weight": 1.0,
                       "params": {}, "evidence": {"bio": "=1"}}]}
    written = write_evidence(data, "csv", tmp_path / "ev")
    cells = [cell for path in written for row in csv.reader(path.open(newline="", encoding="utf-8")) for cell in row]
    assert not [c for c in cells if c[:1] in ("=", "+", "@", "\t", "\r") or (c[:1] == "-" and not _number(c))]
    members = list(csv.DictReader((tmp_path / "ev" / "members.csv").open(newline="", encoding="utf-8")))
    assert members[0]["handle"] == "'=cmd|'/c calc'!A1" and members[0]["bio"] == "'+SUM(1)\\u202e"
    assert members[0]["risk"] == "-0.5"  # a number, not a formula
    assert not list((tmp_path / "ev").glob(".tmp-*"))


def _number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def test_report_shows_hidden_characters_as_marks_and_clips_long_values(tmp_path):
    page = render_cluster_page(None, {"run_key": "r"}, hostile_cluster(), with_index=False)
    assert "\u202e" not in page and "\x1b" not in page and "\x07" not in page and "\u200b" not in page
    assert "admin\\u202egnp.exe" in page and "\\x1b[31mred\\x07" in page
    longest = max(len(m) for m in re.findall(r"W+", page))
    assert longest <= 400, longest  # a 65,536-character field shows as a clipped cell, not in full


def _chromium() -> str | None:
    import shutil

    return shutil.which("chromium") or shutil.which("chromium-browser")


LAYOUT_SCRIPT = """window.addEventListener('load', function () {
  var r = [], tiles = document.querySelectorAll('.tile'), overlaps = 0;
  for (var i = 0; i < tiles.length; i++) { r.push(tiles[i].getBoundingClientRect()); }
  for (var a = 0; a < r.length; a++) { for (var b = a + 1; b < r.length; b++) {
    if (r[a].left < r[b].right - 0.5 && r[b].left < r[a].right - 0.5 && r[a].top < r[b].bottom - 0.5
        && r[b].top < r[a].bottom - 0.5) { overlaps++; } } }
  var widest = 0; for (var t = 0; t < r.length; t++) { widest = Math.max(widest, r[t].width); }
  document.documentElement.setAttribute('data-layout', JSON.stringify({
    scroll: document.documentElement.scrollWidth, inner: window.innerWidth, tiles: r.length,
    overlaps: overlaps, widest: widest}));
});"""


@pytest.mark.slow
def test_long_unbroken_text_keeps_the_page_and_tiles_bounded_in_chromium(tmp_path):
    import base64
    import hashlib
    import json

    browser = _chromium()
    if browser is None:
        pytest.skip("chromium is not installed (`apt-get install -y chromium`)")
    page = render_cluster_page(None, {"run_key": "r"}, hostile_cluster(), with_index=False)
    digest = base64.b64encode(hashlib.sha256(LAYOUT_SCRIPT.encode()).digest()).decode()
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', page).group(0)
    page = page.replace(csp, csp[:-1] + f"; script-src 'sha256-{digest}'\"", 1)
    page = page.replace("<head>", f"<head><script>{LAYOUT_SCRIPT}</script>", 1)
    path = tmp_path / "cluster.html"
    path.write_text(page, encoding="utf-8")
    dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                          f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,1800",
                          "--virtual-time-budget=5000", "--dump-dom", path.as_uri()],
                         capture_output=True, text=True, timeout=180, check=False)
    found = re.search(r'data-layout="([^"]*)"', dom.stdout)
    assert found, dom.stderr[-2000:]
    layout = json.loads(found.group(1).replace("&quot;", '"'))
    assert layout["tiles"] == 30 and layout["overlaps"] == 0, layout
    assert layout["widest"] <= 121, layout
    assert layout["scroll"] <= layout["inner"] * 2, layout  # was 1.28 million px


def test_quarantine_cli_output_has_no_terminal_escapes(settings, tmp_path):
    """A hostile locator/reason reaches the terminal as visible escapes, one line per record."""
    import sys

    import sqlalchemy as sa

    from pipeline.core.db import ensure_schema, transaction
    from pipeline.core.runs import start_run

    ensure_schema(settings)
    start_run(settings, "q", str(tmp_path), "generic")
    with transaction(settings) as conn:
        conn.execute(sa.text("insert into quarantine (run_key, stage, source_file, locator, reason, excerpt)"
                             " values ('q', 'ingest', :f, 'line 2', :r, '')"),
                     {"f": "users\x1b]0;pwned\x07.csv", "r": "bad\nline \u202egnp.exe"})
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    out = subprocess.run([sys.executable, "-m", "pipeline.cli", "--home", str(tmp_path / "h"), "--database-url",
                          settings.database_url, "quarantine", "--run-key", "q"],
                         capture_output=True, text=True, env=env, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "[ingest] users\\x1b]0;pwned\\x07.csv line 2: bad\\x0aline \\u202egnp.exe", "1 quarantined"]


@pytest.mark.slow
def test_report_sweeps_stale_temp_files_and_writes_the_index_last(audited_report):  # noqa: F811
    """A write that died (kill, full disk) leaves .tmp-* files; the next report removes the old ones,
    and every page is in place before the index that links to it."""
    from pipeline.reporting.html import report_dir, write_report

    settings = audited_report["settings"]
    folder = report_dir(settings, RUN_KEY)
    stale, fresh = folder / ".tmp-abc.html", folder / ".tmp-def.html"
    for p in (stale, fresh):
        p.write_text("half a page")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    write_report(settings, RUN_KEY)
    assert not stale.exists() and fresh.exists()  # a fresh one may be another writer's, at work now
    fresh.unlink()
    pages = [p.stat().st_mtime_ns for p in folder.glob("cluster-*.html")]
    assert pages and (folder / "index.html").stat().st_mtime_ns >= max(pages)


@contextlib.contextmanager
def mounted(target: Path, *options: str):
    """A real small or read-only filesystem at target (root only), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs or a read-only bind")
    target.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", *options, str(target)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount here: {done.stderr.strip()}")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


def _cli(settings, home: Path, *args: str) -> subprocess.CompletedProcess:
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    return subprocess.run([sys.executable, "-m", "pipeline.cli", "--home", str(home), "--database-url",
                           settings.database_url, *args], capture_output=True, text=True, env=env, timeout=300,
                          check=False)


@pytest.mark.slow
def test_full_disk_and_read_only_home_give_one_line(audited_report, tmp_path):  # noqa: F811
    settings = audited_report["settings"]
    with mounted(tmp_path / "full", "-t", "tmpfs", "-o", "size=16k", "tmpfs") as full:
        done = _cli(settings, settings.home, "report", "--run-key", RUN_KEY, "--out", str(full / "r"))
        assert done.returncode == 2, done.stderr
        assert done.stderr.count("\n") == 1 and "No space left on device" in done.stderr, done.stderr
        assert done.stderr.startswith("profile-audit: error: cannot write")
        assert not list((full / "r").glob(".tmp-*")) and not (full / "r" / "index.html").exists()
    home = tmp_path / "ro-home"
    home.mkdir()
    with mounted(home, "--bind", "-o", "ro", str(home)):
        for args in (["report", "--run-key", RUN_KEY], ["evidence", audited_report["flags"][0]["cluster_id"],
                                                        "--run-key", RUN_KEY, "--format", "csv", "--out",
                                                        str(home / "ev")]):
            done = _cli(settings, home, *args)
            assert done.returncode == 2, done.stderr
            assert done.stderr.count("\n") == 1 and "Read-only file system" in done.stderr, done.stderr


def test_acquire_sweeps_stale_temp_files_from_the_image_store(settings, tmp_path):
    """A kill or a full disk while storing an avatar leaves a .tmp-* file; the next acquire removes it."""
    from export_fixtures import image_bytes

    from pipeline.core.db import ensure_schema
    from pipeline.core.runs import start_run
    from pipeline.images.acquire import acquire_avatars
    from pipeline.ingest.load import ingest_export

    export = tmp_path / "export"
    export.mkdir()
    (export / "a.jpg").write_bytes(image_bytes())
    (export / "manifest.csv").write_text("platform,account_id,avatar\nx,1,a.jpg\n")
    shard = settings.image_dir / "ab"
    shard.mkdir(parents=True)
    stale, fresh = shard / ".tmp-1.jpg", shard / ".tmp-2.jpg"
    for p in (stale, fresh):
        p.write_bytes(b"half an image")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    ensure_schema(settings)
    start_run(settings, "sweep", str(export), "generic")
    ingest_export(settings, "sweep", export, "generic")
    assert acquire_avatars(settings, "sweep").stored == 1
    assert not stale.exists() and fresh.exists()
