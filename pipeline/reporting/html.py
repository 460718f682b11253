"""Stage `report`: the static HTML evidence report an investigator opens offline.

One folder per run, ``$PROFILE_AUDIT_HOME/reports/<safe run key>/``, laid out for the decision:
``index.html`` opens with a summary line and one card per flagged cluster (a sentence of its facts, a few
of its avatars, score, status, rules in plain words, the commands to run next); one ``cluster-<id>.html``
page per flagged cluster shows the matched images side by side, a contact sheet of its avatars with their
probabilities, a creation-date histogram, its handle patterns, a picture of the cluster graph and readable
member and edge tables. Raw features and run parameters are in collapsed sections. Every label and
probability names the detector's kind; a random-initialised backbone puts a "demo detector" banner on
every page.

The pages need nothing outside themselves: thumbnails are small JPEG data URIs made from the
content-addressed image store, the charts are inline SVG, and a Content-Security-Policy forbids
any other load. Every value from an export is escaped. The pages carry no wall-clock time, so a
rerun of a run key writes the same bytes.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import math
import re
import shlex
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from pipeline.config import Settings
from pipeline.core.db import transaction
from pipeline.core.storage import atomic_write, sweep_stale_temp
from pipeline.core.visible import visible
from pipeline.errors import UserError
from pipeline.networks.crossplatform import platform_of, platforms_of
from pipeline.reporting.detector_info import NOT_REAL_LABEL, label_text, load_detector_info, parts_text
from pipeline.reporting.evidence import load_cluster

THUMB_PX = 96
MAX_TILES = 400  # distinct images on one contact sheet
MAX_GRAPH_NODES = 300
MAX_TABLE_EDGES = 1000
MAX_TABLE_MEMBERS = 2000
MAX_LEDGER_FILES = 200  # export files in the ledger table: unbalanced and empty ones first
MAX_LEDGER_WARNINGS = 20  # one per file at most; the table lists the rest
MAX_REASONS = 50  # quarantine reason kinds on the index page
MIN_SPAN_DAYS = 14  # the histogram's shortest time axis
TILE_TEXT_CHARS = 40  # a handle on a contact-sheet tile
NODE_LABEL_CHARS = 16  # a handle written beside a graph node
MAX_NODE_LABELS = 60  # graph nodes with a written handle (the best-linked)
CELL_TEXT_CHARS = 300  # a handle, name, link or note in a table cell (bios: 200)
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
EDGE_COLOURS = ("#e6550d", "#31a354", "#756bb1", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#636363")

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fff;overflow-wrap:break-word}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0;max-width:100%}
td,th{border:1px solid #ccc;padding:3px 6px;vertical-align:top;text-align:left;max-width:32em;overflow-wrap:anywhere}
table.grid{table-layout:fixed;width:100%}table.grid td,table.grid th{max-width:none;overflow-wrap:break-word}
th{background:#f0f0f0}td.num{text-align:right;font-variant-numeric:tabular-nums}
code,.mono{font-family:ui-monospace,monospace;font-size:12px;word-break:break-all;overflow-wrap:anywhere}
table.grid td.mono{overflow-wrap:anywhere}
.sheet{display:flex;flex-wrap:wrap;gap:8px}
.tile{width:120px;box-sizing:border-box;border:1px solid #ccc;padding:4px;font-size:12px;overflow:hidden}
.tile img,.tile .missing{width:96px;height:96px;display:block;margin:0 auto 4px;object-fit:contain;background:#eee}
.tile .missing{font-size:11px;text-align:center;line-height:96px}
.tile .h{white-space:nowrap;overflow:hidden;text-overflow:ellipsis}.tile .mono{font-size:10px}
.syn{color:#b00;font-weight:bold}.note{color:#666}.legend span{display:inline-block;margin-right:1em}
.swatch{display:inline-block;width:12px;height:12px;vertical-align:middle;margin-right:4px}
.warn{border:2px solid #b00;background:#fff0f0;color:#600;padding:.5em 1em;margin:.5em 0;font-weight:bold}
.banner{background:#b00;color:#fff;font-weight:bold;padding:.5em 1em;margin:0 0 1em;font-size:1.1em}
.parts{font-size:11px;color:#444}
.card{border:1px solid #ccc;border-left:4px solid #b00;padding:.6em 1em;margin:1em 0}
.lead{font-size:1.05em;margin:.2em 0 .5em}.thumbs{display:flex;flex-wrap:wrap;gap:4px;margin:.4em 0}
.thumbs img{width:64px;height:64px;object-fit:contain;background:#eee;border:1px solid #ccc}
.cmd{background:#f6f6f6;padding:2px 6px;margin:2px 0;display:block}
details{margin:1em 0}summary{cursor:pointer;font-weight:bold}
ul.pairs{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:8px}li.pair{border:1px solid #ccc;padding:4px;width:392px;box-sizing:border-box}
.pair-image{margin:0;width:188px;font-size:11px}.pair-image img{display:block;margin:0 auto 2px}.pair-kind{margin:.2em 0;font-size:12px}li.pair-unconfirmed{border-style:dashed}
"""


def e(value: Any) -> str:
    """Escape anything for HTML text and attribute values; None shows as an empty string. Control and
    bidi characters become visible escapes first (``\\u202e``), so a handle cannot read backwards."""
    return html.escape(visible(value, keep="\n"), quote=True)


def clip(value: Any, limit: int) -> str:
    """At most ``limit`` characters of a value (an ellipsis says it was cut): bounded tiles and cells."""
    text = "" if value is None else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def safe_name(key: str) -> str:
    """A file-system-safe name for a run key or cluster id; a hash suffix keeps distinct keys distinct."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("._") or "run"
    if cleaned != key:
        cleaned = f"{cleaned[:80]}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"
    return cleaned


def report_dir(settings: Settings, run_key: str) -> Path:
    return settings.home / "reports" / safe_name(run_key)


def cluster_page_name(cluster_id: str) -> str:
    return f"cluster-{safe_name(cluster_id)}.html"


@dataclass(frozen=True)
class ReportResult:
    path: Path  # the index page, or the cluster page when one cluster was asked for
    pages: int
    flagged_clusters: int

    def as_dict(self) -> dict[str, Any]:
        return {"pages": self.pages, "flagged_clusters": self.flagged_clusters, "report": str(self.path)}


# ---------------------------------------------------------------------------------------------- data


def _load_run(conn: sa.Connection, run_key: str) -> dict[str, Any]:
    run = conn.execute(sa.text(
        "select run_key, kind, export_path, export_format, params, detector_id from runs where run_key = :k"),
        {"k": run_key}).mappings().one_or_none()
    if run is None:
        raise UserError(f"no run {run_key!r} in the database; use the run key that `profile-audit audit` printed")
    return {**dict(run), "detector_info": load_detector_info(conn, run["detector_id"], run["params"] or {})}


def _load_flags(conn: sa.Connection, run_key: str) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(sa.text(
        "select f.flag_id, f.cluster_id, f.kind, f.score, f.rules, f.evidence, f.status, f.status_note,"
        " c.size, c.cluster_id is not null as has_cluster"
        " from flags f left join clusters c on c.run_key = f.run_key and c.cluster_id = f.cluster_id"
        " where f.run_key = :k order by f.score desc, f.flag_id"), {"k": run_key}).mappings()]


def _load_cluster(settings: Settings | None, conn: sa.Connection, run_key: str, cluster_id: str) -> dict[str, Any]:
    cluster = load_cluster(conn, run_key, cluster_id)
    if cluster is None:
        raise UserError(f"no cluster {cluster_id!r} in run {run_key!r}; "
                        f"list them with `profile-audit flags --run-key {run_key}`")
    return {**cluster, "pairs_html": _pairs_section(settings, conn, run_key, cluster_id)}


def _pairs_section(settings: Settings | None, conn: sa.Connection, run_key: str, cluster_id: str) -> str:
    """The side-by-side matched images (pipeline/reporting/pairs.py), read while the connection is open and
    shown near the top of the cluster page."""
    from pipeline.reporting.pairs import cluster_image_pairs, pairs_section_html  # it imports this module

    return pairs_section_html(settings, cluster_image_pairs(conn, run_key, cluster_id))


MAX_INDEX_THUMBS = 6  # distinct avatars shown beside a flag on the index
MAX_QUARANTINE_EXAMPLES = 3  # example rows per quarantine reason on the index
EXCERPT_CHARS = 120


def _load_flag_faces(conn: sa.Connection, run_key: str) -> dict[str, list[dict[str, Any]]]:
    """Per flagged cluster, its distinct avatars (most shown first): sha256, accounts, label, probability,
    stored path. The index's thumbnails and its one-sentence summaries read them."""
    rows = conn.execute(sa.text(
        "select m.cluster_id, g.avatar_sha256 as sha256, count(*) as accounts, bool_or(g.avatar_label) as label,"
        " max(g.avatar_probability) as probability, max(i.storage_path) as storage_path"
        " from flags f join cluster_members m on m.run_key = f.run_key and m.cluster_id = f.cluster_id"
        " join account_signals g on g.run_key = m.run_key and g.account_key = m.account_key"
        " left join images i on i.sha256 = g.avatar_sha256"
        " where f.run_key = :k and g.avatar_sha256 is not null group by m.cluster_id, g.avatar_sha256"
        " order by m.cluster_id, count(*) desc, max(g.avatar_probability) desc nulls last, g.avatar_sha256"),
        {"k": run_key}).mappings()
    faces: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        faces[r["cluster_id"]].append(dict(r))
    return dict(faces)


