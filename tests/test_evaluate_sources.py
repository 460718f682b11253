"""Real sources as well as generators: source-balanced training, the worst-real-source threshold, the
per-real-source evaluation lines, and the train-probe options that came with them (issue 21).

Machinery only: the backbone is the tiny random-initialised open_clip model and the "generators" are
a planted periodic grid, so nothing here says anything about detecting real generators.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from detectors import read_detector_file
from detectors.clip_probe import Augmentation, source_weights, threshold_at_fpr, threshold_for_every_source
from pipeline.cli import main
from pipeline.errors import UserError
from pipeline.scoring.train import TrainResult, load_labelled_folder
from pipeline.testing.demo import draw_face, encode
from test_train import upsampling_grid

REAL_SOURCES = ("camera", "phone")
GENERATORS = ("gridgan", "gridgan-strong")


def make_source_set(root: Path, per_folder: int, seed: int) -> tuple[Path, Path]:
    """real/<source>/ and fake/<generator>/. The two real sources differ in content (the phone's faces are
    darker and soft), the generators in the grid's strength; both classes mix PNG and JPEG alike."""
    rng = np.random.default_rng(seed)
    real, fake = root / "real", root / "fake"
    for i in range(per_folder):
        for folder, kind in [(real / s, s) for s in REAL_SOURCES] + [(fake / g, g) for g in GENERATORS]:
            folder.mkdir(parents=True, exist_ok=True)
            arr = draw_face(rng, size=128)
            if kind == "phone":
                arr = np.asarray(Image.fromarray(np.clip(arr * 0.6, 0, 255).astype(np.uint8))
                                 .filter(ImageFilter.GaussianBlur(1.5)), dtype=np.float64)
            elif kind in GENERATORS:
                arr = upsampling_grid(arr, 8.0 * (1 + GENERATORS.index(kind)))
            fmt = "PNG" if rng.random() < 0.5 else "JPEG"
            (folder / f"{i:04d}.{'png' if fmt == 'PNG' else 'jpg'}").write_bytes(encode(arr, fmt, quality=90))
    return real, fake


@pytest.fixture(scope="module")
def source_data(tmp_path_factory):
    return make_source_set(tmp_path_factory.mktemp("sources"), 24, seed=21)


# --- (a) the balance ---------------------------------------------------------------------------------

def test_source_weights_give_each_class_half_and_each_source_an_equal_share():
    labels = np.array([0] * 1000 + [0] * 64 + [1] * 300 + [1] * 20)
    sources = np.array(["big"] * 1000 + ["small"] * 64 + ["gen-a"] * 300 + ["gen-b"] * 20, dtype=object)
    weights = source_weights(labels, sources)
    total = weights.sum()
    assert total == pytest.approx(len(labels))  # the mean weight stays 1, as with no weights
    for label, names in ((0, ("big", "small")), (1, ("gen-a", "gen-b"))):
        assert weights[labels == label].sum() == pytest.approx(total / 2)
        for name in names:
            share = weights[sources == name]
            assert share.sum() == pytest.approx(total / 4)  # two sources per class: a quarter each
            assert np.all(share == share[0])  # equal within a source
    # the 64 images weigh as much together as the 1,000: each one about 15.6 times as much
    assert weights[sources == "small"][0] / weights[sources == "big"][0] == pytest.approx(1000 / 64)


# --- (b) the worst-source threshold ------------------------------------------------------------------

def _fpr(probs: np.ndarray, threshold: float) -> float:
    return float((probs >= threshold).mean())


