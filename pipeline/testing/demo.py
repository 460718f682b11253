"""The demo: a deterministic generic-format export with planted networks, a demo probe, an audit.

What the demo's "generated" images are: procedurally drawn cartoon faces, plus a synthetic,
documented artifact added by `add_generator_trace`: a fixed +/-10-level pattern of 32x32 pixels
(``_TRACE_TILE``) tiled from the top-left corner, aligned to the ViT patch grid. A random-initialised
backbone can see that trace, and nothing else. The demo therefore exercises the pipeline end to end;
it detects nothing about real generators. Real detection needs a pretrained backbone
(docs/detectors.md, "Backbones").
"""

from __future__ import annotations

import csv
import io
import logging
import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from pipeline.config import Settings

log = logging.getLogger(__name__)

IMAGE_SIZE = 224
TRACE_PERIOD = 32
TRACE_AMPLITUDE = 10.0
_TRACE_TILE = np.random.default_rng(12345).choice([-1.0, 1.0], size=(TRACE_PERIOD, TRACE_PERIOD, 1))

FIRST = ["emma", "liam", "olivia", "noah", "ava", "mateo", "sofia", "lucas", "mia", "elena", "omar", "yuki",
         "amara", "ivan", "chloe", "diego", "lena", "ravi", "zoe", "felix", "nora", "hugo", "lara", "kofi"]
LAST = ["smith", "garcia", "chen", "kowalski", "nguyen", "silva", "okafor", "muller", "rossi", "haddad",
        "tanaka", "brown", "novak", "dubois", "perez", "ali", "jensen", "costa", "ivanova", "park"]
BIOS = ["coffee, code and cats", "runner. reader. dad.", "photographer based in Lisbon", "", "",
        "views my own", "teacher | gardener | tea addict", "building things on the internet",
        "football and good food", "PhD student in marine biology", ""]


def draw_face(rng: np.random.Generator, size: int = IMAGE_SIZE) -> np.ndarray:
    """A cartoon face with random colours and geometry, as a float array (H, W, 3)."""
    img = Image.new("RGB", (size, size), tuple(int(x) for x in rng.integers(0, 256, 3)))
    d = ImageDraw.Draw(img)
    scale = size / 224
    cx, cy = size / 2 + rng.normal(0, 8 * scale), size / 2 + rng.normal(0, 8 * scale)
    rx, ry = rng.uniform(55, 75) * scale, rng.uniform(70, 90) * scale
    d.ellipse([cx - rx - 8, cy - ry - 12, cx + rx + 8, cy + ry * 0.3], fill=tuple(int(x) for x in rng.integers(0, 120, 3)))
    d.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=tuple(int(x) for x in rng.integers(90, 240, 3)))
    for side in (-1, 1):
        ex, ey = cx + side * rx * 0.4, cy - ry * 0.15
        d.ellipse([ex - 9 * scale, ey - 6 * scale, ex + 9 * scale, ey + 6 * scale], fill=(255, 255, 255))
        d.ellipse([ex - 4 * scale, ey - 4 * scale, ex + 4 * scale, ey + 4 * scale], fill=(30, 30, 30))
    d.arc([cx - 25 * scale, cy + 20 * scale, cx + 25 * scale, cy + 45 * scale], 20, 160, fill=(120, 30, 30),
          width=max(1, int(4 * scale)))
    arr = np.asarray(img.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2))), dtype=np.float32)
    return arr + rng.normal(0, 4, arr.shape)