def _load_quarantine_examples(conn: sa.Connection, run_key: str) -> dict[str, list[dict[str, Any]]]:
    """The first few quarantined rows of each reason kind (keyed as ``reasons_by_kind`` keys them)."""
    from pipeline.ingest.quarantine import reason_kind

    examples: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in conn.execute(sa.text("select stage, source_file, locator, reason, excerpt from quarantine"
                                  " where run_key = :k order by stage, source_file, locator, reason"),
                          {"k": run_key}).mappings():
        key = f"{r['stage']}: {reason_kind(r['reason'])}"
        if len(examples[key]) < MAX_QUARANTINE_EXAMPLES:
            examples[key].append(dict(r))
    return dict(examples)


# ---------------------------------------------------------------------------------------------- pictures


def thumbnail_data_uri(settings: Settings, storage_path: str | None) -> str | None:
    """A small JPEG of a stored image as a data URI; None when the file is gone or unreadable."""
    if not storage_path:
        return None
    import warnings

    from PIL import Image, ImageOps

    path = settings.image_dir / storage_path
    try:  # the store holds only images validated at acquisition; still, never let one break the report
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.draft("RGB", (THUMB_PX * 2, THUMB_PX * 2))  # JPEG: decode at a reduced scale, much faster
                img = ImageOps.exif_transpose(img)
                img = img.convert("RGBA" if "A" in img.getbands() or "transparency" in img.info else "RGB")
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        return None
    if img.mode == "RGBA":  # flatten onto white, as the scorer sees it
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img, mask=img.getchannel("A"))
        img = background
    img.thumbnail((THUMB_PX, THUMB_PX), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _day_bins(days: Sequence[date], max_bins: int = 60) -> list[tuple[date, date, int]]:
    """(first day, last day, count) bins covering the whole span; wider bins for long spans."""
    first, last = min(days), max(days)
    if (last - first).days < MIN_SPAN_DAYS:  # a one-day burst shows as a spike, not as one full-width bar
        pad = (MIN_SPAN_DAYS - (last - first).days) // 2
        first, last = first - timedelta(days=pad), last + timedelta(days=pad)
    span = (last - first).days + 1
    width = max(1, math.ceil(span / max_bins))
    counts = Counter((d - first).days // width for d in days)
    return [(first + timedelta(days=i * width), min(last, first + timedelta(days=i * width + width - 1)), counts.get(i, 0))
            for i in range(math.ceil(span / width))]


def svg_histogram(created: Iterable[Any], width: int = 640, height: int = 200) -> str:
    """Inline SVG bar chart of account creation dates (UTC days)."""
    days = [c.date() if hasattr(c, "date") else c for c in created if c is not None]
    if not days:
        return '<p class="note">No creation dates in the export for these accounts.</p>'
    bins = _day_bins(days)
    peak = max(n for _, _, n in bins)
    left, bottom, top = 40, 30, 10
    plot_w, plot_h = width - left - 10, height - bottom - top
    bar_w = plot_w / len(bins)
    parts = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img"'
              f' aria-label="creation-date histogram">'),
             f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#444"/>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#444"/>',
             f'<text x="{left - 4}" y="{top + 10}" text-anchor="end" font-size="11">{peak}</text>',
             f'<text x="{left - 4}" y="{top + plot_h}" text-anchor="end" font-size="11">0</text>']
    for i, (start, end, n) in enumerate(bins):
        if not n:
            continue
        h = plot_h * n / peak
        label = start.isoformat() if start == end else f"{start.isoformat()} to {end.isoformat()}"
        parts.append(f'<rect x="{left + i * bar_w + 1:.1f}" y="{top + plot_h - h:.1f}" width="{max(bar_w - 2, 1):.1f}"'
                     f' height="{h:.1f}" fill="#3182bd"><title>{e(label)}: {n} accounts</title></rect>')
    parts.append(f'<text x="{left}" y="{height - 8}" font-size="11">{e(bins[0][0].isoformat())}</text>')
    parts.append(f'<text x="{left + plot_w}" y="{height - 8}" font-size="11" text-anchor="end">'
                 f'{e(bins[-1][1].isoformat())}</text>')
    parts.append("</svg>")
    bin_days = (bins[0][1] - bins[0][0]).days + 1
    caption = f"{len(days)} accounts with a creation date; one bar per {'day' if bin_days == 1 else f'{bin_days} days'}."
    return "".join(parts) + f'<p class="note">{e(caption)}</p>'


