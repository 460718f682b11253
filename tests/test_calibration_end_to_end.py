"""One input transform from calibration to scoring, tested end to end on the shared real faces.

A probe trained for 1% FPR on real validation images, then an audit whose avatars are held-out real
faces (web headshots as JPEG, FFHQ as PNG, never seen in training): the share the audit labels
synthetic must be about 1%, within the sampling error of a threshold set on a few hundred real
validation images, and exactly the FPR that `evaluate` reports for the same images (processed as scored).

The backbone is a random-initialised tiny open_clip model: it detects nothing real, and this test does
not claim it does. What it checks is that the FPR promise is made on images processed like avatars.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import SHARED_DATA

from pipeline.core.db import transaction

FACES = SHARED_DATA / "faces"
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (FACES / "real" / "kaggle_human_faces160").is_dir(), reason="shared faces absent")]


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file())


def _link_all(files: list[Path], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for p in files:
        (folder / p.name).symlink_to(p)
    return folder


def _export(root: Path, files: list[Path]) -> Path:
    """A generic-manifest export: one account per held-out real face, its avatar copied into the export."""
    (root / "avatars").mkdir(parents=True)
    with (root / "manifest.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, ["platform", "account_id", "handle", "display_name", "bio", "url", "created_at",
                                     "followers", "following", "posts", "language", "avatar"])
        writer.writeheader()
        for i, p in enumerate(files):
            rel = f"avatars/{p.parent.name}-{p.name}"
            shutil.copyfile(p, root / rel)
            writer.writerow({"platform": "heldout", "account_id": f"a{i:05d}", "handle": f"person{i}",
                             "display_name": "", "bio": "hello", "url": "", "created_at": "2020-01-01T00:00:00Z",
                             "followers": 100, "following": 100, "posts": 10, "language": "en", "avatar": rel})
    return root


def test_a_detector_trained_for_1pct_fpr_labels_about_1pct_of_held_out_real_faces_through_audit(settings, tmp_path):
    from scipy.stats import betabinom

    from pipeline.audit import audit_export
    from pipeline.scoring.evaluate import evaluate_folders
    from pipeline.scoring.train import train_probe

    kaggle, ffhq = _files(FACES / "real" / "kaggle_human_faces160"), _files(FACES / "real" / "ffhq_thumbs128")
    stylegan = _files(FACES / "fake" / "tpdne_stylegan2_128")
    train_real = _link_all(kaggle[:700] + ffhq[:700], tmp_path / "train" / "real")
    train_fake = _link_all(stylegan[:700], tmp_path / "train" / "fake" / "stylegan2")
    held_out = kaggle[700:] + ffhq[700:]  # 500 JPEG headshots + 300 FFHQ PNG

    result = train_probe(settings, train_real, train_fake, target_fpr=0.01, out=tmp_path / "probe.json")
    from detectors import read_detector_file

    probe = read_detector_file(tmp_path / "probe.json")
    assert probe.input_reencode == (50, 80)  # the canonical re-encode, recorded on the detector
    n_val_real = probe.training["counts"]["val"]["real"]
    allowed = int(0.01 * n_val_real)  # real validation images above the threshold, by construction

    summary = audit_export(settings, _export(tmp_path / "export", held_out), run_key="heldout",
                           detector=str(tmp_path / "probe.json"))
    assert summary
    with transaction(settings) as conn:
        labels = conn.execute(sa.text(
            "select s.label from image_scores s join (select distinct sha256 from account_avatars"
            " where run_key = 'heldout' and sha256 is not null) a using (sha256) where s.detector_id = :d"),
            {"d": probe.id}).scalars().all()
    assert len(labels) == len(held_out)
    labelled = sum(labels)
    # the threshold's true FPR is Beta(allowed + 1, n_val_real - allowed); the held-out count is binomial on it
    low, high = betabinom.ppf([0.005, 0.995], len(labels), allowed + 1, n_val_real - allowed)
    print(f"held-out real faces labelled synthetic: {labelled} of {len(labels)} ({labelled / len(labels):.4f}); "
          f"threshold set on {n_val_real} real validation images; 99% interval {int(low)}-{int(high)}; "
          f"training metrics {result.metrics}")
    assert low <= labelled <= high

    # evaluate reports the same FPR on the same images: it processes them as the score stage does
    held_real = _link_all(held_out, tmp_path / "heldout" / "real")
    held_fake = _link_all(stylegan[700:800], tmp_path / "heldout" / "fake" / "stylegan2")
    report = evaluate_folders(settings, str(tmp_path / "probe.json"), held_real, held_fake)
    clean = report["conditions"]["clean"]["all"]
    assert clean["n_real"] == len(labels)
    assert round(labelled / len(labels), 4) == clean["fpr_at_threshold"]
    assert report["input_transform"].startswith("jpeg q50-80")
