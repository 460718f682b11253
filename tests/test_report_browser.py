"""The evidence report in a real browser: Debian's chromium, headless, renders every page of a run's
report to a screenshot with no JavaScript error, no console message, no refused or failed load.

Each page is loaded twice, from a copy next to the original (so relative links resolve alike) that
has one added check script, allowed by a hash in the page's own Content-Security-Policy:
- with ``--dump-dom``: the script records load errors, CSP violations and broken images in an
  attribute that the test reads back; the attribute's presence proves the check ran;
- with ``--screenshot``: the PNG must be a real, non-blank image of the window's size.
Both at 1400 px wide: the page must not scroll sideways (``scrollWidth <= innerWidth``), and a run whose
detector has a random-initialised backbone shows the "demo detector" banner on every page.
Chromium's stderr (``--enable-logging=stderr``) must carry no console line in either run.

Without chromium on PATH the tests skip, unless PROFILE_AUDIT_REQUIRE_BROWSER=1 (set by .ci/run,
which installs chromium where it can), where they fail.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from test_report import (
    RUN_KEY,
    audited_report,  # noqa: F401  (the module-scoped fixture: one audit here too)
)

pytestmark = pytest.mark.slow  # a full audit, then chromium

WINDOW = (1400, 1800)
CHECK_SCRIPT = """(function () {
  var errors = [];
  window.addEventListener('error', function (ev) {
    var t = ev.target;
    errors.push(t && t !== window ? 'failed to load ' + (t.src || t.href || t.tagName) : 'script error: ' + ev.message);
  }, true);
  document.addEventListener('securitypolicyviolation', function (ev) {
    errors.push('CSP refused ' + ev.blockedURI + ' (' + ev.violatedDirective + ')');
  });
  window.addEventListener('load', function () {
    var imgs = document.images;
    for (var i = 0; i < imgs.length; i++) {
      if (!imgs[i].complete || imgs[i].naturalWidth === 0) { errors.push('broken image ' + i); }
    }
    var banner = document.querySelector('.banner');
    document.documentElement.setAttribute('data-report-check', JSON.stringify({
      images: imgs.length, svgs: document.querySelectorAll('svg').length, errors: errors,
      scroll: document.scrollingElement.scrollWidth, inner: window.innerWidth,
      banner: banner ? banner.textContent : null}));
    errors.forEach(function (m) { console.error('report check: ' + m); });
  });
})();"""
CONSOLE_LINE = re.compile(r"CONSOLE|Uncaught|net::ERR_|Failed to load resource|Refused to", re.IGNORECASE)


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("PROFILE_AUDIT_REQUIRE_BROWSER") == "1":
        pytest.fail("chromium is not installed: `apt-get install -y chromium` (Debian), or run `bash .ci/run`")
    pytest.skip("chromium is not installed (`apt-get install -y chromium`); .ci/run installs it and requires this test")


def checked_copy(page: Path) -> Path:
    """The page with the check script first in <head>, its hash added to the page's CSP."""
    text = page.read_text(encoding="utf-8")
    digest = base64.b64encode(hashlib.sha256(CHECK_SCRIPT.encode()).digest()).decode()
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', text)
    assert csp, f"{page.name} has no Content-Security-Policy"
    text = text.replace(csp.group(0), csp.group(0)[:-1] + f"; script-src 'sha256-{digest}'\"", 1)
    text = text.replace("<head>", f"<head><script>{CHECK_SCRIPT}</script>", 1)
    copy = page.with_name(f"_check-{page.name}")
    copy.write_text(text, encoding="utf-8")
    return copy


def run_chromium(args: list[str], page: Path, profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
         "--no-first-run", "--disable-extensions", f"--user-data-dir={profile}", "--virtual-time-budget=5000",
         *args, page.as_uri()],
        capture_output=True, text=True, timeout=180, check=False)


def console_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if CONSOLE_LINE.search(line)]


