"""`train-probe --model avatar-stack`: the fused detector trained on the user's own folders, with the same
code the shipped detector was made with (``fit_avatar_stack``), then evaluated per real source and generator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import SHARED_DATA

FACES = SHARED_DATA / "faces"
PER_FOLDER = 24  # 144 images: every split holds both classes; evaluate embeds them in three conditions


def _folders(root: Path) -> tuple[Path, Path]:
    """A small copy of the shared layout: real/<source>/ and fake/<generator>/ (links, first files by name)."""
    picks = {"real": ("kaggle_human_faces160", "lfw_deepfunneled_250", "utkface_200"),
             "fake": ("tpdne_stylegan2_128", "sfhq_t2i_sdxl", "sfhq_t2i_flux1_schnell")}
    for top, names in picks.items():
        for name in names:
            target = root / top / name
            target.mkdir(parents=True)
            for path in sorted((FACES / top / name).iterdir())[:PER_FOLDER]:
                (target / path.name).symlink_to(path)
    return root / "real", root / "fake"


@pytest.mark.slow
def test_train_probe_avatar_stack_on_real_faces_then_evaluate(tmp_path, database_url):
    if not FACES.is_dir():
        pytest.skip(f"shared faces not found at {FACES}")
    from pipeline.cli import main

    real, fake = _folders(tmp_path / "faces")
    home = tmp_path / "home"
    env_args = ["--home", str(home), "--database-url", database_url]
    out = tmp_path / "stack.json"
    assert main([*env_args, "train-probe", "--model", "avatar-stack", "--real", str(real), "--fake", str(fake),
                 "--out", str(out)]) == 0
    saved = json.loads(out.read_text(encoding="utf-8"))
    assert saved["kind"] == "avatar_stack"
    spec = saved["spec"]
    assert spec["clip"]["spec"]["backbone"]["kind"] == "clip-vit-b16" and spec["face"]["spec"]["backbone"]["kind"] == "dlib-face"
    metrics = spec["training"]["metrics"]
    assert set(metrics["test_fpr_by_real_source"]) <= {"kaggle_human_faces160", "lfw_deepfunneled_250", "utkface_200"}
    assert set(metrics["test_tpr_by_generator"]) <= {"tpdne_stylegan2_128", "sfhq_t2i_sdxl", "sfhq_t2i_flux1_schnell"}
    assert spec["training"]["threshold_rule"].startswith("0.01 FPR on every real source")
    # the fused detector evaluates like any other, per real source and per generator
    report = tmp_path / "eval.md"
    assert main([*env_args, "evaluate", "--detector", str(out), "--real", str(real), "--fake", str(fake),
                 "--report", str(report)]) == 0
    text = report.read_text(encoding="utf-8")
    assert "FPR per real source" in text and "tpdne_stylegan2_128" in text


def test_feature_applies_to_the_stack_and_clip_only(tmp_path, capsys):
    from pipeline.cli import main

    (tmp_path / "r").mkdir()
    (tmp_path / "f").mkdir()
    code = main(["--home", str(tmp_path), "train-probe", "--model", "dlib-face", "--feature", "cls",
                 "--real", str(tmp_path / "r"), "--fake", str(tmp_path / "f")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "clip-vit-b16 or avatar-stack" in err