def graph_layout(n: int, pairs: Sequence[tuple[int, int]], iterations: int = 150) -> list[tuple[float, float]]:
    """Deterministic Fruchterman-Reingold: starts on a circle (no randomness), positions in [0, 1]."""
    import numpy as np

    if n == 0:
        return []
    if n == 1:
        return [(0.5, 0.5)]
    angles = 2 * np.pi * np.arange(n) / n
    x, y = np.cos(angles) * 0.5, np.sin(angles) * 0.5
    k2 = 1.0 / n  # the ideal edge length k = sqrt(area / n), squared
    heat = 0.1
    index = np.array(pairs, dtype=int).reshape(-1, 2)
    a, b = index[:, 0], index[:, 1]
    for _ in range(iterations):
        dx, dy = x[:, None] - x[None, :], y[:, None] - y[None, :]
        push = k2 / np.maximum(dx * dx + dy * dy, 1e-6)  # repulsion k^2/d along the unit vector: delta * k^2/d^2
        disp_x, disp_y = (dx * push).sum(1), (dy * push).sum(1)
        if len(index):
            ex, ey = x[a] - x[b], y[a] - y[b]
            pull = np.sqrt(ex * ex + ey * ey) / math.sqrt(k2)  # attraction d^2/k along the edge
            disp_x -= np.bincount(a, ex * pull, n) - np.bincount(b, ex * pull, n)
            disp_y -= np.bincount(a, ey * pull, n) - np.bincount(b, ey * pull, n)
        length = np.maximum(np.sqrt(disp_x * disp_x + disp_y * disp_y), 1e-9)
        step = np.minimum(length, heat) / length
        x, y = x + disp_x * step, y + disp_y * step
        heat *= 0.97
    pos = np.column_stack([x, y])
    pos -= pos.min(0)
    span = pos.max(0)
    pos /= np.where(span > 0, span, 1.0)
    return [(float(x), float(y)) for x, y in pos]


def svg_graph(members: Sequence[dict[str, Any]], edges: Sequence[dict[str, Any]], size: int = 640,
              detector: dict[str, Any] | None = None) -> tuple[str, str]:
    """Inline SVG of the cluster graph and its HTML legend. Large clusters show their best-linked nodes;
    ``detector`` (``detector_info``) marks the labels of a detector that is not real in the legend."""
    degree = Counter()
    for edge in edges:
        degree[edge["a_key"]] += 1
        degree[edge["b_key"]] += 1
    keys = [m["account_key"] for m in members]
    note = ""
    if len(keys) > MAX_GRAPH_NODES:
        keys = sorted(sorted(keys, key=lambda k: (-degree[k], k))[:MAX_GRAPH_NODES])
        note = f"Showing the {MAX_GRAPH_NODES} best-linked of {len(members)} accounts."
    where = {k: i for i, k in enumerate(keys)}
    shown = [ed for ed in edges if ed["a_key"] in where and ed["b_key"] in where]
    pos = graph_layout(len(keys), sorted({(where[ed["a_key"]], where[ed["b_key"]]) for ed in shown}))
    types = sorted({ed["edge_type"] for ed in edges})
    colour = {t: EDGE_COLOURS[i % len(EDGE_COLOURS)] for i, t in enumerate(types)}
    by_key = {m["account_key"]: m for m in members}
    pad = 20
    xy = [(pad + x * (size - 2 * pad), pad + y * (size - 2 * pad)) for x, y in pos]
    parts = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" role="img"'
              f' aria-label="cluster graph" style="border:1px solid #ccc">')]
    for ed in shown:
        (x1, y1), (x2, y2) = xy[where[ed["a_key"]]], xy[where[ed["b_key"]]]
        parts.append(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{colour[ed["edge_type"]]}"'
                     f' stroke-opacity="0.6"><title>{e(ed["edge_type"])}: {e(ed["a_key"])} - {e(ed["b_key"])}</title></line>')
    labelled = set(sorted(keys, key=lambda k: (-degree[k], k))[:MAX_NODE_LABELS])
    kind = f", {detector_kind(detector)}" if detector is not None else ""
    for key, (x, y) in zip(keys, xy):
        m = by_key[key]
        fill = "#999999" if m["avatar_label"] is None else ("#d62728" if m["avatar_label"] else "#1f77b4")
        prob = "" if m["avatar_probability"] is None else f", p={m['avatar_probability']:.3f}{kind}"
        handle = m["handle"] or key
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="6" fill="{fill}" stroke="#fff">'
                     f'<title>{e(clip(handle, TILE_TEXT_CHARS))} ({e(clip(key, CELL_TEXT_CHARS))}{e(prob)})</title></circle>')
        if key in labelled:  # a short label beside the node; the <title> has the whole handle
            anchor, dx = ("end", -8) if x > size / 2 else ("start", 8)
            parts.append(f'<text x="{x + dx:.1f}" y="{y + 4:.1f}" font-size="10" fill="#333" text-anchor="{anchor}">'
                         f'{e(clip(handle, NODE_LABEL_CHARS))}</text>')
    parts.append("</svg>")
    legend = ['<p class="legend">',
              '<span><i class="swatch" style="background:#d62728"></i>avatar labelled synthetic'
              f'{"" if detector is None or detector.get("real_detector", True) else f" ({NOT_REAL_LABEL})"}</span>',
              '<span><i class="swatch" style="background:#1f77b4"></i>avatar not labelled</span>',
              '<span><i class="swatch" style="background:#999999"></i>no scored avatar</span>']
    legend += [f'<span><i class="swatch" style="background:{colour[t]}"></i>{e(t)} edge</span>' for t in types]
    if detector is not None:
        legend.append(f"<span>avatar labels by the {e(detector_kind(detector))}</span>")
    legend.append("</p>")
    if len(keys) > MAX_NODE_LABELS:
        note = (note + " " if note else "") + (f"Handles are written beside the {MAX_NODE_LABELS} best-linked accounts;"
                                                " hover over a node for its handle.")
    if note:
        legend.append(f'<p class="note">{e(note)}</p>')
    return "".join(parts), "".join(legend)


# ---------------------------------------------------------------------------------------------- pages


DEMO_BANNER = "demo detector: detects nothing real"
# the flag rules in plain words, beside their names (pipeline/flags/rules.py)
RULE_NAMES = {"shared_avatar": "the same or near-duplicate pictures",
              "synthetic_faces": "avatars labelled as generated faces",
              "batch_created": "created together, in bursts unusual for the population",
              "image_ring": "near-duplicate pictures confirmed by a second measure",
              "templated_handles": "handles made from one template",
              "coordinated_activity": "posting or reposting together (co-activity)"}


def detector_kind(info: dict[str, Any]) -> str:
    """The detector in words, for every place that shows a label or a probability: its name (kind and
    backbone), and "demo detector: detects nothing real" when its backbone is random-initialised."""
    name = str(info.get("name") or info.get("kind") or "unknown detector")
    return name if info.get("real_detector", True) else f"{name}, {DEMO_BANNER}"


def _banner_html(info: dict[str, Any] | None) -> str:
    """The banner at the top of every page of a run whose detector is not real."""
    if info is None or info.get("real_detector", True):
        return ""
    return (f'<div class="banner" role="alert">{e(DEMO_BANNER)}: the avatar labels and probabilities on this page'
            f" come from {e(info.get('name') or info.get('kind'))}, a random-initialised backbone.</div>")


def _page(title: str, body: str, info: dict[str, Any] | None = None) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{e(title)}</title><style>{STYLE}</style></head><body>\n{_banner_html(info)}{body}\n</body></html>\n")


def _compact(value: Any, limit: int = 400) -> str:
    text = json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _rules_html(rules: Sequence[str], reasons: dict[str, str], info: dict[str, Any] | None = None) -> str:
    """Each rule that fired: its plain-language name, its name, and why it fired (the flag's evidence)."""
    items = []
    for r in rules:
        why = e(reasons.get(r, ""))
        if r == "synthetic_faces" and info is not None:
            why += f" <i>(labels by the {e(detector_kind(info))})</i>"
        plain = RULE_NAMES.get(r, r.replace("_", " "))
        items.append(f"<li><b>{e(plain)}</b> <code>{e(r)}</code>: {why}</li>")
    return "<ul>" + "".join(items) + "</ul>"


def _details(summary: str, body: str) -> str:
    """A collapsed section: raw values an investigator rarely needs, out of the way."""
    return f"<details><summary>{e(summary)}</summary>{body}</details>"


