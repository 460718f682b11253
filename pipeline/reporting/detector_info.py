"""What an investigator needs to know about the detector that labelled a run's avatars, from its saved form.

``detector_info`` reads a saved detector (``{kind, version, id, spec}``, as in the ``detectors`` table and
in ``.json`` files) without loading any model: its id, kind, a short name, its backbone ids, whether it is
a real detector, whether it is the shipped one, and what was measured on it (TPR per generator, FPR per
real source). A backbone with random weights (``random:SEED``, the demo's and the tests') detects nothing
real: such a detector is labelled "not a real detector" wherever its labels are shown (summary, report,
``flags --json``).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

NOT_REAL_CAVEAT = "not a real detector: random-initialised backbone, detects nothing real"
NOT_REAL_LABEL = "not a real detector"
PART_NAMES = {"clip": "CLIP", "face": "face", "eye": "eye", "bias": "bias"}
KIND_NAMES = {"clip_probe": "CLIP probe", "face_probe": "dlib face probe", "faces": "face signals (eye test)",
              "avatar_stack": "avatar stack (CLIP probe + dlib face probe + eye test)"}


def _backbones(saved: dict[str, Any]) -> list[dict[str, Any]]:
    """Every backbone spec in a saved detector, a stack's parts included."""
    spec = saved.get("spec") or {}
    found = [spec["backbone"]] if isinstance(spec.get("backbone"), dict) else []
    for part in ("clip", "face", "eye"):
        if isinstance(spec.get(part), dict) and "spec" in spec[part]:
            found += _backbones(spec[part])
    return found


def _backbone_id(backbone: dict[str, Any]) -> str:
    from detectors.backbones import backbone_from_dict

    try:
        return str(backbone_from_dict(backbone).id)
    except (KeyError, TypeError, ValueError):  # a saved form from another version: show what it says
        return str(backbone.get("kind") or backbone.get("model") or "unknown backbone")


def _is_random(backbone: dict[str, Any]) -> bool:
    return str(backbone.get("weights") or "").startswith("random:")


RATE_KEYS = ("tpr_by_generator", "fpr_by_real_source")
WHOLE = {"avatar_stack": "avatar stack"}  # the name a per-part measurement gives the whole detector
PRIMARY_CONDITION = "clean"


def _rate(value: Any) -> float | None:
    """A rate, or a rate per condition ({"clean": r, "jpeg_q75": r, ...}): the clean one."""
    if isinstance(value, dict):
        value = value.get(PRIMARY_CONDITION)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _table(recorded: dict[str, Any], kind: str) -> dict[str, Any]:
    """The figures of the detector itself: flat ({tpr_by_generator, fpr_by_real_source}), or, where the
    measurement covers each part too, the whole detector's entry ("avatar stack"), or its only entry."""
    if any(k in recorded for k in RATE_KEYS):
        return recorded
    tables = {k: v for k, v in recorded.items() if isinstance(v, dict) and any(r in v for r in RATE_KEYS)}
    if WHOLE.get(kind) in tables:
        return tables[WHOLE[kind]]
    return next(iter(tables.values())) if len(tables) == 1 else {}


def _figures(table: dict[str, Any]) -> dict[str, Any]:
    measured: dict[str, Any] = {key: {} for key in RATE_KEYS}
    conditions: dict[str, Any] = {}
    for key in RATE_KEYS:
        for name, value in sorted((table.get(key) or {}).items()):
            if (rate := _rate(value)) is not None:
                measured[key][str(name)] = rate
            if isinstance(value, dict):
                conditions.setdefault(key, {})[str(name)] = {str(c): float(r) for c, r in value.items()
                                                             if isinstance(r, (int, float))}
    if conditions:  # each name's rate under every recorded condition (clean, jpeg_q75, left_out, ...)
        measured["by_condition"] = conditions
    return measured