def render(page: Path, out_png: Path, profile: Path) -> dict:
    """Load one page in chromium twice (DOM check, screenshot); return the check result."""
    copy = checked_copy(page)
    try:
        dom = run_chromium(["--dump-dom", f"--window-size={WINDOW[0]},{WINDOW[1]}", "--hide-scrollbars"], copy, profile)
        assert dom.returncode == 0, dom.stderr[-2000:]
        assert not console_lines(dom.stderr), console_lines(dom.stderr)
        found = re.search(r"data-report-check=\"([^\"]*)\"", dom.stdout)
        assert found, f"the check script did not run on {page.name}:\n{dom.stderr[-2000:]}"
        check = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
        shot = run_chromium([f"--screenshot={out_png}", f"--window-size={WINDOW[0]},{WINDOW[1]}",
                             "--hide-scrollbars"], copy, profile)
        assert shot.returncode == 0, shot.stderr[-2000:]
        assert not console_lines(shot.stderr), console_lines(shot.stderr)
    finally:
        copy.unlink()
    return check


def assert_real_screenshot(png: Path) -> None:
    from PIL import Image, ImageStat

    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{png} is not a PNG"
    with Image.open(png) as img:
        img.verify()
    with Image.open(png) as img:
        assert img.size == WINDOW
        grey = img.convert("L")
        not_white = sum(grey.histogram()[:240]) / (img.width * img.height)
        assert not_white > 0.01, f"{png.name}: only {not_white:.2%} of the pixels are not white: a blank page"
        assert ImageStat.Stat(grey).stddev[0] > 5


def test_every_report_page_renders_in_chromium_without_errors(audited_report, tmp_path):  # noqa: F811
    """Every page, at 1400 px: no error, a real screenshot (the index's and the first cluster page's are kept
    under the test's tmp path), no sideways scrolling, and the demo-detector banner (the demo probe's
    backbone is pa-tiny-vit with random:0 weights)."""
    from pipeline.reporting.html import DEMO_BANNER, report_dir

    assert audited_report["summary"]["detector"]["real_detector"] is False
    folder = report_dir(audited_report["settings"], RUN_KEY)
    pages = sorted(folder.glob("*.html"))
    assert len(pages) == 1 + len(audited_report["flags"]) >= 2
    for page in pages:
        png = tmp_path / f"{page.stem}.png"
        check = render(page, png, tmp_path / "profile")
        assert check["errors"] == [], f"{page.name}: {check['errors']}"
        assert_real_screenshot(png)
        assert check["inner"] == WINDOW[0] and check["scroll"] <= check["inner"], f"{page.name} scrolls sideways: {check}"
        assert check["banner"] and check["banner"].startswith(DEMO_BANNER), f"{page.name}: {check['banner']}"
        if page.name.startswith("cluster-"):
            # every distinct avatar decoded as an image, and both charts are there (matched pairs may add more)
            assert check["images"] >= 1 and check["svgs"] >= 2, check
        else:  # the index shows each flagged cluster's avatars
            assert check["images"] >= len(audited_report["flags"]), check
    shots = sorted(p.name for p in tmp_path.glob("*.png"))
    assert "index.png" in shots and any(name.startswith("cluster-") for name in shots), shots
    assert sorted(p.name for p in folder.glob("*.html")) == [p.name for p in pages]  # the check copies are gone


def test_the_browser_check_catches_what_it_claims_to(tmp_path):
    """The same harness on a page with a missing image, an external load and an inline script reports all three."""
    from pipeline.reporting.html import CSP

    page = tmp_path / "broken.html"
    page.write_text(f'<!DOCTYPE html><html><head><meta charset="utf-8">'
                    f'<meta http-equiv="Content-Security-Policy" content="{CSP}"></head>'
                    f'<body><h1>broken</h1><img src="missing.png" width="50" height="50">'
                    f'<img src="https://example.invalid/x.png"><script>document.title = "ran"</script></body></html>')
    copy = checked_copy(page)
    dom = run_chromium(["--dump-dom"], copy, tmp_path / "profile")
    found = re.search(r"data-report-check=\"([^\"]*)\"", dom.stdout)
    assert found, dom.stderr[-2000:]
    errors = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))["errors"]
    assert any("missing.png" in e for e in errors), errors
    assert any("example.invalid" in e for e in errors), errors  # refused by the page's CSP
    lines = console_lines(dom.stderr)
    assert any("report check: broken image" in line for line in lines), lines  # the check's own console errors
    assert any("inline script" in line for line in lines), lines  # a script the report did not bring is refused