def test_threshold_for_every_source_holds_the_target_on_the_hard_source():
    rng = np.random.default_rng(3)
    easy = rng.uniform(0.0, 0.4, 2000)  # reals the detector finds clearly real
    hard = rng.uniform(0.2, 0.9, 300)  # a source whose reals look far more generated
    probs = np.concatenate([easy, hard])
    sources = np.array(["easy"] * len(easy) + ["hard"] * len(hard), dtype=object)
    target = 0.01

    threshold = threshold_for_every_source(probs, sources, target)
    assert _fpr(easy, threshold) <= target and _fpr(hard, threshold) <= target
    # the hard source sets it, and no lower threshold would do: it is that source's own rule
    assert threshold == threshold_at_fpr(hard, target)
    assert _fpr(hard, np.nextafter(threshold, -np.inf)) > target or threshold == 0.0
    # the pooled rule meets the target on the pool only by letting the hard source through
    pooled = threshold_at_fpr(probs, target)
    assert _fpr(probs, pooled) <= target and _fpr(hard, pooled) > target
    # one source: the same as the pooled rule
    assert threshold_for_every_source(hard, np.array(["only"] * len(hard), dtype=object), target) == \
        threshold_at_fpr(hard, target)
    assert threshold_for_every_source(probs, np.full(len(probs), "", dtype=object), target) == pooled


# --- (c) training and evaluation with real sub-folders --------------------------------------------------

OLD_AUGMENTATION_KEYS = {"blur_p", "blur_sigma", "jpeg_p", "jpeg_quality", "reencode_quality", "views"}


def test_train_and_evaluate_report_every_real_source(settings, source_data, tmp_path, capsys):
    """train-probe on real/<source>/ folders records the per-source test figures and the worst-source
    rule; evaluate reports ``real:<source>`` entries whose FPR is a direct count of the scored labels."""
    real, fake = source_data
    args = ["--home", str(settings.home), "--database-url", settings.database_url]
    assert main([*args, "train-probe", "--real", str(real), "--fake", str(fake), "--blur-prob", "0", "--jpeg-prob", "0",
                 "--target-fpr", "0.05", "--out", str(tmp_path / "probe.json")]) == 0
    out = capsys.readouterr().out
    probe = read_detector_file(tmp_path / "probe.json")
    metrics = probe.training["metrics"]
    assert set(metrics["test_fpr_by_real_source"]) == set(REAL_SOURCES)
    assert set(metrics["test_tpr_by_generator"]) == set(GENERATORS)
    assert re.search(r"^test FPR@thr per real source: camera \d\.\d{3}, phone \d\.\d{3}$", out, re.M), out
    assert re.search(r"^test TPR@thr per generator: gridgan \d\.\d{3}, gridgan-strong \d\.\d{3}$", out, re.M), out
    assert probe.training["sources"] == sorted(REAL_SOURCES + GENERATORS)
    assert "every real source" in probe.training["threshold_rule"]
    # (e) resize and crop off (the default): the saved augmentation has exactly the keys it had before them
    assert set(probe.training["augmentation"]) == OLD_AUGMENTATION_KEYS

    report = tmp_path / "eval.html"
    assert main([*args, "evaluate", "--detector", str(tmp_path / "probe.json"), "--real", str(real),
                 "--fake", str(fake), "--report", str(report)]) == 0
    printed = capsys.readouterr().out
    text = report.read_text()
    result = json.loads(html.unescape(re.search(r"id='result'>(.*?)</script>", text, re.S).group(1)))
    real_images = load_labelled_folder(real, 0)[0]
    for condition, entry in result["conditions"].items():
        assert {"all", *GENERATORS, *(f"real:{s}" for s in REAL_SOURCES), "worst_real_source"} == set(entry)
        fprs = {s: entry[f"real:{s}"]["fpr_at_threshold"] for s in REAL_SOURCES}
        assert entry["worst_real_source"] == {"source": max(sorted(fprs), key=fprs.__getitem__),
                                              "fpr_at_threshold": max(fprs.values())}
        assert sum(entry[f"real:{s}"]["n_real"] for s in REAL_SOURCES) == entry["all"]["n_real"] == 48
        line = re.search(rf"^  {re.escape(condition)} +FPR@thr per real source: camera (\S+) \(24 real\), "
                         rf"phone (\S+) \(24 real\); worst (\S+) (\S+)$", printed, re.M)
        assert line, printed
        assert [float(line.group(1)), float(line.group(2))] == pytest.approx([fprs["camera"], fprs["phone"]], abs=5e-4)
        assert re.search(rf"^  {re.escape(condition)} +TPR@thr per generator: gridgan \S+ \(24 fake\), "
                         rf"gridgan-strong \S+ \(24 fake\)$", printed, re.M), printed
    # the direct count: the score path's own labels on each source's clean reals
    clean = result["conditions"]["clean"]
    for source in REAL_SOURCES:
        labels = [s.label for s in probe.score([im.image for im in real_images if im.source == source])]
        assert clean[f"real:{source}"]["false_positives"] == sum(labels)
        assert clean[f"real:{source}"]["fpr_at_threshold"] == round(sum(labels) / len(labels), 4)
    assert "<h2>FPR per real source</h2>" in text and text.count("<td>real:") == 0
    assert text.count("<td>phone</td>") == len(result["conditions"])

    md = tmp_path / "eval.md"
    from pipeline.scoring.evaluate import Evaluation, write_evaluation_report

    write_evaluation_report(Evaluation(result, {}), md)
    lines = md.read_text().splitlines()
    assert "## FPR per real source" in lines
    assert any(row.startswith("| clean | phone | 24 | 0 |") for row in lines)
    assert not any("real:" in row for row in lines)  # the generator table keeps its rows only


