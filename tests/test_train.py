"""`profile-audit train-probe` and `evaluate` on generated data: the honest tests of the machinery.

These tests validate the training machinery (augmentation, the re-encode rule, split by hash,
head fitting, calibration, threshold at a target FPR, saving, evaluation). The backbone is a tiny
random-initialised open_clip model and the "generator" is a synthetic artifact, so nothing here
says anything about detecting images of real generators.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from PIL import Image

from detectors import read_detector_file
from detectors.clip_probe import Augmentation, LabelledImage
from pipeline.cli import main
from pipeline.core.db import transaction
from pipeline.scoring.evaluate import evaluate_folders, expected_calibration_error, tpr_at_fpr
from pipeline.testing.demo import draw_face, encode

GRID_PERIOD = 8
GRID_AMPLITUDE = 8.0


def upsampling_grid(arr: np.ndarray, amplitude: float = GRID_AMPLITUDE) -> np.ndarray:
    """The known 'generator' artifact: a periodic checkerboard of period 8 pixels, as a transposed
    convolution with a stride that does not divide its kernel leaves on upsampled images."""
    h, w = arr.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    grid = np.where(((yy % GRID_PERIOD) < GRID_PERIOD // 2) ^ ((xx % GRID_PERIOD) < GRID_PERIOD // 2), 1.0, -1.0)
    return arr + amplitude * grid[..., None]


def make_artifact_set(root: Path, per_class: int, seed: int, generators: tuple[str, ...] = ("gridgan",)) -> tuple[Path, Path]:
    """real/ and fake/<generator>/; both classes mix PNG and JPEG alike, so only the artifact differs."""
    rng = np.random.default_rng(seed)
    real, fake = root / "real", root / "fake"
    for i in range(per_class):
        for folder, traced in ((real, False), (fake / generators[i % len(generators)], True)):
            folder.mkdir(parents=True, exist_ok=True)
            arr = draw_face(rng)
            if traced:
                arr = upsampling_grid(arr, GRID_AMPLITUDE * (1 + (i % len(generators))))
            fmt = "PNG" if rng.random() < 0.5 else "JPEG"
            (folder / f"{i:04d}.{'png' if fmt == 'PNG' else 'jpg'}").write_bytes(encode(arr, fmt, quality=90))
    return real, fake


def make_format_shortcut_set(root: Path, per_class: int, seed: int) -> tuple[Path, Path]:
    """No artifact at all: reals saved as JPEG (quality 90), fakes as PNG. Only the format differs."""
    rng = np.random.default_rng(seed)
    real, fake = root / "real", root / "fake"
    real.mkdir(parents=True), fake.mkdir(parents=True)
    for i in range(per_class):
        (real / f"{i:04d}.jpg").write_bytes(encode(draw_face(rng), "JPEG", quality=90))
        (fake / f"{i:04d}.png").write_bytes(encode(draw_face(rng), "PNG"))
    return real, fake


@pytest.fixture(scope="module")
def artifact_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("artifact")
    train = make_artifact_set(root / "train", 150, seed=11)
    held_out = make_artifact_set(root / "held_out", 60, seed=12, generators=("gridgan", "gridgan-strong"))
    return {"train": train, "held_out": held_out}


@pytest.mark.slow
def test_artifact_separates_on_held_out_images_through_the_cli(settings, artifact_data, tmp_path, capsys):
    """train-probe -> evaluate on images never seen in training: the machinery finds the planted artifact.

    Machinery only: a random-initialised backbone sees a periodic grid, not real generators."""
    real, fake = artifact_data["train"]
    args = ["--home", str(settings.home), "--database-url", settings.database_url]
    assert main([*args, "train-probe", "--real", str(real), "--fake", str(fake), "--calibration", "isotonic",
                 "--promote", "--out", str(tmp_path / "probe.json")]) == 0
    trained = capsys.readouterr().out
    assert "promoted to default" in trained
    probe = read_detector_file(tmp_path / "probe.json")
    assert probe.isotonic is not None and probe.training["calibration"] == "isotonic"

    held_real, held_fake = artifact_data["held_out"]
    report = tmp_path / "eval.md"
    assert main([*args, "evaluate", "--real", str(held_real), "--fake", str(held_fake), "--report", str(report),
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["detector_id"] == probe.id and result["overlap_with_training"] == 0
    clean = result["conditions"]["clean"]
    print("machinery evaluation (held-out):", json.dumps(result["conditions"], sort_keys=True))
    assert clean["all"]["roc_auc"] >= 0.95 and clean["all"]["tpr_at_5pct_fpr"] >= 0.5
    assert set(clean) == {"all", "gridgan", "gridgan-strong"}  # per generator, from the sub-folders
    assert clean["gridgan-strong"]["roc_auc"] >= clean["gridgan"]["roc_auc"] - 0.02
    assert {"jpeg_q75", "resize_0.5"} <= set(result["conditions"])
    assert (tmp_path / "eval.roc.svg").read_text().count("<polyline") == 3
    assert "| clean | gridgan |" in report.read_text()


@pytest.mark.slow
def test_reencode_rule_defeats_a_pure_format_shortcut_on_the_training_path(tmp_path):
    """Fakes PNG, reals JPEG, no artifact. A format-sensitive feature (JPEG 8x8 blocking) separates the
    raw training files almost perfectly; on what the training path feeds the backbone (UnivFD
    augmentation then the re-encode rule, identical for both classes) it no longer does.

    This tests the rule itself, on the training data path: a random-initialised backbone could not
    see the format anyway, so a low score from it alone would prove nothing."""
    from sklearn.metrics import roc_auc_score

    real, fake = make_format_shortcut_set(tmp_path, 60, seed=5)
    items = [(p, label) for folder, label in ((real, 0), (fake, 1)) for p in sorted(folder.iterdir())]
    labels = np.array([label for _, label in items])
    images = [(hashlib.sha256(p.read_bytes()).hexdigest(), Image.open(p).convert("RGB")) for p, _ in items]

    def auc(view) -> float:
        scores = np.array([_blockiness(view(im, sha)) for sha, im in images])
        return max(roc_auc_score(labels, scores), 1 - roc_auc_score(labels, scores))

    rule = Augmentation()
    raw = auc(lambda im, sha: im)
    no_rule = auc(Augmentation(reencode_quality=None).training_view)
    train_view, held_out_view = auc(rule.training_view), auc(rule.held_out_view)
    print(f"format-shortcut AUC of JPEG blocking: raw {raw:.3f}, UnivFD augmentation without the rule {no_rule:.3f}, "
          f"training view {train_view:.3f}, held-out view {held_out_view:.3f}")
    assert raw > 0.95  # the shortcut is there in the files
    # (UnivFD's blur and JPEG alone, at p=0.5 each, already blur most of this one feature away on the
    # training split; the validation and test splits, which set the threshold, get no augmentation)
    assert Augmentation(reencode_quality=None).held_out_view is not None and auc(
        Augmentation(reencode_quality=None).held_out_view) > 0.95
    assert train_view < 0.7 and held_out_view < 0.7  # the rule takes it away


@pytest.mark.slow
def test_format_shortcut_data_does_not_train_a_confident_detector(settings, tmp_path):
    """End to end on the same kind of data: held-out fakes must not score high. (Machinery only.)"""
    from pipeline.scoring.train import train_probe

    real, fake = make_format_shortcut_set(tmp_path / "data", 120, seed=6)
    result = train_probe(settings, real, fake, target_fpr=0.05)
    print("format-shortcut probe, held-out:", result.metrics)
    assert result.metrics["test_roc_auc"] < 0.8
    assert result.metrics["test_tpr_at_threshold"] < 0.35


def _blockiness(img: Image.Image) -> float:
    g = np.asarray(img.convert("L"), dtype=np.float64)
    d = np.abs(np.diff(g, axis=1))
    return d[:, 7::8].mean() / np.delete(d, np.s_[7::8], axis=1).mean()


def test_augmentation_is_label_blind_and_deterministic():
    rng = np.random.default_rng(0)
    arr = draw_face(rng)
    sha = hashlib.sha256(b"x").hexdigest()
    image = Image.fromarray(arr.clip(0, 255).astype(np.uint8))
    aug = Augmentation()
    a, b = aug.training_view(image, sha), aug.training_view(image, sha)
    assert np.array_equal(np.asarray(a), np.asarray(b))
    # same pixels, same hash: the view cannot depend on the class the image is filed under
    real = LabelledImage(sha, image, 0)
    fake = LabelledImage(sha, image, 1)
    assert np.array_equal(np.asarray(aug.training_view(real.image, real.sha256)),
                          np.asarray(aug.training_view(fake.image, fake.sha256)))
    # over many hashes, about half are blurred and about half JPEG'd (p = 0.5 each)
    blurred = 0
    plain = Augmentation(jpeg_p=0.0, reencode_quality=None)
    for i in range(200):
        s = hashlib.sha256(str(i).encode()).hexdigest()
        blurred += not np.array_equal(np.asarray(plain.training_view(image, s)), np.asarray(image))
    assert 70 < blurred < 130


@pytest.mark.slow
def test_training_saves_a_versioned_detector_with_manifest_to_db_and_files(settings, demo_data, tmp_path):
    from pipeline.scoring.detector_store import list_detectors, promote_detector
    from pipeline.scoring.train import train_probe

    first = train_probe(settings, demo_data["real"], demo_data["fake"], calibration="platt")
    probe = read_detector_file(first.path)
    assert probe.id == first.detector_id and probe.id.startswith("clip_probe-v1:")
    assert probe.training["augmentation"]["jpeg_quality"] == [30, 100]
    with first.manifest_path.open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 600 and {r["split"] for r in rows} == {"train", "val", "test"}
    with transaction(settings) as conn:
        stored = conn.execute(sa.text("select count(*) from detector_training_images where detector_id = :d"),
                              {"d": probe.id}).scalar_one()
    assert stored == 600
    assert probe.training["data_manifest_sha256"] == hashlib.sha256(
        "".join(f"{r['sha256']}:{r['label']}\n" for r in rows).encode()).hexdigest()
    # the threshold holds the target FPR on real validation images
    assert probe.training["metrics"]["val_fpr_at_threshold"] <= 0.01

    again = train_probe(settings, demo_data["real"], demo_data["fake"])  # same data, same settings: same detector
    assert again.detector_id == first.detector_id
    iso = train_probe(settings, demo_data["real"], demo_data["fake"], calibration="isotonic")
    assert iso.detector_id != first.detector_id
    assert [d["is_default"] for d in list_detectors(settings)] == [False, False]
    promote_detector(settings, iso.detector_id)
    promote_detector(settings, first.detector_id)
    assert {d["detector_id"]: d["is_default"] for d in list_detectors(settings)} == {first.detector_id: True,
                                                                                     iso.detector_id: False}


@pytest.mark.slow
def test_isotonic_calibration_is_monotone_and_round_trips(settings, demo_data, tmp_path):
    from detectors import save_detector
    from detectors.clip_probe import ClipProbe

    iso = read_detector_file(__import__("pipeline.scoring.train", fromlist=["train_probe"]).train_probe(
        settings, demo_data["real"], demo_data["fake"], calibration="isotonic").path)
    logits = np.linspace(-20, 20, 200)
    probs = iso.calibrate(logits)
    assert np.all(np.diff(probs) >= 0) and probs.min() >= 0 and probs.max() <= 1
    again = read_detector_file(save_detector(iso, tmp_path / "iso.json"))
    assert isinstance(again, ClipProbe) and np.array_equal(again.calibrate(logits), probs)


def test_metric_helpers_on_known_values():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.9, 0.4, 0.5, 0.6, 0.95])
    assert tpr_at_fpr(labels, scores, 0.0) == 0.25  # only 0.95 is above every real
    assert tpr_at_fpr(labels, scores, 0.25) == 1.0
    perfect = expected_calibration_error(np.array([0, 1]), np.array([0.0, 1.0]))
    worst = expected_calibration_error(np.array([1, 0]), np.array([0.0, 1.0]))
    assert perfect == 0.0 and worst == 1.0


@pytest.mark.slow
def test_user_mistakes_are_one_line_errors(settings, demo_data, tmp_path, capsys):
    args = ["--home", str(settings.home), "--database-url", settings.database_url]
    cases = [
        (["train-probe", "--real", str(tmp_path / "none"), "--fake", str(demo_data["fake"])], "is not a folder"),
        (["train-probe", "--real", str(demo_data["real"]), "--fake", str(demo_data["fake"]), "--jpeg-quality", "x"],
         "--jpeg-quality must look like LOW-HIGH"),
        (["evaluate", "--detector", str(demo_data["detector"]), "--real", str(demo_data["real"]),
          "--fake", str(demo_data["fake"]), "--report", str(tmp_path / "r.pdf")], "must end in .md or .html"),
        (["promote", "clip_probe-v1:0000"], "no detector 'clip_probe-v1:0000'"),
        (["score", "--run-key", "x", "--detector", str(demo_data["detector"]), "--shard-index", "2", "--shard-count", "2"],
         "shard index 2 of 2"),
    ]
    for argv, message in cases:
        assert main([*args, *argv]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err


@pytest.mark.slow
def test_html_report_embeds_the_roc_svg(settings, demo_data, tmp_path):
    out = evaluate_folders(settings, str(demo_data["detector"]), demo_data["real"], demo_data["fake"],
                           report=tmp_path / "r.html")
    text = Path(out["report"]).read_text()
    assert "<svg" in text and text.count("<polyline") == 3 and out["detector_id"] in text
    # evaluating on its own training data is reported, not hidden (the demo probe's data is not in this DB)
    assert out["overlap_with_training"] == 0