def _value_text(value: Any, limit: int = 120) -> str:
    """A readable value in a table cell: numbers rounded, lists shortened, dicts as ``k v`` pairs."""
    if isinstance(value, bool) or value is None:
        return str(value).lower() if value is not None else ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        shown = ", ".join(_value_text(v, 40) for v in value[:5])
        return clip(shown + (f", … ({len(value)} in all)" if len(value) > 5 else ""), limit)
    if isinstance(value, dict):
        return clip("; ".join(f"{k} {_value_text(v, 40)}" for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))),
                    limit)
    return clip(value, limit)


def _pairs_list(mapping: dict[str, Any] | None, limit: int = 200) -> str:
    """A dict (edge evidence, risk contributions) as one ``key: value`` line each, escaped and clipped."""
    if not mapping:
        return ""
    if not isinstance(mapping, dict):
        return e(clip(_compact(mapping), limit))
    return "".join(f"<div>{e(clip(k, 60))}: {e(_value_text(v, limit))}</div>"
                   for k, v in sorted(mapping.items(), key=lambda kv: str(kv[0])))


def _contributions_html(contributions: dict[str, Any] | None) -> str:
    """An account's risk contributions, largest first, one line each (the signals that added nothing left out)."""
    if not contributions:
        return ""
    if not isinstance(contributions, dict):
        return e(clip(_compact(contributions), CELL_TEXT_CHARS))
    numeric = sorted(((k, v) for k, v in contributions.items() if isinstance(v, (int, float)) and v),
                     key=lambda kv: (-kv[1], kv[0]))
    other = {k: v for k, v in contributions.items() if not isinstance(v, (int, float))}
    lines = [f"<div>{e(clip(k, 60))} {float(v):+.3f}</div>" for k, v in numeric]
    return "".join(lines) + _pairs_list(other)


def _kv_table(items: Iterable[tuple[str, Any]]) -> str:
    """A two-column table; a small dict value (thresholds, edge-type counts) becomes a nested table."""
    rows = []
    for k, v in items:
        if isinstance(v, dict) and v and len(v) <= 60:
            cell = _kv_table(sorted(v.items()))
        else:
            cell = e(_compact(v) if isinstance(v, (dict, list)) else clip(v, CELL_TEXT_CHARS))
        rows.append(f"<tr><th>{e(k)}</th><td>{cell}</td></tr>")
    return f"<table>{''.join(rows)}</table>"


def _num(x: float | None) -> str:
    return "" if x is None else f"{x:.3f}"


def _prob(p: float | None) -> str:
    return "not scored" if p is None else f"{p:.3f}"


def _label_html(label: bool | None, info: dict[str, Any] | None) -> str:
    """An avatar label; "synthetic (not a real detector)" when the run's detector is not real."""
    text = label_text(label, info)
    return f'<span class="syn">{e(text)}</span>' if label else e(text)


def _parts_html(parts: dict[str, Any] | None) -> str:
    """An avatar stack score's logit parts (``CLIP +3.10, face +0.40, eye +2.20``); "" for other detectors."""
    text = parts_text(parts)
    return f'<div class="parts">{e(text)}</div>' if text else ""


def _caveat_html(info: dict[str, Any] | None) -> str:
    if info is None or info.get("real_detector", True):
        return ""
    return f'<p class="warn">Detector {e(info["id"])}: {e(info["caveat"])}. Its avatar labels mean nothing.</p>'


def _rates_table(header: str, rates: dict[str, float], conditions: dict[str, dict[str, float]] | None = None) -> str:
    """One row per generator or real source; one column per recorded condition (clean, jpeg_q75, left_out...)."""
    if not conditions:
        rows = "".join(f'<tr><td>{e(name)}</td><td class="num">{rate:.3f}</td></tr>' for name, rate in rates.items())
        return f"<table><tr><th>{e(header)}</th><th>rate</th></tr>{rows}</table>"
    # the conditions on seen sources first, then "left out of training" (the figure for data it never saw)
    columns = sorted(dict.fromkeys(c for per in conditions.values() for c in per), key=lambda c: c == "left_out")
    rows = "".join(f"<tr><td>{e(name)}</td>" + "".join(
        f'<td class="num">{"" if per.get(c) is None else f"{per[c]:.3f}"}</td>' for c in columns) + "</tr>"
        for name, per in conditions.items())
    names = {"left_out": "left out of training"}
    return f"<table><tr><th>{e(header)}</th>{''.join(f'<th>{e(names.get(c, c))}</th>' for c in columns)}</tr>{rows}</table>"


def _measured_line(info: dict[str, Any]) -> str:
    """The detector's measured quality in one sentence, from its own file, where labels are shown away from
    the index's Detector section (which has the full table)."""
    from pipeline.reporting.detector_info import rates_text

    measured = info.get("measured") or {}
    if not (measured.get("tpr_by_generator") or measured.get("fpr_by_real_source")):
        return " Nothing was measured on it."
    return (f" Measured at its threshold: TPR by generator {rates_text(measured.get('tpr_by_generator') or {})};"
            f" FPR by real source {rates_text(measured.get('fpr_by_real_source') or {})}.")


def detector_section(run: dict[str, Any]) -> str:
    """The run page's Detector section: which detector labelled every avatar of the run, how the run chose it,
    what was measured on it, and the caveat (in a warning box) when it is not a real detector."""
    info = run.get("detector_info")
    out = ["<h2>Detector</h2>"]
    if info is None:
        detector = run.get("detector_id")
        text = (f"Detector {detector} is not in the detectors table; nothing is known about it." if detector
                else "No detector: the avatars of this run were not scored.")
        out.append(f'<p class="note">{e(text)}</p>')
        return "".join(out)
    out.append(_caveat_html(info))
    chosen = {"shipped": "the shipped detector (no detector was promoted)",
              "promoted": "the promoted default detector"}.get(info.get("chosen", ""), info.get("chosen") or "")
    out.append("<p>Every avatar of this run was labelled by this detector.</p>" + _kv_table([
        ("detector", info["id"]), ("kind", info["kind"]), ("name", info["name"]), ("chosen as", chosen),
        ("backbone", ", ".join(info["backbones"]) or "none"),
        ("real detector", "yes" if info["real_detector"] else "no: " + info["caveat"])]))
    for note in (run.get("params") or {}).get("notes", []):
        out.append(f'<p class="note">NOTE {e(note)}</p>')
    measured = info["measured"]
    out.append(f"<p>How it was measured: {e(info['how_measured'])}.</p>")
    conditions = measured.get("by_condition") or {}
    if measured.get("tpr_by_generator") or conditions.get("tpr_by_generator"):
        out.append("<p>True-positive rate per generator:</p>"
                   + _rates_table("generator", measured["tpr_by_generator"], conditions.get("tpr_by_generator")))
    if measured.get("fpr_by_real_source") or conditions.get("fpr_by_real_source"):
        out.append("<p>False-positive rate per real source:</p>"
                   + _rates_table("real source", measured["fpr_by_real_source"], conditions.get("fpr_by_real_source")))
    if measured.get("overall") and not (measured.get("tpr_by_generator") or measured.get("fpr_by_real_source")):
        overall = measured["overall"]
        out.append(f'<p>Overall: {", ".join(f"{k.upper()} {v:.3f}" for k, v in overall.items())}'
                   " (no per-generator or per-source figures recorded).</p>")
    return "".join(out)


