"""The `univfd` preset: the published UnivFD head (Linear 768 -> 1), sha256-pinned, wired end to end.

Real use runs it over CLIP ViT-L/14 (`ViT-L-14`/`openai`, about 900 MB). Here the head file comes
from ../shared/data/univfd/ and the backbone is a random-initialised open_clip config whose
embedding is 768 wide: this checks the wiring (shapes, features, preprocessing, the maths of the
head), not UnivFD's accuracy.
"""

from __future__ import annotations

import hashlib
import http.server
import threading
from functools import partial

import numpy as np
import pytest
from conftest import SHARED_DATA
from PIL import Image

from detectors.presets import UNIVFD, PresetError, fetch_head, load_head, preset_detector

HEAD = SHARED_DATA / "univfd" / "fc_weights.pth"
pytestmark = pytest.mark.skipif(not HEAD.is_file(), reason=f"the UnivFD head copy {HEAD} is absent")


def _faces(n: int = 4) -> list[Image.Image]:
    from pipeline.testing.demo import draw_face

    rng = np.random.default_rng(3)
    return [Image.fromarray(draw_face(rng, 256).clip(0, 255).astype(np.uint8)) for _ in range(n)]


def test_head_file_is_the_published_one_with_its_shape():
    assert hashlib.sha256(HEAD.read_bytes()).hexdigest() == UNIVFD.sha256
    weight, bias = load_head(HEAD, 768)
    assert len(weight) == 768 and isinstance(bias, float)
    with pytest.raises(PresetError, match="not a Linear\\(512, 1\\)"):
        load_head(HEAD, 512)


def test_preset_describes_univfd():
    probe = preset_detector("univfd", HEAD)
    assert probe.backbone.id == "ViT-L-14/openai/encode_image/center_crop"  # raw features, crop without resize
    assert probe.threshold == 0.5 and "ProGAN" in probe.training["trained_on"]


def test_wired_end_to_end_through_a_768_wide_random_backbone():
    """score() == sigmoid(Linear(encode_image(center_crop(x)))) computed independently with torch."""
    import torch

    from detectors.backbone import load_backbone

    probe = preset_detector("univfd", HEAD, model="pa-tiny-vit-768", weights="random:0")
    images = _faces()
    got = np.array([s.probability for s in probe.score(images)])

    backbone = load_backbone(probe.backbone)
    linear = torch.nn.Linear(768, 1)
    linear.load_state_dict(torch.load(HEAD, map_location="cpu", weights_only=True))
    crop = [np.asarray(im)[16:240, 16:240] for im in images]  # 256 -> central 224, no resize
    batch = torch.stack([backbone.preprocess(Image.fromarray(c)) for c in crop])
    with torch.inference_mode():
        expected = torch.sigmoid(linear(backbone.model.encode_image(batch))).squeeze(1).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    assert probe.backbone.normalize is False


def test_cli_installs_the_preset_from_a_local_copy_and_scores(settings, tmp_path, capsys):
    from pipeline.cli import main
    from pipeline.scoring.detector_store import list_detectors

    args = ["--home", str(settings.home), "--database-url", settings.database_url]
    assert main([*args, "preset", "univfd", "--head-file", str(HEAD), "--model", "pa-tiny-vit-768",
                 "--weights", "random:0", "--promote"]) == 0
    assert "promoted to default" in capsys.readouterr().out
    (stored,) = list_detectors(settings)
    assert stored["is_default"] and stored["backbone_id"] == "pa-tiny-vit-768/random-0/encode_image/center_crop"
    assert (settings.home / "presets").is_dir()


def test_a_tampered_head_is_refused(tmp_path):
    bad = tmp_path / "fc_weights.pth"
    data = bytearray(HEAD.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(PresetError, match="not the published univfd head"):
        fetch_head(UNIVFD, tmp_path / "cache", source=bad)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def local_server(tmp_path):
    """A local HTTP server on 127.0.0.1 standing in for github.com."""
    root = tmp_path / "www"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_download_checks_the_pinned_sha256(local_server, tmp_path):
    from dataclasses import replace

    root, base = local_server
    (root / "fc_weights.pth").write_bytes(HEAD.read_bytes())
    (root / "other.pth").write_bytes(b"not the head")
    good = fetch_head(replace(UNIVFD, url=f"{base}/fc_weights.pth"), tmp_path / "cache")
    assert hashlib.sha256(good.read_bytes()).hexdigest() == UNIVFD.sha256
    with pytest.raises(PresetError, match="not the published univfd head"):
        fetch_head(replace(UNIVFD, url=f"{base}/other.pth"), tmp_path / "cache2")
    with pytest.raises(PresetError, match="cannot download.*--head-file"):
        fetch_head(replace(UNIVFD, url=f"{base}/missing.pth"), tmp_path / "cache3")