def _measured(training: dict[str, Any], kind: str, threshold: Any) -> tuple[dict[str, Any], str]:
    at = f" at its threshold {float(threshold):.3f}" if isinstance(threshold, (int, float)) else ""
    recorded = training.get("measured")
    if isinstance(recorded, dict) and recorded:
        measured = _figures(_table(recorded, kind))
        how = str(recorded.get("on") or "on held-out images") + at
        if measured.get("by_condition"):
            how += f" (single figures: {PRIMARY_CONDITION} images)"
        if recorded.get("command"):
            how += f"; made by `{recorded['command']}`"
        return measured, how
    metrics = training.get("metrics") or {}
    measured = _figures({"tpr_by_generator": metrics.get("test_tpr_by_generator"),
                         "fpr_by_real_source": metrics.get("test_fpr_by_real_source")})
    overall = {k: float(metrics[f"test_{k}_at_threshold"]) for k in ("tpr", "fpr")
               if isinstance(metrics.get(f"test_{k}_at_threshold"), (int, float))}
    if overall:
        measured["overall"] = overall
    if not any(measured.values()):
        return measured, "no measurement recorded with this detector"
    test = (training.get("counts") or {}).get("test") or {}
    counted = f" ({test['real']} real, {test['fake']} generated)" if {"real", "fake"} <= set(test) else ""
    return measured, f"on the held-out test split of its training images{counted}{at}"


def detector_info(saved: dict[str, Any], run_params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The detector in plain terms (JSON-serialisable). ``run_params`` (the run's ``runs.params``) adds how
    the run chose it: ``chosen`` is "shipped", "promoted" or "named REF"."""
    kind = str(saved.get("kind") or "unknown")
    spec = saved.get("spec") or {}
    training = spec.get("training") or {}
    backbones = _backbones(saved)
    real = not any(_is_random(b) for b in backbones)
    from detectors.presets import shipped_detector_id

    shipped = bool(saved.get("id")) and saved.get("id") == shipped_detector_id()
    name = KIND_NAMES.get(kind, kind.replace("_", " "))
    if kind == "clip_probe" and backbones:
        name += f" on {backbones[0].get('model') or backbones[0].get('kind') or 'open_clip'}"
    if training.get("preset"):
        name = f"{training['preset']} preset ({name})"
    if shipped:
        from detectors.presets import SHIPPED_DETECTOR

        name = f"shipped {SHIPPED_DETECTOR} ({name})"
    measured, how = _measured(training, kind, spec.get("threshold"))
    info: dict[str, Any] = {
        "id": saved.get("id"), "kind": kind, "name": name,
        "backbones": [_backbone_id(b) for b in backbones],
        "real_detector": real, "caveat": None if real else NOT_REAL_CAVEAT,
        "shipped": shipped, "measured": measured, "how_measured": how,
    }
    if run_params is not None:
        ref = run_params.get("detector")
        if shipped or str(ref or "").startswith("shipped:"):
            info["chosen"] = "shipped"
        elif ref in (None, "default"):
            info["chosen"] = "promoted"
        else:
            info["chosen"] = f"named {ref}"
    return info


def load_detector_info(conn: sa.Connection, detector_id: str | None,
                       run_params: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """``detector_info`` of a stored detector (None: no detector, or not in the ``detectors`` table)."""
    if not detector_id:
        return None
    saved = conn.execute(sa.text("select spec from detectors where detector_id = :id"), {"id": detector_id}).scalar()
    if saved is None:
        return None
    return detector_info(saved, run_params)


def rates_text(rates: dict[str, float]) -> str:
    """``"stylegan2 0.98, sdxl 0.91"``; "none recorded" when empty."""
    return ", ".join(f"{name} {rate:.2f}" for name, rate in rates.items()) or "none recorded"


def parts_text(parts: dict[str, Any] | None) -> str:
    """An avatar score's logit parts, ``"CLIP +3.10, face +0.40, eye +2.20"`` (bias left out); "" if none."""
    if not parts:
        return ""
    return ", ".join(f"{PART_NAMES.get(k, k)} {float(v):+.2f}" for k, v in parts.items()
                     if k != "bias" and isinstance(v, (int, float)))


def label_text(label: bool | None, info: dict[str, Any] | None) -> str:
    """An avatar label as shown: "synthetic", "not labelled" or "" (not scored), with "(not a real detector)"
    after a label from a detector that is not real."""
    text = "" if label is None else ("synthetic" if label else "not labelled")
    if text and info is not None and not info.get("real_detector", True):
        text += f" ({NOT_REAL_LABEL})"
    return text