def _contact_sheet(settings: Settings, members: Sequence[dict[str, Any]], info: dict[str, Any] | None) -> list[str]:
    """One tile per distinct image, with its probability, label and score parts, and the accounts showing it."""
    out = ["<h2>Contact sheet</h2>"]
    by_image: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for m in members:
        if m["avatar_sha256"]:
            by_image[m["avatar_sha256"]].append(m)
    tiles = sorted(by_image.items(), key=lambda kv: (-len(kv[1]), -(kv[1][0]["avatar_probability"] or 0), kv[0]))
    without = sum(1 for m in members if not m["avatar_sha256"])
    by = f" Probabilities and labels by the {detector_kind(info)}." if info is not None else ""
    out.append(f'<p class="note">{len(by_image)} distinct avatars for {len(members)} accounts'
               f'{f"; {without} accounts have no stored avatar" if without else ""}.{e(by)}</p><div class="sheet">')
    for sha, showing in tiles[:MAX_TILES]:
        first = showing[0]
        uri = thumbnail_data_uri(settings, first["storage_path"])
        picture = (f'<img src="{e(uri)}" alt="avatar {e(sha[:12])}" width="{THUMB_PX}" height="{THUMB_PX}">' if uri
                   else '<div class="missing">image file missing</div>')
        label = _label_html(first["avatar_label"], info)
        handles = "".join(f'<div class="h" title="{e(clip(h, CELL_TEXT_CHARS))}">{e(clip(h, TILE_TEXT_CHARS))}</div>'
                          for h in (m["handle"] or m["account_id"] for m in showing[:4]))
        more = f'<div class="note">+{len(showing) - 4} more</div>' if len(showing) > 4 else ""
        out.append(f'<div class="tile" title="{e(sha)}">{picture}<div>p = {e(_prob(first["avatar_probability"]))} {label}</div>'
                   f'{_parts_html(first.get("avatar_parts"))}'
                   f'<div>{len(showing)} account{"s" if len(showing) != 1 else ""}:</div>{handles}{more}'
                   f'<div class="mono">{e(sha[:16])}</div></div>')
    out.append("</div>")
    if len(tiles) > MAX_TILES:
        out.append(f'<p class="note">{len(tiles) - MAX_TILES} more distinct avatars not shown.</p>')
    return out


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def flag_sentence(size: int, creation_days: dict[str, int], template_share: float, faces: Sequence[dict[str, Any]],
                  rules: Sequence[str], info: dict[str, Any] | None) -> str:
    """One sentence of a flagged cluster's facts, e.g. "24 accounts created on 2 days with templated handles
    share 4 distinct avatars, 4 of them labelled generated faces by ...". ``faces``: its distinct avatars
    (``label``, ``accounts``). Says "synthetic" and names the detector when the detector is not real."""
    subject = _plural(size, "account")
    if creation_days:
        day, top = max(creation_days.items(), key=lambda kv: (kv[1], kv[0]))
        if len(creation_days) <= 3:
            subject += f" created on {_plural(len(creation_days), 'day')}"
        elif top >= 2:
            subject += f", {top} of them created on {day},"
    templated = round(template_share * size)
    if templated >= size:
        subject += " all with templated handles," if subject.endswith(",") else " with templated handles"
    elif templated >= 2:
        subject += ("" if subject.endswith(",") else ",") + f" {templated} of them with templated handles,"
    distinct = len(faces)
    labelled = sum(1 for f in faces if f.get("label"))
    if not distinct:
        verb = "have no stored avatar"
    else:
        verb = f"share {_plural(distinct, 'distinct avatar')}"
        if labelled and info is not None and not info.get("real_detector", True):
            verb += f", {labelled} of which the demo detector labels synthetic (it detects nothing real)"
        elif labelled:
            what = "a generated-looking face" if labelled == 1 else "generated-looking faces"
            verb += f", {labelled} of them {what} per the {info['name'] if info else 'detector'}"
    extra = []
    if "coordinated_activity" in rules:
        extra.append("they post or repost together")
    if "image_ring" in rules:
        extra.append("a second image measure confirms their near-duplicate pictures")
    return f"{subject} {verb}" + ("; " + "; ".join(extra) if extra else "") + "."


def next_commands(run_key: str, flag_id: str, cluster_id: str) -> list[str]:
    """What an investigator runs next on a flag: set its status (takes the flag id), export its evidence
    (takes the cluster id and the run)."""
    q = shlex.quote
    return [f"profile-audit flag set-status {q(flag_id)} confirmed --note {q('why')}",
            f"profile-audit flag set-status {q(flag_id)} dismissed --note {q('why')}",
            f"profile-audit evidence {q(cluster_id)} --run-key {q(run_key)} --format csv"]


def _commands_html(run_key: str, flag_id: str, cluster_id: str) -> str:
    return ('<div class="note">Next: set the status (takes the flag id; statuses confirmed, dismissed, escalated, new),'
            " or export the evidence (takes the cluster id):</div>"
            + "".join(f'<code class="cmd">{e(c)}</code>' for c in next_commands(run_key, flag_id, cluster_id)))