def add_generator_trace(arr: np.ndarray, amplitude: float = TRACE_AMPLITUDE) -> np.ndarray:
    """The demo's synthetic 'generator' artifact: the fixed tile, added from the top-left corner."""
    h, w = arr.shape[:2]
    tile = np.tile(_TRACE_TILE, (h // TRACE_PERIOD + 1, w // TRACE_PERIOD + 1, 3))[:h, :w]
    return arr + amplitude * tile


def encode(arr: np.ndarray, fmt: str, quality: int = 92) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(buf, fmt, **({"quality": quality} if fmt == "JPEG" else {}))
    return buf.getvalue()


def demo_augmentation() -> Any:
    """The demo probe trains with the re-encode rule alone, without UnivFD's blur and JPEG draws:
    the demo's trace is a per-pixel pattern that blur erases, and the demo serves every avatar as
    a JPEG. With the draws (p=0.5 each), it labels 38 of the 40 planted faces instead of all 40."""
    from detectors.clip_probe import Augmentation

    return Augmentation(blur_p=0.0, jpeg_p=0.0)


def make_labelled_set(root: Path, per_class: int = 300, seed: int = 7) -> tuple[Path, Path]:
    """real/ and fake/ folders; both classes mix PNG and JPEG the same way, so format carries no label."""
    rng = np.random.default_rng(seed)
    real, fake = root / "real", root / "fake" / "demo-trace"
    for folder in (real, fake):
        folder.mkdir(parents=True, exist_ok=True)
    for i in range(per_class):
        for folder, traced in ((real, False), (fake, True)):
            arr = draw_face(rng)
            if traced:
                arr = add_generator_trace(arr)
            fmt = "PNG" if rng.random() < 0.5 else "JPEG"
            (folder / f"{i:04d}.{'png' if fmt == 'PNG' else 'jpg'}").write_bytes(encode(arr, fmt))
    return real, fake.parent


@dataclass(frozen=True)
class PlantedNetwork:
    name: str
    account_ids: list[str]


def _organic_handle(rng: np.random.Generator) -> str:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    style = rng.integers(0, 4)
    if style == 0:
        return f"{first}{last}"
    if style == 1:
        return f"{first}_{last}{rng.integers(1, 99)}"
    if style == 2:
        return f"{first[0]}{last}{rng.integers(1950, 2010)}"
    return f"{last}.{first}"


def make_demo_export(root: Path, organic: int = 300, seed: int = 2026) -> tuple[Path, list[PlantedNetwork]]:
    """A generic-manifest export: organic accounts, two planted networks, two bad rows for quarantine."""
    rng = np.random.default_rng(seed)
    if root.exists():
        shutil.rmtree(root)
    (root / "avatars").mkdir(parents=True)
    rows: list[dict[str, Any]] = []

    def avatar(name: str, arr: np.ndarray) -> str:
        """Served as platforms serve uploads: re-encoded as JPEG, here at quality 70-85, for every account."""
        rel = f"avatars/{name}.jpg"
        (root / rel).write_bytes(encode(arr, "JPEG", quality=int(rng.integers(70, 86))))
        return rel

    epoch = datetime(2012, 1, 1, tzinfo=timezone.utc)
    shared_couple: dict[int, str] = {}
    for i in range(organic):
        created = epoch + timedelta(seconds=int(rng.integers(0, 13 * 365 * 86400)))
        ref = ""
        if rng.random() > 0.1:
            ref = avatar(f"org{i:04d}", draw_face(rng))
        if i in (40, 41, 120, 121):  # two pairs of organic accounts sharing a photo (a couple, a duo)
            shared_couple.setdefault(i // 2, ref)
            ref = shared_couple[i // 2]
        rows.append({"platform": "demo", "account_id": f"u{i:05d}", "handle": _organic_handle(rng),
                     "display_name": "", "bio": str(rng.choice(BIOS)), "url": "",
                     "created_at": created.isoformat().replace("+00:00", "Z"),
                     "followers": int(rng.lognormal(5, 1.5)), "following": int(rng.lognormal(5, 1)),
                     "posts": int(rng.lognormal(6, 1.5)), "language": "en", "avatar": ref})

    # Network A: 24 accounts created on two days, templated handles, 4 generated faces reused 6x each
    ring_faces = [avatar(f"ring{k}", add_generator_trace(draw_face(rng))) for k in range(4)]
    ring_ids = []
    for j in range(24):
        created = datetime(2025, 11, 3 + (j % 2), 9, tzinfo=timezone.utc) + timedelta(minutes=int(rng.integers(0, 600)))
        first, last = FIRST[j % len(FIRST)], LAST[(j * 7) % len(LAST)]
        ring_ids.append(f"r{j:03d}")
        rows.append({"platform": "demo", "account_id": ring_ids[-1],
                     "handle": f"{first}_{last}{rng.integers(10_000_000, 99_999_999)}",
                     "display_name": f"{first.title()} {last.title()}", "bio": "", "url": "",
                     "created_at": created.isoformat(), "followers": int(rng.integers(0, 8)),
                     "following": int(rng.integers(150, 400)), "posts": int(rng.integers(0, 30)),
                     "language": "en", "avatar": ring_faces[j % 4]})

    # Network B: 16 accounts batch-created within a day, one bio, each its own generated face
    batch_ids = []
    for j in range(16):
        created = datetime(2025, 12, 10, 2, tzinfo=timezone.utc) + timedelta(minutes=70 * j)
        first, last = FIRST[(j * 5 + 3) % len(FIRST)], LAST[(j * 3 + 1) % len(LAST)]
        batch_ids.append(f"b{j:03d}")
        rows.append({"platform": "demo", "account_id": batch_ids[-1],
                     "handle": f"{first}{last}{rng.integers(1_000_000, 9_999_999)}",
                     "display_name": f"{first.title()} {last.title()}",
                     "bio": "Patriot. Proud citizen. Truth seeker. Family first.", "url": "",
                     "created_at": created.isoformat(), "followers": int(rng.integers(0, 20)),
                     "following": int(rng.integers(200, 600)), "posts": int(rng.integers(10, 90)),
                     "language": "en", "avatar": avatar(f"batch{j}", add_generator_trace(draw_face(rng)))})

    # Two bad rows, so the demo shows quarantine: a non-numeric count and an avatar path escaping the export
    rows.append({**rows[0], "account_id": "bad-count", "followers": "lots"})
    rows.append({**rows[1], "account_id": "bad-path", "avatar": "../../etc/passwd"})

    order = rng.permutation(len(rows))
    manifest = root / "manifest.csv"
    with manifest.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        for index in order:
            writer.writerow(rows[index])
    return root, [PlantedNetwork("reused-face ring", ring_ids), PlantedNetwork("batch-created", batch_ids)]


def run_demo(settings: Settings, workdir: Path | None = None,
             say: Callable[[str], None] = log.info, on_stage: Callable | None = None) -> dict[str, Any]:
    """Generate data, train and promote the demo probe, audit the demo export. Deterministic."""
    from pipeline.audit import audit_export
    from pipeline.scoring.train import train_probe

    workdir = workdir or settings.home / "demo"
    say(f"generating the labelled training set and the demo export in {workdir}")
    if (workdir / "training").exists():
        shutil.rmtree(workdir / "training")
    real, fake = make_labelled_set(workdir / "training")
    export, planted = make_demo_export(workdir / "export")
    say("training the demo probe (tiny random-initialised backbone)")
    trained = train_probe(settings, real, fake, promote=True, augmentation=demo_augmentation())
    say(f"auditing {export}")
    summary = audit_export(settings, export, run_key="demo", detector=trained.detector_id, on_stage=on_stage)
    return {"summary": summary, "detector": trained, "planted": planted, "export": export}