def test_evaluate_with_one_real_source_keeps_its_keys(settings, source_data, tmp_path):
    """One real folder: no ``real:`` entries and no worst source, as before (the per-generator rows stay)."""
    from detectors.backbone import BackboneSpec
    from detectors.clip_probe import ClipProbe
    from pipeline.scoring.evaluate import evaluate, real_metrics

    real, fake = source_data
    probe = ClipProbe(backbone=BackboneSpec.parse("pa-tiny-vit", "random:0"),
                      weight=np.random.default_rng(0).normal(size=64).tolist(), bias=0.0)
    result = evaluate(settings, probe, load_labelled_folder(real / "camera", 0)[0], load_labelled_folder(fake, 1)[0],
                      conditions=("clean",)).result
    assert set(result["conditions"]["clean"]) == {"all", *GENERATORS}
    # the real-only figures on their own: NaN is unscored, the FPR is a count
    figures = real_metrics(np.array([0.1, 0.7, np.nan, 0.2]), 0.5)
    assert figures == {"n_real": 3, "n_unscored_real": 1, "false_positives": 1, "fpr_at_threshold": 0.3333}
    assert real_metrics(np.array([np.nan]), 0.5)["fpr_at_threshold"] is None


# --- (d) the new train-probe options -------------------------------------------------------------------