def _member_faces(members: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    by_image: dict[str, dict[str, Any]] = {}
    for m in members:
        if m["avatar_sha256"]:
            face = by_image.setdefault(m["avatar_sha256"], {"label": m["avatar_label"], "accounts": 0})
            face["accounts"] += 1
    return list(by_image.values())


def _platforms_note(members: Sequence[dict[str, Any]]) -> str:
    """Members per platform, when the cluster spans several (a run of several exports, issue 23 item 4)."""
    counts = platforms_of(m["account_key"] for m in members)
    if len(counts) < 2:
        return ""
    return ('<p class="note">Across platforms: ' + e(", ".join(f"{p} {n}" for p, n in counts.items()))
            + ". Edges between accounts on different platforms name both in their evidence.</p>")


def _handle_patterns(members: Sequence[dict[str, Any]]) -> str:
    """The handle templates the members share, with example handles."""
    examples: dict[str, list[str]] = defaultdict(list)
    for m in members:
        if m.get("handle_template"):
            examples[m["handle_template"]].append(m["handle"] or m["account_id"])
    shared = sorted(((t, hs) for t, hs in examples.items() if len(hs) >= 2), key=lambda kv: (-len(kv[1]), kv[0]))
    out = ["<h2>Handle patterns</h2>"]
    if not shared:
        out.append('<p class="note">No handle template is shared by two or more members.</p>')
        return "".join(out)
    out.append('<p class="note">A template replaces the digits and letter runs of a handle; accounts made by one'
               " script tend to share one.</p><table><tr><th>template</th><th>accounts</th><th>examples</th></tr>")
    for template, handles in shared[:20]:
        shown = ", ".join(e(clip(h, TILE_TEXT_CHARS)) for h in sorted(handles)[:3])
        out.append(f'<tr><td class="mono">{e(clip(template, CELL_TEXT_CHARS))}</td><td class="num">{len(handles)}</td>'
                   f"<td>{shown}</td></tr>")
    out.append("</table>")
    if len(shared) > 20:
        out.append(f'<p class="note">{len(shared) - 20} more shared templates not listed.</p>')
    return "".join(out)


def _edge_tables(edges: Sequence[dict[str, Any]], handles: dict[str, str]) -> list[str]:
    """The edge evidence, one readable table per edge type: both accounts with their handles, the weight,
    and the evidence as one ``key: value`` line each; the parameters of each type in a collapsed section."""
    out = [f"<h2>Edge evidence ({len(edges)} edges)</h2>"]
    by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for ed in edges:
        by_type[ed["edge_type"]].append(ed)
    params_by_type = {t: rows[0]["params"] for t, rows in by_type.items()}
    left = MAX_TABLE_EDGES

    def who(key: str) -> str:
        handle = handles.get(key)
        return (f"{e(clip(handle, TILE_TEXT_CHARS))}<br>" if handle else "") + f'<span class="mono">{e(key)}</span>'

    for edge_type, rows in sorted(by_type.items()):
        out.append(f"<h3>{e(edge_type)} ({len(rows)})</h3>")
        if left <= 0:
            continue
        out.append('<table class="grid"><colgroup><col style="width:22%"><col style="width:22%"><col style="width:8%">'
                   "<col></colgroup><tr><th>account a</th><th>account b</th><th>weight</th><th>evidence</th></tr>")
        for ed in rows[:left]:
            out.append(f'<tr><td>{who(ed["a_key"])}</td><td>{who(ed["b_key"])}</td><td class="num">{ed["weight"]:g}</td>'
                       f'<td>{_pairs_list(ed["evidence"])}</td></tr>')
        out.append("</table>")
        left -= len(rows)
    if len(edges) > MAX_TABLE_EDGES:
        out.append(f'<p class="note">{len(edges) - MAX_TABLE_EDGES} more edges not listed; '
                   f'`profile-audit flags --run-key KEY --json` has the flag evidence.</p>')
    if params_by_type:
        out.append(_details("Parameters that made each edge type", _kv_table(sorted(params_by_type.items()))))
    return out


def _pair_chance_html(pair: dict[str, Any]) -> str:
    """A pair flag's case: per co-activity edge, its weights, how often chance would make it, and the
    co-occurring posts (the shared object, both posts and times)."""
    rows = []
    for ed in pair.get("edges", []):
        c = ed.get("chance") or {}
        rows.append(
            f"<tr><td>{e(ed['edge_type'])}</td><td class=\"num\">{ed['weight']:g}</td>"
            f"<td class=\"num\">{ed['idf_weight']:.2f}</td><td class=\"num\">{c.get('expected_co_occurrences', 0):.2g}</td>"
            f"<td class=\"num\">{c.get('p_value', 0):.2g}</td><td class=\"num\">{c.get('expected_chance_pairs', 0):.3g}</td>"
            f"<td class=\"num\">{c.get('pairs_as_unlikely', '')}</td><td class=\"num\">{c.get('chance_share', 0):.2f}</td>"
            f"<td>{'<hr>'.join(_pairs_list(x) for x in ed.get('examples') or [] if isinstance(x, dict))}</td></tr>")
    return ("<h2>Why chance does not explain this pair</h2>"
            '<p class="note">Two accounts are reported alone when their co-activity is more than chance makes: the'
            " expected co-occurrences keep each account's activity and how crowded its posts' windows are; the"
            " chance pairs are those the whole run would show at least as unlikely; the chance share compares them"
            " with the run's two-account pairs at least as unlikely (docs/networks.md, \"Coordinated pairs\").</p>"
            '<table class="grid"><tr><th>edge</th><th>weight</th><th>IDF weight</th><th>expected by chance</th>'
            "<th>p</th><th>chance pairs in the run</th><th>pairs as unlikely</th><th>chance share</th>"
            "<th>co-occurring posts</th></tr>" + "".join(rows) + "</table>")


def render_cluster_page(settings: Settings, run: dict[str, Any], cluster: dict[str, Any], with_index: bool = True) -> str:
    """One cluster's page, laid out for the decision: what the cluster is and what to run next, why it was
    flagged, then the evidence to look at (matched images, contact sheet, creation dates, handle patterns),
    then the graph and the tables; raw features and run parameters collapsed at the end.
    ``with_index`` links back to the run's index page written beside it."""
    members, edges, flag = cluster["members"], cluster["edges"], cluster["flag"]
    is_pair = bool(flag and flag.get("kind") == "pair")
    title = f"{'Pair' if is_pair else 'Cluster'} {cluster['cluster_id']} — run {run['run_key']}"
    info = run.get("detector_info")
    out = [f'<p><a href="index.html">← all flagged clusters of run {e(run["run_key"])}</a></p>' if with_index else "",
           f"<h1>{e(title)}</h1>"]
    features = cluster["features"] or {}
    created = Counter(m["created_at"].date().isoformat() for m in members if m["created_at"] is not None)
    out.append(f'<p class="lead">{e(flag_sentence(len(members), dict(created), float(features.get("template_share") or 0), _member_faces(members), (flag or {}).get("rules") or [], info))}</p>')
    if info is not None:
        out.append(f'<p class="note">Avatars labelled by detector {e(info["id"])} ({e(detector_kind(info))}).'
                   f"{e(_measured_line(info))}</p>" + _caveat_html(info))
    if flag:
        reasons = (flag["evidence"] or {}).get("rules", {})
        out.append(_kv_table([("flag", flag["flag_id"]), ("cluster", cluster["cluster_id"]), ("status", flag["status"]),
                              ("investigator note", flag["status_note"]), ("flag score", f"{flag['score']:.3f}"),
                              ("members", cluster["size"])]))
        out.append(_commands_html(run["run_key"], flag["flag_id"], cluster["cluster_id"]))
        out.append("<h2>Why it was flagged</h2>" + _rules_html(flag["rules"], reasons, info))
        if is_pair:
            out.append(_pair_chance_html((flag["evidence"] or {}).get("pair") or {}))
    else:
        out.append('<p class="note">This cluster was not flagged in this run.</p>')

    out.append(cluster.get("pairs_html") or "")
    out += _contact_sheet(settings, members, info)
    out.append("<h2>Account creation dates</h2>" + svg_histogram(m["created_at"] for m in members))
    out.append(_handle_patterns(members))
    picture, legend = svg_graph(members, edges, detector=info)
    out.append("<h2>Cluster graph</h2>" + picture + legend)

    by = f" Avatar probabilities and labels by the {detector_kind(info)}." if info is not None else ""
    out.append(f"<h2>Members ({len(members)})</h2>"
               f'<p class="note">Risk contributions: what each account signal added to the account\'s risk.{e(by)}</p>'
               f"{_platforms_note(members)}"
               '<table class="grid"><colgroup><col style="width:6%"><col style="width:9%"><col style="width:13%">'
               '<col style="width:9%"><col style="width:7%"><col style="width:5%"><col style="width:8%"><col style="width:4%">'
               '<col style="width:14%"><col style="width:15%"><col style="width:10%"></colgroup>'
               "<tr><th>platform</th><th>account</th><th>handle</th><th>display name</th><th>created (UTC)</th><th>avatar p</th>"
               "<th>avatar label</th><th>risk</th><th>risk contributions</th><th>bio</th><th>link</th></tr>")
    for m in members[:MAX_TABLE_MEMBERS]:
        when = m["created_at"].strftime("%Y-%m-%d %H:%M") if m["created_at"] else ""
        out.append(f'<tr><td>{e(platform_of(m["account_key"]))}</td>'
                   f'<td class="mono">{e(clip(m["account_key"], CELL_TEXT_CHARS))}</td>'
                   f'<td>{e(clip(m["handle"], CELL_TEXT_CHARS))}</td><td>{e(clip(m["display_name"], CELL_TEXT_CHARS))}</td>'
                   f'<td>{e(when)}</td><td class="num">{e(_prob(m["avatar_probability"]))}'
                   f'{_parts_html(m.get("avatar_parts"))}</td><td>{_label_html(m["avatar_label"], info)}</td>'
                   f'<td class="num">{_num(m["risk"])}</td><td>{_contributions_html(m["contributions"])}</td>'
                   f'<td>{e(clip(m["bio"], 200))}</td><td class="mono">{e(clip(m["url"], CELL_TEXT_CHARS))}</td></tr>')
    out.append("</table>")
    if len(members) > MAX_TABLE_MEMBERS:
        out.append(f'<p class="note">{len(members) - MAX_TABLE_MEMBERS} more members not listed.</p>')

    out += _edge_tables(edges, {m["account_key"]: m["handle"] for m in members if m["handle"]})
    out.append(_details("Cluster features (raw)", _kv_table([("members", cluster["size"]),
                                                             ("cluster score", f"{cluster['score']:.3f}"),
                                                             *sorted(features.items())])))
    out.append(_details("Run parameters", _kv_table(sorted((run.get("params") or {}).items()))))
    return _page(title, "\n".join(out), info)


def _ledger_order(item: tuple[str, dict[str, Any]]) -> tuple[int, str]:
    """Files that lost units first, then files nothing was stored from, then the rest by name."""
    name, row = item
    empty = not row.get("stored") and not sum((row.get("ignored") or {}).values())
    return (0 if not row.get("balanced", True) else 1 if empty else 2), name


def _example_html(row: dict[str, Any]) -> str:
    """One quarantined record: where it was, why, and the start of its raw text."""
    where = f"{clip(row['source_file'], 80)} {clip(row['locator'], 60)}"
    excerpt = clip((row.get("excerpt") or "").replace("\n", " "), EXCERPT_CHARS)
    return (f'<div><span class="mono">{e(where)}</span>: {e(clip(row["reason"], 160))}'
            + (f' <span class="note">— <code>{e(excerpt)}</code></span>' if excerpt else "") + "</div>")


def ledger_section(summary: dict[str, Any], examples: dict[str, list[dict[str, Any]]] | None = None) -> str:
    """The Ingest ledger section: where every unit of every export file went (seen + inferred = stored +
    quarantined + ignored), its warnings, and the quarantine count by reason with the first few records of
    each (``examples``, from ``_load_quarantine_examples``). Compact for exports of thousands of files: the
    files that need a look first, at most MAX_LEDGER_FILES rows."""
    from pipeline.reporting.summary import ledger_line

    ingest = summary.get("ingest") or {}
    ledger: dict[str, dict[str, Any]] = ingest.get("ledger") or {}
    out = ["<h2>Ingest ledger</h2>",
           f"<p>{e(ledger_line(ledger))}.</p>",
           '<p class="note">Per export file, every unit the reader saw (a CSV row, a JSON record, an archive entry) '
           "is stored, quarantined or ignored by reason: seen + inferred = stored + quarantined + ignored. Inferred: "
           "accounts known only as the author of posts. Repaired: stored with invalid text replaced.</p>"]
    warnings = list(ingest.get("warnings") or [])
    out += [f'<p class="warn">{e(w)}</p>' for w in warnings[:MAX_LEDGER_WARNINGS]]
    if len(warnings) > MAX_LEDGER_WARNINGS:
        out.append(f'<p class="warn">{len(warnings) - MAX_LEDGER_WARNINGS} more files with a ledger warning: '
                   "the table below lists them first.</p>")
    if ledger:
        rows = sorted(ledger.items(), key=_ledger_order)
        out.append("<table><tr><th>file</th><th>seen</th><th>inferred</th><th>stored</th><th>quarantined</th>"
                   "<th>ignored by reason</th><th>repaired</th><th>balanced</th></tr>")
        for name, row in rows[:MAX_LEDGER_FILES]:
            ignored = "; ".join(f"{n} {reason}" for reason, n in sorted((row.get("ignored") or {}).items(),
                                                                         key=lambda kv: (-kv[1], kv[0])))
            balanced = "yes" if row.get("balanced", True) else '<span class="syn">no</span>'
            out.append(f'<tr><td class="mono">{e(clip(name, CELL_TEXT_CHARS))}</td>'
                       + "".join(f'<td class="num">{e(row.get(k) if row.get(k) is not None else "")}</td>'
                                 for k in ("seen", "inferred", "stored", "quarantined"))
                       + f'<td>{e(clip(ignored, CELL_TEXT_CHARS))}</td><td class="num">{e(row.get("repaired") or 0)}</td>'
                       f"<td>{balanced}</td></tr>")
        out.append("</table>")
        if len(rows) > MAX_LEDGER_FILES:
            out.append(f'<p class="note">{len(rows) - MAX_LEDGER_FILES} more files not listed '
                       "(the files that do not balance or gave nothing are listed first).</p>")
    reasons = summary.get("quarantined_by_reason") or {}
    if reasons:
        out.append(f"<p>Quarantined by reason ({sum(reasons.values())}; "
                   f"<code>profile-audit quarantine --run-key {e(shlex.quote(summary['run_key']))}</code> lists them):</p>"
                   "<table><tr><th>stage: reason</th><th>records</th><th>first examples</th></tr>"
                   + "".join(f'<tr><td>{e(reason)}</td><td class="num">{n}</td>'
                             f'<td>{"".join(_example_html(r) for r in (examples or {}).get(reason, []))}</td></tr>'
                             for reason, n in list(reasons.items())[:MAX_REASONS]) + "</table>")
        if len(reasons) > MAX_REASONS:
            out.append(f'<p class="note">{len(reasons) - MAX_REASONS} more reasons not listed.</p>')
    return "".join(out)


def _flag_card(run: dict[str, Any], f: dict[str, Any], settings: Settings | None,
               faces: Sequence[dict[str, Any]], info: dict[str, Any] | None) -> str:
    """One flagged cluster on the index: its sentence, a few of its avatars, score, status, rules and the
    commands to run next."""
    evidence = f["evidence"] or {}
    features = evidence.get("features") or {}
    size = f["size"] if f["size"] is not None else features.get("size", 0)
    sentence = flag_sentence(int(size or 0), evidence.get("creation_days") or {},
                             float(features.get("template_share") or 0), faces, f["rules"] or [], info)
    link = (f'<a href="{e(cluster_page_name(f["cluster_id"]))}">{e(f["cluster_id"])}</a>' if f["has_cluster"]
            else f'{e(f["cluster_id"])} <span class="note">(no longer a cluster in this run)</span>')
    thumbs = []
    for face in faces[:MAX_INDEX_THUMBS]:
        uri = thumbnail_data_uri(settings, face.get("storage_path")) if settings is not None else None
        if uri:
            label = label_text(face.get("label"), info) or "not scored"
            kind = f" by the {detector_kind(info)}" if info is not None else ""
            tip = f"{_plural(face['accounts'], 'account')}; p = {_prob(face.get('probability'))}, {label}{kind}"
            thumbs.append(f'<img src="{e(uri)}" alt="avatar {e(face["sha256"][:12])}" title="{e(tip)}"'
                          f' width="64" height="64">')
    more = len(faces) - MAX_INDEX_THUMBS
    status = e(f["status"]) + (f" — <i>{e(f['status_note'])}</i>" if f["status_note"] else "")
    noun = "Pair" if f.get("kind") == "pair" else "Cluster"
    return (f'<div class="card"><h3>{noun} {link} <span class="note">· flag <span class="mono">{e(f["flag_id"])}'
            f"</span></span></h3>"
            f'<p class="lead">{e(sentence)}</p>'
            + (f'<div class="thumbs">{"".join(thumbs)}{f"<span class=note>+{more} more</span>" if more > 0 else ""}</div>'
               if thumbs else "")
            + f'<p>Score <b>{f["score"]:.3f}</b> · {e(_plural(int(size or 0), "member"))} · status <b>{status}</b></p>'
            + _rules_html(f["rules"], evidence.get("rules", {}), info)
            + _commands_html(run["run_key"], f["flag_id"], f["cluster_id"]) + "</div>")


def _baseline_html(baseline: dict[str, Any] | None) -> list[str]:
    """What the creation bursts were measured against (pipeline/networks/baseline.py); a warning box when
    the run has no organic baseline."""
    if not baseline:
        return []
    if not baseline["organic"]:
        why = baseline["why"].removeprefix("no organic baseline: ")
        return [f'<p class="warn">No organic baseline. {e(why[:1].upper() + why[1:])}.</p>']
    return [f'<p class="note">Baseline: {e(baseline["why"])}.</p>']


def render_index_page(run: dict[str, Any], summary: dict[str, Any], flags: Sequence[dict[str, Any]],
                      settings: Settings | None = None, faces: dict[str, list[dict[str, Any]]] | None = None,
                      examples: dict[str, list[dict[str, Any]]] | None = None) -> str:
    """The run's index, laid out for the decision: a summary line, then one card per flagged cluster
    (sentence, thumbnails, score, status, rules, next commands); then the detector, the ingest ledger with
    quarantine examples, and the run's metadata and parameters collapsed. ``faces`` (``_load_flag_faces``)
    and ``settings`` give the thumbnails, ``examples`` the quarantined records."""
    title = f"Evidence report — run {run['run_key']}"
    info = run.get("detector_info")
    ledger_warnings = set((summary.get("ingest") or {}).get("warnings") or [])
    by = f" by the {detector_kind(info)}" if info is not None else ""
    overview = (f"{summary['accounts']} accounts audited; {len(flags)} flagged "
                f"{'cluster' if len(flags) == 1 else 'clusters'} of {summary['clusters']}; "
                f"{summary['synthetic_avatars']} avatars labelled synthetic{by}; "
                f"{summary['quarantined']} records quarantined.")
    out = [f"<h1>{e(title)}</h1>",
           *(f'<p class="warn">WARNING {e(w)}</p>' for w in summary.get("warnings", []) if w not in ledger_warnings),
           f'<p class="lead">{e(overview)}</p>',
           *_baseline_html(summary.get("baseline")),
           f"<h2>Flagged clusters ({len(flags)})</h2>"]
    if not flags:
        out.append('<p class="note">No cluster was flagged in this run.</p>')
    else:
        out.append('<p class="note">Most suspicious first. A flag id names one cluster of this run: '
                   "<code>flag set-status</code> takes the flag id, <code>evidence</code> and "
                   "<code>report --cluster</code> take the cluster id.</p>")
        out += [_flag_card(run, f, settings, (faces or {}).get(f["cluster_id"], []), info) for f in flags]
    out.append(detector_section(run))
    out.append(ledger_section(summary, examples))
    out.append("<h2>Run details</h2>")
    out.append(_details("Run", _kv_table([
        ("run kind", run["kind"]), ("export", run["export_path"]), ("format", run["export_format"]),
        ("detector", run["detector_id"]), ("accounts", summary["accounts"]),
        ("quarantined records", summary["quarantined"]),
        ("avatars stored / failed", f"{summary['avatars_stored']} / {summary['avatars_failed']}"),
        ("avatars labelled synthetic", summary["synthetic_avatars"]),
        ("edges", summary["edges"] or 0), ("clusters", summary["clusters"]), ("flags", summary["flags"])])))
    out.append(_details("Run parameters", _kv_table(sorted((run["params"] or {}).items()))))
    return _page(title, "\n".join(out), info)


# ---------------------------------------------------------------------------------------------- files


def _write(path: Path, text: str) -> None:
    """Atomic write: a browser or a copy never sees half a page."""
    atomic_write(path, text)  # 0644: a report is meant to be opened and shared


def write_report(settings: Settings, run_key: str, cluster_id: str | None = None, out: Path | None = None) -> ReportResult:
    """Write the run's index and one page per flagged cluster (or just the page of ``cluster_id``)."""
    from pipeline.reporting.summary import summarize_run

    target = Path(out) if out else report_dir(settings, run_key)
    if target.exists() and not target.is_dir():
        raise UserError(f"{target} exists and is not a folder; pass another --out")
    with transaction(settings) as conn:
        run = _load_run(conn, run_key)
        if cluster_id is not None:
            cluster = _load_cluster(settings, conn, run_key, cluster_id)
            target.mkdir(parents=True, exist_ok=True)
            page = target / cluster_page_name(cluster_id)
            _write(page, render_cluster_page(settings, run, cluster, with_index=(target / "index.html").is_file()))
            return ReportResult(page, 1, 1 if cluster["flag"] else 0)
        flags = _load_flags(conn, run_key)
        clusters = {f["cluster_id"]: _load_cluster(settings, conn, run_key, f["cluster_id"])
                    for f in flags if f["has_cluster"]}
        faces, examples = _load_flag_faces(conn, run_key), _load_quarantine_examples(conn, run_key)
    summary = summarize_run(settings, run_key)
    target.mkdir(parents=True, exist_ok=True)
    sweep_stale_temp(target)  # what a killed or disk-full write left behind
    pages = {cluster_page_name(cid): render_cluster_page(settings, run, cluster) for cid, cluster in clusters.items()}
    for name, text in pages.items():
        _write(target / name, text)
    # the index last: it never links to a page that is not written yet (a crash before here keeps the old index)
    _write(target / "index.html", render_index_page(run, summary, flags, settings, faces, examples))
    pages["index.html"] = ""
    for stale in target.glob("cluster-*.html"):  # pages of clusters no longer flagged: a rerun leaves what a first run would
        if stale.name not in pages:
            stale.unlink()
    return ReportResult(target / "index.html", len(pages), len(flags))


def refresh_flag_pages(settings: Settings, run_key: str, cluster_id: str) -> Path | None:
    """After an investigator sets a flag's status, the run's report (in its default place, where the report
    stage wrote it) shows it at once: the cluster's page and the index are written again, the other pages
    are untouched. None when the run has no report there yet (the report stage will show the status)."""
    from pipeline.reporting.summary import summarize_run

    target = report_dir(settings, run_key)
    index = target / "index.html"
    if not index.is_file():
        return None
    with transaction(settings) as conn:
        run = _load_run(conn, run_key)
        flags = _load_flags(conn, run_key)
        flagged = any(f["cluster_id"] == cluster_id and f["has_cluster"] for f in flags)
        cluster = _load_cluster(settings, conn, run_key, cluster_id) if flagged else None
        faces, examples = _load_flag_faces(conn, run_key), _load_quarantine_examples(conn, run_key)
    summary = summarize_run(settings, run_key)
    if cluster is not None:
        _write(target / cluster_page_name(cluster_id), render_cluster_page(settings, run, cluster))
    _write(index, render_index_page(run, summary, flags, settings, faces, examples))
    return index


def report_run(settings: Settings, run_key: str) -> dict[str, Any]:
    """The pipeline stage: the full report in the default place."""
    return write_report(settings, run_key).as_dict()
