"""Saved detectors: in Postgres (``detectors`` table) and as JSON files, one promoted as default."""

from __future__ import annotations

import json
from pathlib import Path

import sqlalchemy as sa

from detectors import Detector, EmbeddingDetector, detector_from_saved, read_detector_file, save_detector
from pipeline.config import Settings
from pipeline.core.db import transaction
from pipeline.core.storage import atomic_write
from pipeline.errors import UserError


def detector_file(settings: Settings, detector_id: str) -> Path:
    return settings.detector_dir / f"{detector_id.replace(':', '_')}.json"


def register_detector(settings: Settings, detector: Detector, promote: bool = False,
                      manifest: list[dict] | None = None) -> Path:
    """Store the detector in the database and as ``$HOME/detectors/<id>.json``; optionally promote it.

    ``manifest`` (training images by hash, label, split, source) goes to ``detector_training_images``
    and to ``<id>.manifest.csv`` beside the JSON file.
    """
    path = save_detector(detector, detector_file(settings, detector.id))
    if manifest is not None:
        import csv
        import io

        buffer = io.StringIO(newline="")
        writer = csv.DictWriter(buffer, fieldnames=["sha256", "label", "split", "source"])
        writer.writeheader()
        writer.writerows(manifest)
        atomic_write(path.with_suffix(".manifest.csv"), buffer.getvalue())
    spec = detector.to_spec()
    with transaction(settings) as conn:
        conn.execute(
            sa.text(
                "insert into detectors (detector_id, kind, version, backbone_id, spec, metrics)"
                " values (:id, :kind, :version, :backbone, cast(:spec as jsonb), cast(:metrics as jsonb))"
                " on conflict (detector_id) do nothing"
            ),
            {
                "id": detector.id,
                "kind": detector.kind,
                "version": detector.version,
                "backbone": detector.backbone_id if isinstance(detector, EmbeddingDetector) else None,
                "spec": json.dumps(detector.saved_form(), sort_keys=True),
                "metrics": json.dumps(spec.get("training", {}).get("metrics", {}), sort_keys=True),
            },
        )
        if manifest is not None:
            from pipeline.core.db import insert_rows

            conn.execute(sa.text("delete from detector_training_images where detector_id = :id"), {"id": detector.id})
            insert_rows(conn, "insert into detector_training_images (detector_id, sha256, label, split, source)"
                              " values (:d, :sha256, :label, :split, :source)",
                        ({"d": detector.id, **row} for row in manifest))
        if promote:
            _promote(conn, detector.id)
    return path


def _promote(conn: sa.Connection, detector_id: str) -> None:
    conn.execute(sa.text("update detectors set is_default = false where is_default and detector_id <> :id"),
                 {"id": detector_id})
    conn.execute(sa.text("update detectors set is_default = true where detector_id = :id"), {"id": detector_id})


def promote_detector(settings: Settings, ref: str) -> str:
    """Make a stored detector (by id, or a saved .json file, which is stored first) the default."""
    detector = resolve_detector(settings, ref)
    if Path(ref).suffix == ".json":
        register_detector(settings, detector)
    with transaction(settings) as conn:
        _promote(conn, detector.id)
    return detector.id


def resolve_detector(settings: Settings, ref: str | None = None) -> Detector:
    """A detector from a file path, a stored id, or (ref None) the promoted default.

    A detector read from a file is not stored here; score_run registers what it scores with.
    """
    ref = ref or settings.detector
    if ref and Path(ref).suffix == ".json":
        if not Path(ref).is_file():
            raise UserError(f"detector file {ref} not found")
        try:
            return read_detector_file(Path(ref))
        except ValueError as exc:
            raise UserError(str(exc)) from None
    with transaction(settings) as conn:
        if ref:
            row = conn.execute(sa.text("select spec from detectors where detector_id = :id"), {"id": ref}).first()
            if row is None:
                raise UserError(f"no detector {ref!r} in the database; list them with `profile-audit detectors`")
        else:
            row = conn.execute(sa.text("select spec from detectors where is_default")).first()
            if row is None and settings.shipped_detector:
                return shipped()
            if row is None:
                raise UserError(
                    "no default detector: train one with `profile-audit train-probe ... --promote`, "
                    "run `profile-audit demo`, or pass --detector PATH.json"
                )
    return detector_from_saved(row.spec)


def shipped() -> Detector:
    """The face detector that ships with profile-audit (detectors/presets): used when none is promoted."""
    from detectors.presets import PresetError, shipped_detector

    try:
        return shipped_detector()  # type: ignore[return-value]
    except (PresetError, ValueError) as exc:
        raise UserError(str(exc)) from None


def list_detectors(settings: Settings) -> list[dict]:
    with transaction(settings) as conn:
        rows = conn.execute(
            sa.text("select detector_id, kind, version, backbone_id, metrics, is_default, created_at,"
                    " (select count(*) from detector_training_images t where t.detector_id = d.detector_id)"
                    " as training_images from detectors d order by created_at, detector_id")
        )
        return [dict(r._mapping) for r in rows]


def install_preset(settings: Settings, name: str, head_file: Path | None = None, model: str | None = None,
                   weights: str | None = None, promote: bool = False) -> tuple[Detector, Path]:
    """Fetch (or copy) and verify a published head, then store it as a detector like a trained one."""
    from detectors.presets import PRESETS, PresetError, fetch_head, preset_detector

    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    try:
        head = fetch_head(PRESETS[name], settings.home / "presets", source=head_file)
        detector = preset_detector(name, head, model=model, weights=weights)
    except (PresetError, FileNotFoundError, ValueError) as exc:
        raise UserError(str(exc)) from None
    return detector, register_detector(settings, detector, promote=promote)
