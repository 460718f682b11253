"""The `dlib-face` backbone end to end: `train-probe --model dlib-face` needs no --weights, images with
no face are left out of training (counted), and through `audit` an avatar with no face gets no
dlib-face score, with that reason; rescoring from the embedding cache gives the same rows.

Real faces from ../shared/data/faces (a few dozen, to keep the test short): this checks the plumbing,
not the detector's quality, which bench/detector_real_faces.py measures.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import SHARED_DATA
from PIL import Image

from pipeline.cli import main
from pipeline.core.db import transaction

FACES = SHARED_DATA / "faces"
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (FACES / "real" / "kaggle_human_faces160").is_dir(), reason="shared faces absent")]


def _files(folder: Path, start: int, stop: int) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file())[start:stop]


def _folder(files: list[Path], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for p in files:
        shutil.copyfile(p, folder / p.name)
    return folder


def test_train_score_and_no_face_reason(settings, tmp_path, capsys):
    real = _folder(_files(FACES / "real" / "kaggle_human_faces160", 0, 45), tmp_path / "real")
    fake = _folder(_files(FACES / "fake" / "tpdne_stylegan2_128", 0, 45), tmp_path / "fake" / "stylegan2")
    for i in range(4):  # no face at all: the backbone has nothing to embed
        Image.new("RGB", (128, 128), (40 * i, 90, 160)).save(real / f"blank{i}.png")
    args = ["--home", str(settings.home), "--database-url", settings.database_url]
    assert main([*args, "train-probe", "--model", "dlib-face", "--real", str(real), "--fake", str(fake),
                 "--target-fpr", "0.05", "--out", str(tmp_path / "face.json")]) == 0
    assert "saved to" in capsys.readouterr().out
    saved = json.loads((tmp_path / "face.json").read_text())
    assert saved["kind"] == "face_probe" and saved["spec"]["backbone"]["kind"] == "dlib-face"
    assert sum(saved["spec"]["training"]["not_embedded"].values()) >= 4

    export = tmp_path / "export"
    (export / "avatars").mkdir(parents=True)
    avatars = {"face": _files(FACES / "real" / "kaggle_human_faces160", 100, 101)[0],
               "stylegan": _files(FACES / "fake" / "tpdne_stylegan2_128", 100, 101)[0]}
    for name, path in avatars.items():
        shutil.copyfile(path, export / "avatars" / f"{name}.jpg")
    Image.new("RGB", (128, 128), (200, 120, 40)).save(export / "avatars" / "logo.png")
    with (export / "manifest.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, ["platform", "account_id", "handle", "bio", "created_at", "avatar"])
        writer.writeheader()
        for name in ("face", "stylegan", "logo"):
            writer.writerow({"platform": "t", "account_id": name, "handle": name, "bio": "",
                             "created_at": "2020-01-01T00:00:00Z",
                             "avatar": f"avatars/{name}.{'png' if name == 'logo' else 'jpg'}"})

    def rows(run_key: str) -> dict[str, tuple]:
        with transaction(settings) as conn:
            return {r.account_key.split(":")[-1]: (r.probability, r.label, r.reason) for r in conn.execute(sa.text(
                "select a.account_key, s.probability, s.label, s.reason from account_avatars a"
                " join image_scores s using (sha256) where a.run_key = :k and s.detector_id = :d"),
                {"k": run_key, "d": saved["id"]})}

    for run_key in ("r1", "r2"):
        assert main([*args, "audit", str(export), "--run-key", run_key, "--detector", str(tmp_path / "face.json")]) == 0
    first = rows("r1")
    assert set(first) == {"face", "stylegan", "logo"}
    assert first["logo"] == (None, False, "no dlib-face score: no face found")
    assert first["face"][0] is not None and first["stylegan"][0] is not None
    assert rows("r2") == first  # the second run scores from the cached embeddings, NaN row included
    with transaction(settings) as conn:
        signals = {r.account_key.split(":")[-1]: r for r in conn.execute(sa.text(
            "select account_key, avatar_probability, contributions, face_usable from account_signals"
            " where run_key = 'r1'"))}
    assert signals["logo"].avatar_probability is None and "synthetic_avatar" not in signals["logo"].contributions
    assert signals["stylegan"].face_usable is True