def test_feature_without_clip_vit_b16_is_a_one_line_error(tmp_path, capsys):
    assert main(["--home", str(tmp_path / "home"), "train-probe", "--real", str(tmp_path), "--fake", str(tmp_path),
                 "--model", "pa-tiny-vit", "--feature", "cls"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--feature cls applies only to --model clip-vit-b16" in err, err
    for flag, value in (("--crop-fraction", "0.5-1.5"), ("--resize-scale", "0-1"), ("--crop-prob", "2")):
        assert main(["--home", str(tmp_path / "home"), "train-probe", "--real", str(tmp_path),
                     "--fake", str(tmp_path), flag, value]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and flag in err, err


def test_train_probe_forwards_feature_only_when_given(source_data, monkeypatch):
    import pipeline.scoring.train as train

    seen = []

    def parse(model, weights=None, **options):
        seen.append((model, options))
        raise ValueError("stop here")

    monkeypatch.setattr(train, "parse_backbone", parse)
    real, fake = source_data
    with pytest.raises(UserError, match="--feature embeds applies only to --model clip-vit-b16"):
        train.train_probe(None, real, fake, model="pa-tiny-vit", feature="embeds")
    assert seen == []  # refused before the folders were read
    for model, feature in (("pa-tiny-vit", None), ("clip-vit-b16", None), ("clip-vit-b16", "patch_mean")):
        with pytest.raises(UserError, match="stop here"):
            train.train_probe(None, real, fake, model=model, feature=feature)
    assert [("feature" in options, options.get("feature")) for _, options in seen] == [
        (False, None), (False, None), (True, "patch_mean")]


def test_cli_passes_resize_crop_and_feature_through(settings, monkeypatch, tmp_path, capsys):
    import pipeline.scoring.train as train

    calls = {}

    def fake_train_probe(settings, real, fake, **kw):
        calls.update(kw)
        return TrainResult("clip_probe-v1:x", tmp_path / "x.json", {"test_fpr_by_real_source": {"a": 0.0, "b": 0.02},
                                                                    "test_tpr_by_generator": {"g": 0.9}}, [])

    monkeypatch.setattr(train, "train_probe", fake_train_probe)
    args = ["--home", str(settings.home), "--database-url", settings.database_url]
    assert main([*args, "train-probe", "--real", str(tmp_path), "--fake", str(tmp_path), "--model", "clip-vit-b16",
                 "--feature", "patch_mean", "--resize-prob", "0.3", "--resize-scale", "0.4-0.9",
                 "--crop-prob", "0.2", "--crop-fraction", "0.7-0.95"]) == 0
    aug = calls["augmentation"]
    assert calls["feature"] == "patch_mean" and calls["model"] == "clip-vit-b16"
    assert (aug.resize_p, aug.resize_scale, aug.crop_p, aug.crop_fraction) == (0.3, (0.4, 0.9), 0.2, (0.7, 0.95))
    out = capsys.readouterr().out
    assert "test FPR@thr per real source: a 0.000, b 0.020\n" in out
    assert "test TPR@thr per generator: g 0.900\n" in out
    assert main([*args, "train-probe", "--real", str(tmp_path), "--fake", str(tmp_path)]) == 0
    assert calls["feature"] is None and calls["augmentation"].resize_p == 0 and calls["augmentation"].crop_p == 0


# --- (e) resize and crop augmentation --------------------------------------------------------------------

def test_resize_and_crop_change_training_views_and_are_left_out_of_the_saved_form_when_off():
    image = Image.fromarray(np.clip(draw_face(np.random.default_rng(1)), 0, 255).astype(np.uint8))
    plain = Augmentation(blur_p=0.0, jpeg_p=0.0, reencode_quality=None)
    resized = Augmentation(blur_p=0.0, jpeg_p=0.0, reencode_quality=None, resize_p=1.0, resize_scale=(0.5, 0.5))
    cropped = Augmentation(blur_p=0.0, jpeg_p=0.0, reencode_quality=None, crop_p=1.0, crop_fraction=(0.8, 0.8))
    sha = hashlib.sha256(b"face").hexdigest()
    assert plain.training_view(image, sha).size == image.size
    assert resized.training_view(image, sha).size == (image.width // 2, image.height // 2)
    crop = cropped.training_view(image, sha)
    assert crop.size == (round(image.width * 0.8), round(image.height * 0.8))
    # different views of one image draw different crops; the same view is the same crop (seeded by hash)
    views = [np.asarray(cropped.training_view(image, sha, view=v)) for v in range(6)]
    assert any(not np.array_equal(views[0], v) for v in views[1:])
    assert np.array_equal(views[0], np.asarray(cropped.training_view(image, sha, view=0)))
    # held-out images never get them: only the input transform
    assert np.array_equal(np.asarray(cropped.held_out_view(image, sha)), np.asarray(plain.held_out_view(image, sha)))

    # off (the default): the saved form is what it was before the options existed, so detector ids keep
    assert Augmentation().to_dict() == {"blur_p": 0.5, "blur_sigma": [0.0, 3.0], "jpeg_p": 0.5,
                                        "jpeg_quality": [30, 100], "reencode_quality": [50, 80], "views": 1}
    on = Augmentation(resize_p=0.5, crop_p=0.25).to_dict()
    assert (on["resize_p"], on["resize_scale"], on["crop_p"], on["crop_fraction"]) == (0.5, [0.5, 1.0], 0.25, [0.8, 1.0])
