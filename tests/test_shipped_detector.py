"""The shipped face detector (issue 21): what ships is what was measured, and a fresh install uses it.

- The file in detectors/presets loads as any saved detector (its id is its content), holds a CLIP ViT-B/16
  probe, a dlib-face probe and the eye test, and records its training manifest's hash, its measured
  figures and its sources' licences; the manifest CSV beside it hashes to the recorded value.
- An audit with no promoted detector scores avatars with it, says so in the run summary, and keeps each
  part's contribution with the score and in the account's signals.
- Its recorded clean test-split figures are reproduced through the score stage itself: the held-out test
  images of two sources, audited as avatars, get exactly the labels the bench counted.
"""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import pytest
import sqlalchemy as sa

from detectors.avatar_stack import AvatarStack
from detectors.clip_probe import manifest_sha256, split_of
from detectors.presets import SHIPPED_DETECTOR, shipped_detector, shipped_detector_path
from conftest import SHARED_DATA

FACES = SHARED_DATA / "faces"
needs_faces = pytest.mark.skipif(not FACES.is_dir(), reason=f"shared faces not found at {FACES}")


def test_the_shipped_file_is_a_measured_avatar_stack_with_its_manifest_and_licences():
    detector = shipped_detector()
    assert isinstance(detector, AvatarStack)
    assert detector.clip.backbone.kind == "clip-vit-b16" and detector.face.backbone.kind == "dlib-face"
    assert len(detector.clip.weight) in (512, 768)  # a head of 513 or 769 floats with its bias
    training = detector.training
    measured = training["measured"]
    for part in ("clip-vit-b16 probe", "dlib-face probe", "eye test", "avatar stack"):
        assert set(measured[part]) == {"fpr_by_real_source", "tpr_by_generator"}
    sources = training["sources"]
    assert {s for s, v in sources.items() if v["label"] == "real"} == set(measured["avatar stack"]["fpr_by_real_source"])
    assert all(v["licence"] for v in sources.values())
    manifest_path = shipped_detector_path().with_name(training["manifest_file"])
    with manifest_path.open(encoding="utf-8") as fh:
        rows = [{**r, "label": int(r["label"])} for r in csv.DictReader(fh)]
    assert manifest_sha256(rows) == training["data_manifest_sha256"]
    assert {r["source"] for r in rows} == set(sources)


def _export(root: Path, images: list[Path]) -> Path:
    (root / "avatars").mkdir(parents=True)
    with (root / "manifest.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["platform", "account_id", "handle", "avatar"])
        for i, path in enumerate(images):
            name = f"{i:05d}{path.suffix.lower()}"
            (root / "avatars" / name).write_bytes(path.read_bytes())
            writer.writerow(["test", str(i), f"user{i}", f"avatars/{name}"])
    return root


def _test_split(folder: Path) -> list[Path]:
    import hashlib

    return [p for p in sorted(folder.iterdir()) if p.is_file()
            and split_of(hashlib.sha256(p.read_bytes()).hexdigest()) == "test"]


@needs_faces
@pytest.mark.slow
def test_a_fresh_install_audits_with_the_shipped_detector_and_reproduces_its_measured_labels(settings, tmp_path):
    from pipeline.audit import SHIPPED_NOTE, audit_export

    real, fake = "london_neutral_1350", "sd21_sdfd"
    real_images, fake_images = _test_split(FACES / "real" / real), _test_split(FACES / "fake" / fake)
    export = _export(tmp_path / "export", real_images + fake_images)
    fresh = replace(settings, shipped_detector=True)
    summary = audit_export(fresh, export, run_key="fresh")
    detector = shipped_detector()
    with fresh_connection(fresh) as conn:
        run = conn.execute(sa.text("select detector_id, params from runs where run_key = 'fresh'")).one()
        rows = conn.execute(sa.text(
            "select a.account_key, sc.label, sc.parts, s.avatar_parts from account_avatars a"
            " join image_scores sc on sc.sha256 = a.sha256 and sc.detector_id = :d"
            " join account_signals s on s.run_key = a.run_key and s.account_key = a.account_key"
            " where a.run_key = 'fresh' order by a.account_key"), {"d": detector.id}).all()
    assert run.detector_id == detector.id and run.params["detector"] == f"shipped:{SHIPPED_DETECTOR}"
    assert SHIPPED_NOTE in json.dumps(summary)
    assert len(rows) == len(real_images) + len(fake_images)
    assert all(set(r.parts) == {"clip", "face", "eye", "bias"} and r.avatar_parts == r.parts for r in rows)
    # the bench counted these very images (the test split by hash, clean): the score stage must agree exactly
    recorded = detector.training["measured"]["avatar stack"]
    n_real = len(real_images)
    labels = [r.label for r in sorted(rows, key=lambda r: int(r.account_key.rsplit(":", 1)[-1]))]
    assert sum(labels[:n_real]) / n_real == pytest.approx(recorded["fpr_by_real_source"][real]["clean"], abs=1e-4)
    assert sum(labels[n_real:]) / len(fake_images) == pytest.approx(recorded["tpr_by_generator"][fake]["clean"], abs=1e-4)
    # issue 25: the report of a real-faces run names the real detector and shows its measured figures, with no
    # demo banner (the figures as the Detector section prints them: three decimals per source and condition)
    from pipeline.reporting.html import DEMO_BANNER, report_dir

    index = (report_dir(fresh, "fresh") / "index.html").read_text()
    assert DEMO_BANNER not in index and "not a real detector" not in index
    assert detector.id in index or SHIPPED_DETECTOR in index
    for rates, name in ((recorded["tpr_by_generator"], fake), (recorded["fpr_by_real_source"], real)):
        assert name in index and f"{rates[name]['clean']:.3f}" in index


def fresh_connection(settings):
    from pipeline.core.db import transaction

    return transaction(settings)
