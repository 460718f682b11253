"""Checks on a saved detector's JSON before anything uses it, so a corrupted or hand-edited file is one
clear line at load (``profile-audit audit`` resolves the detector before any stage runs), never a
traceback from the score stage after ingest and acquire have already run."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import Any

from detectors.backbone import MODEL_CONFIG_DIR


class InvalidDetector(ValueError):
    """A saved detector that cannot be used; the message says which field is wrong."""


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def embed_dim(model: str) -> int | None:
    """The embedding width of an open_clip model from its JSON config, without importing torch; None
    when the model's config is not found here (a local-dir or hub model: checked when it loads)."""
    candidates = [MODEL_CONFIG_DIR / f"{model}.json"]
    spec = importlib.util.find_spec("open_clip")
    if spec and spec.submodule_search_locations:
        candidates.append(Path(spec.submodule_search_locations[0]) / "model_configs" / f"{model}.json")
    for path in candidates:
        if path.is_file():
            try:
                dim = json.loads(path.read_text(encoding="utf-8")).get("embed_dim")
            except (OSError, ValueError):
                return None
            return dim if isinstance(dim, int) else None
    return None


def check_saved_detector(saved: Any) -> None:
    """InvalidDetector (a ValueError: one line, naming the field) unless ``saved`` has the shape a saved detector has."""
    if not isinstance(saved, dict):
        raise InvalidDetector(f"a saved detector is a JSON object with kind and spec, got a JSON {type(saved).__name__}")
    for key in ("kind", "spec"):
        if key not in saved:
            raise InvalidDetector(f"the saved detector has no {key!r}")
    spec = saved["spec"]
    if not isinstance(spec, dict):
        raise InvalidDetector(f"the saved detector's spec is a JSON {type(spec).__name__}, not an object")
    if saved["kind"] == "clip_probe":
        _check_clip_probe(spec)


def _check_clip_probe(spec: dict[str, Any]) -> None:
    backbone = spec.get("backbone")
    kind = backbone.get("kind", "open_clip") if isinstance(backbone, dict) else None
    if kind == "clip-vit-b16":  # no model name: the backbone is the pinned ONNX file
        from detectors.onnx_clip import FEATURES

        if backbone.get("feature") not in FEATURES or not isinstance(backbone.get("weights_sha256"), str):
            raise InvalidDetector("the clip_probe spec's clip-vit-b16 backbone has no known feature or sha256")
        backbone = {**backbone, "model": "", "dim": FEATURES[backbone["feature"]]}
    if not isinstance(backbone, dict) or not isinstance(backbone.get("model"), str):
        raise InvalidDetector("the clip_probe spec has no backbone with a model name")
    weight = spec.get("weight")
    if not isinstance(weight, list) or not weight:
        raise InvalidDetector("the clip_probe spec has no weight list")
    bad = next((i for i, w in enumerate(weight) if not _is_number(w)), None)
    if bad is not None:
        raise InvalidDetector(f"clip_probe weight {bad} is {weight[bad]!r}, not a finite number")
    for key in ("bias", "platt_a", "platt_b", "threshold"):
        if key in spec and not _is_number(spec[key]):
            raise InvalidDetector(f"clip_probe {key} is {spec[key]!r}, not a finite number")
    if "bias" not in spec:
        raise InvalidDetector("the clip_probe spec has no bias")
    dim = backbone.get("dim") or embed_dim(backbone["model"])
    if dim is not None and len(weight) != dim:
        raise InvalidDetector(f"clip_probe has {len(weight)} weights but backbone {backbone['model']} embeds {dim} "
                         "dimensions (a truncated or foreign file?)")
