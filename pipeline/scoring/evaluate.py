"""`profile-audit evaluate`: how a saved detector does on labelled folders, clean and laundered.

Reports ROC-AUC, average precision, TPR at 1% and 5% FPR, accuracy at the detector's own threshold
and expected calibration error; the same after JPEG at quality 75 and after a x0.5 resize (what
platforms do to uploads); per generator when the fake folder has one sub-folder per generator, and
the false-positive rate at the threshold per real source (``real:<source>``, with ``worst_real_source``)
when the real folder has one sub-folder per source.
The report is Markdown or HTML with a ROC-curve image (SVG, written by hand: no plotting library).

Each condition is applied to the decoded image, then the probe's own input transform
(``ClipProbe.input_view``, what the score stage applies to avatars): so ``fpr_at_threshold`` under
``clean`` is the false-positive rate at the threshold on images processed exactly as scored. Images the
backbone cannot embed (dlib-face: no face) get no score; they are counted as ``n_unscored`` and left out.
"""

from __future__ import annotations

import html
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from detectors import Detector
from detectors.clip_probe import ClipProbe, LabelledImage, embed_views
from pipeline.config import Settings
from pipeline.core.progress import Counter
from pipeline.core.storage import atomic_write
from pipeline.errors import UserError


def jpeg_q75(image: Image.Image, sha256: str = "") -> Image.Image:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, "JPEG", quality=75)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def resize_half(image: Image.Image, sha256: str = "") -> Image.Image:
    return image.convert("RGB").resize((max(1, image.width // 2), max(1, image.height // 2)), Image.BICUBIC)


CONDITIONS: dict[str, Callable[[Image.Image, str], Image.Image]] = {
    "clean": lambda image, sha256="": image.convert("RGB"),
    "jpeg_q75": jpeg_q75,
    "resize_0.5": resize_half,
}


def tpr_at_fpr(labels: np.ndarray, scores: np.ndarray, fpr_target: float) -> float:
    """The best true-positive rate among thresholds whose false-positive rate is at most the target."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(labels, scores)
    ok = fpr <= fpr_target + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, bins: int = 10) -> float:
    """Mean |confidence - observed frequency| over equal-width probability bins, weighted by bin size."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(probs, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = index == b
        if mask.any():
            total += mask.mean() * abs(float(probs[mask].mean()) - float(labels[mask].mean()))
    return float(total)


def metrics(labels: np.ndarray, probs: np.ndarray, threshold: float) -> dict[str, Any]:
    from sklearn.metrics import average_precision_score, roc_auc_score

    scored = ~np.isnan(probs)
    unscored = {"n_unscored_real": int((~scored & (labels == 0)).sum()),
                "n_unscored_fake": int((~scored & (labels == 1)).sum())}
    labels, probs = labels[scored], probs[scored]
    predicted = probs >= threshold
    return {
        **unscored,
        "n_real": int((labels == 0).sum()),
        "n_fake": int((labels == 1).sum()),
        "roc_auc": round(float(roc_auc_score(labels, probs)), 4),
        "average_precision": round(float(average_precision_score(labels, probs)), 4),
        "tpr_at_1pct_fpr": round(tpr_at_fpr(labels, probs, 0.01), 4),
        "tpr_at_5pct_fpr": round(tpr_at_fpr(labels, probs, 0.05), 4),
        "accuracy_at_threshold": round(float((predicted == (labels == 1)).mean()), 4),
        "tpr_at_threshold": round(float(predicted[labels == 1].mean()), 4),
        "fpr_at_threshold": round(float(predicted[labels == 0].mean()), 4),
        "ece": round(expected_calibration_error(labels, probs), 4),
    }


def real_metrics(probs: np.ndarray, threshold: float) -> dict[str, Any]:
    """The figures real images alone allow (no ROC-AUC without fakes): counts and the FPR at the threshold
    (None when none of them could be scored)."""
    scored = probs[~np.isnan(probs)]
    flagged = int((scored >= threshold).sum())
    return {"n_real": int(len(scored)), "n_unscored_real": int(len(probs) - len(scored)), "false_positives": flagged,
            "fpr_at_threshold": round(flagged / len(scored), 4) if len(scored) else None}


REAL_SOURCE_PREFIX = "real:"
WORST_REAL_SOURCE = "worst_real_source"


def generator_groups(entry: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A condition's full-metrics groups: ``all`` and one per generator."""
    return {k: v for k, v in entry.items() if k != WORST_REAL_SOURCE and not k.startswith(REAL_SOURCE_PREFIX)}


def real_source_groups(entry: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A condition's per-real-source figures, by source name (empty when the reals are one source)."""
    return {k[len(REAL_SOURCE_PREFIX):]: v for k, v in entry.items() if k.startswith(REAL_SOURCE_PREFIX)}


def roc_points(labels: np.ndarray, probs: np.ndarray) -> list[tuple[float, float]]:
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(labels, probs)
    return [(float(f), float(t)) for f, t in zip(fpr, tpr)]


def probabilities(detector: Detector, images: Sequence[LabelledImage], view: Callable[[Image.Image, str], Image.Image],
                  settings: Settings, progress: Counter | None = None) -> np.ndarray:
    """The detector's probability for each image as seen through ``view``."""
    if isinstance(detector, ClipProbe):
        def scored_view(image: Image.Image, sha256: str) -> Image.Image:
            return detector.input_view(view(image, sha256))

        embeddings = embed_views(detector.backbone, images, scored_view, batch_size=settings.batch_size,
                                 workers=settings.score_workers, torch_threads=settings.torch_threads,
                                 device=settings.device, progress=progress)
        return detector.probabilities(embeddings)
    out = []
    for start in range(0, len(images), settings.batch_size):
        batch = images[start : start + settings.batch_size]
        out.extend(np.nan if s.probability is None else s.probability
                   for s in detector.score([view(im.image, im.sha256) for im in batch]))
        if progress is not None:
            progress.update(len(batch))
    return np.asarray(out, dtype=np.float64)


@dataclass(frozen=True)
class Evaluation:
    result: dict[str, Any]
    roc: dict[str, list[tuple[float, float]]]  # condition -> curve over all generators


def evaluate(settings: Settings, detector: Detector, real: Sequence[LabelledImage], fake: Sequence[LabelledImage],
             conditions: Sequence[str] = tuple(CONDITIONS)) -> Evaluation:
    """Metrics for every condition, overall and per generator (the fake images' source folder); with more
    than one real source folder, also ``real:<source>`` (``real_metrics``: the FPR at the threshold on that
    source's reals) and ``worst_real_source`` (the source with the highest such FPR)."""
    images = list(real) + list(fake)
    labels = np.array([im.label for im in images])
    threshold = float(getattr(detector, "threshold", 0.5))
    out: dict[str, Any] = {"detector_id": detector.id, "threshold": threshold, "conditions": {},
                           "input_transform": (detector.training.get("input_transform", "none")
                                               if isinstance(detector, ClipProbe) else "none")}
    curves = {}
    generators = sorted({im.source for im in fake})
    real_sources = sorted({im.source for im in real})
    counter = Counter("evaluate", len(images) * len(conditions))
    try:
        for name in conditions:
            if name not in CONDITIONS:
                raise UserError(f"unknown condition {name!r}; known: {', '.join(CONDITIONS)}")
            probs = probabilities(detector, images, CONDITIONS[name], settings, counter)
            entry = {"all": metrics(labels, probs, threshold)}
            if len(generators) > 1:
                real_mask = labels == 0
                for gen in generators:
                    mask = real_mask | np.array([im.label == 1 and im.source == gen for im in images])
                    entry[gen] = metrics(labels[mask], probs[mask], threshold)
            if len(real_sources) > 1:
                for source in real_sources:
                    mask = np.array([im.label == 0 and im.source == source for im in images])
                    entry[REAL_SOURCE_PREFIX + source] = real_metrics(probs[mask], threshold)
                measured = {s: m["fpr_at_threshold"] for s, m in real_source_groups(entry).items()
                            if m["fpr_at_threshold"] is not None}
                if measured:
                    worst = max(sorted(measured), key=measured.__getitem__)  # ties: the first name
                    entry[WORST_REAL_SOURCE] = {"source": worst, "fpr_at_threshold": measured[worst]}
            out["conditions"][name] = entry
            keep = ~np.isnan(probs)
            curves[name] = roc_points(labels[keep], probs[keep])
    finally:
        counter.close()
    return Evaluation(out, curves)


def training_overlap(settings: Settings, detector_id: str, images: Sequence[LabelledImage]) -> int:
    """How many evaluation images the detector was trained, calibrated or tested on (by hash)."""
    import sqlalchemy as sa

    from pipeline.core.db import transaction

    with transaction(settings) as conn:
        return int(conn.execute(sa.text("select count(distinct sha256) from detector_training_images"
                                        " where detector_id = :d and sha256 = any(:s)"),
                                {"d": detector_id, "s": [im.sha256 for im in images]}).scalar_one())


def evaluate_folders(settings: Settings, detector_ref: str | None, real: Path, fake: Path,
                     report: Path | None = None) -> dict[str, Any]:
    """The CLI and DAG entry: load folders, evaluate, optionally write the report; returns the result."""
    from pipeline.core.db import ensure_schema
    from pipeline.scoring.detector_store import resolve_detector
    from pipeline.scoring.train import load_labelled_folder

    if report is not None and report.suffix.lower() not in (".md", ".html", ".htm"):
        raise UserError(f"--report {report} must end in .md or .html")
    ensure_schema(settings)
    detector = resolve_detector(settings, detector_ref)
    if hasattr(detector, "device"):
        detector.device = settings.device
    real_images, skipped_real = load_labelled_folder(real, 0)
    fake_images, skipped_fake = load_labelled_folder(fake, 1)
    evaluation = evaluate(settings, detector, real_images, fake_images)
    result = evaluation.result
    result["real_dir"], result["fake_dir"] = str(real), str(fake)
    result["skipped"] = skipped_real + skipped_fake
    result["overlap_with_training"] = training_overlap(settings, detector.id, real_images + fake_images)
    if report is not None:
        result["report"] = str(write_evaluation_report(evaluation, report))
    return result


# --- the report ------------------------------------------------------------------------------------

COLOURS = {"clean": "#1f77b4", "jpeg_q75": "#d62728", "resize_0.5": "#2ca02c"}


def roc_svg(curves: dict[str, list[tuple[float, float]]], size: int = 360) -> str:
    """ROC curves as a standalone SVG: axes, chance diagonal, one polyline per condition, a legend."""
    pad = 40
    plot = size - 2 * pad

    def xy(f: float, t: float) -> str:
        return f"{pad + f * plot:.1f},{pad + (1 - t) * plot:.1f}"

    parts = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" viewBox="0 0 {size} {size}"'
              ' font-family="sans-serif" font-size="11">'),
             f'<rect x="{pad}" y="{pad}" width="{plot}" height="{plot}" fill="white" stroke="black"/>',
             f'<line x1="{pad}" y1="{pad + plot}" x2="{pad + plot}" y2="{pad}" stroke="#999" stroke-dasharray="4 3"/>']
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        parts.append(f'<text x="{pad + tick * plot:.1f}" y="{pad + plot + 14}" text-anchor="middle">{tick:g}</text>')
        parts.append(f'<text x="{pad - 6}" y="{pad + (1 - tick) * plot + 4:.1f}" text-anchor="end">{tick:g}</text>')
    parts.append(f'<text x="{pad + plot / 2}" y="{size - 6}" text-anchor="middle">false-positive rate</text>')
    parts.append(f'<text x="12" y="{pad + plot / 2}" text-anchor="middle" transform="rotate(-90 12 {pad + plot / 2})">'
                 'true-positive rate</text>')
    for i, (name, points) in enumerate(curves.items()):
        colour = COLOURS.get(name, "#555")
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{" ".join(xy(f, t) for f, t in points)}">'
                     f'<title>{html.escape(name)}</title></polyline>')
        parts.append(f'<text x="{pad + plot - 4}" y="{pad + plot - 8 - 14 * i}" text-anchor="end" fill="{colour}">'
                     f'{html.escape(name)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


METRIC_COLUMNS = ("n_real", "n_fake", "roc_auc", "average_precision", "tpr_at_1pct_fpr", "tpr_at_5pct_fpr",
                  "accuracy_at_threshold", "fpr_at_threshold", "ece")


REAL_SOURCE_COLUMNS = ("n_real", "n_unscored_real", "false_positives", "fpr_at_threshold")


def _rows(result: dict[str, Any]) -> list[list[str]]:
    return [[condition, group, *(str(values[c]) for c in METRIC_COLUMNS)]
            for condition, entry in result["conditions"].items() for group, values in generator_groups(entry).items()]


def _real_source_rows(result: dict[str, Any]) -> list[list[str]]:
    """One row per condition and real source; the worst source of each condition is marked."""
    rows = []
    for condition, entry in result["conditions"].items():
        worst = entry.get(WORST_REAL_SOURCE, {}).get("source")
        for source, values in real_source_groups(entry).items():
            rows.append([condition, source, *(str(values[c]) for c in REAL_SOURCE_COLUMNS),
                         "worst" if source == worst else ""])
    return rows


def write_evaluation_report(evaluation: Evaluation, path: Path) -> Path:
    """``.html`` (SVG inline) or ``.md`` (SVG beside it as ``<name>.roc.svg``); anything else is an error."""
    result = evaluation.result
    svg = roc_svg(evaluation.roc)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = ["condition", "generator", *METRIC_COLUMNS]
    source_header = ["condition", "real source", *REAL_SOURCE_COLUMNS, ""]
    source_rows = _real_source_rows(result)
    intro = (f"Detector `{result['detector_id']}`, threshold {result['threshold']:.4f}. Real images from "
             f"{result.get('real_dir', '?')}, generated from {result.get('fake_dir', '?')}. "
             f"{result.get('overlap_with_training', 0)} of the images were in the detector's training data.")
    if path.suffix.lower() == ".md":
        svg_path = path.with_name(path.stem + ".roc.svg")
        atomic_write(svg_path, svg)
        lines = ["# Detector evaluation", "", intro, "", f"![ROC curves]({svg_path.name})", "",
                 "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in _rows(result)]
        if source_rows:
            lines += ["", "## FPR per real source", "", "| " + " | ".join(source_header) + " |",
                      "|" + "---|" * len(source_header)]
            lines += ["| " + " | ".join(row) + " |" for row in source_rows]
        atomic_write(path, "\n".join(lines) + "\n")
    elif path.suffix.lower() in (".html", ".htm"):
        def table(head: list[str], rows: list[list[str]]) -> str:
            return ("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"
                    + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
                    + "</table>")

        sources = f"<h2>FPR per real source</h2>{table(source_header, source_rows)}" if source_rows else ""
        atomic_write(
            path,
            "<!doctype html><html><head><meta charset='utf-8'><title>Detector evaluation</title>"
            "<style>body{font-family:sans-serif}td,th{padding:2px 8px;border-bottom:1px solid #ddd}</style></head><body>"
            f"<h1>Detector evaluation</h1><p>{html.escape(intro)}</p>{svg}{table(header, _rows(result))}{sources}"
            f"<script type='application/json' id='result'>{html.escape(json.dumps(result, sort_keys=True))}</script>"
            "</body></html>")
    else:
        raise UserError(f"report {path} must end in .md or .html")
    return path
