"""Image rings of distinct people (issue 23, item 5): a shared photo must mean the same picture, not the same
framing. Distinct aligned portraits (a studio series, generated portraits, FFHQ and UTKFace crops) make
no confirmed near-duplicate and no image_ring flag; crops, resizes and re-encodes of one photo still do.
Real faces from ../shared/data/faces; skipped where absent. The per-source figures: bench/image_rings.py."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pipeline.config import ImageParams
from pipeline.images.matching import MATCH_SIDE, compare_pictures
from pipeline.networks import edges as E
from pipeline.testing import planted
from pipeline.testing.photos import folder_photos, near_duplicate

FACES = planted.default_faces_dir()
LONDON = FACES / "real" / "london_neutral_1350"
# the sources of issue 23's measurement, and StyleGAN2 faces (its closest distinct pairs, bench/image_rings.py)
DISTINCT = [LONDON, FACES / "fake" / "sd21_sdfd", FACES / "real" / "ffhq_thumbs128", FACES / "fake" / "tpdne_stylegan2_128"]
# UTKFace holds two pairs of copies of one photo under two file names (bench/image_rings.py lists them): a
# confirmed pair there is right, so UTKFace is held to the flag, not to the edge
UTKFACE = FACES / "real" / "utkface_200"
needs = pytest.mark.skipif(not all(p.is_dir() for p in (*DISTINCT, UTKFACE)),
                           reason=f"face sets not found under {FACES} (set PROFILE_AUDIT_SHARED_DATA)")


def _rgb(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


@needs
def test_one_studio_series_two_people_is_not_one_picture_at_either_size():
    """The London set's two men of the report (same shirt, pose, backdrop) do not match; a small (96-200 px,
    below MATCH_SIDE: the detail compared at the copy's scale) and a large (260-520 px) copy of one does."""
    params, rng = ImageParams(), np.random.default_rng(0)
    a_bytes = (LONDON / "inst_neutral_front_022_03.jpg").read_bytes()
    a, b = _rgb(a_bytes), _rgb((LONDON / "inst_neutral_front_108_03.jpg").read_bytes())
    distinct = compare_pictures(a, b)
    assert not E.same_picture(distinct, params) and E.picture_margin(distinct, params) < 0.9
    swapped = compare_pictures(b, a)  # both ways round: the order of the two images changes nothing
    assert (swapped.inliers, swapped.detail_correlation) == (distinct.inliers, distinct.detail_correlation)
    for sides in ((96, 201), (260, 521)):
        copy = _rgb(near_duplicate(a_bytes, rng, sides).data)
        assert (max(copy.size) < MATCH_SIDE) == (sides[0] < MATCH_SIDE)
        match = compare_pictures(a, copy)
        assert E.same_picture(match, params), (sides, match)


@pytest.mark.slow
@needs
def test_distinct_faces_make_no_image_ring_and_photo_rings_still_do(settings):
    """A run of ~3,500 avatars that share nothing (whole face sets, not de-duplicated) plus two planted
    photo rings, through the real aggregate, networks and flag stages."""
    import sqlalchemy as sa

    from pipeline.core.db import transaction
    from pipeline.flags.rules import list_flags

    by_folder = {folder: folder_photos([folder]) for folder in (*DISTINCT, UTKFACE)}
    photos = [p for folder in by_folder.values() for p in folder]
    source = {p.sha256: folder for folder, ps in by_folder.items() for p in ps}
    none = {kind: 0 for kind in planted.DEFAULT_OPERATIONS}
    pop = planted.generate(settings, "distinct", organic=len(photos), seed=23, operations={**none, "photo_ring": 2},
                           organic_photos=photos)
    planted.run_network_stages(settings, "distinct")
    with transaction(settings) as conn:
        near = conn.execute(sa.text("select count(*) from avatar_near_duplicates where run_key = 'distinct'")).scalar()
        rows = conn.execute(sa.text(
            "select e.a_key, e.b_key, e.evidence, sa.avatar_sha256 as a_sha, sb.avatar_sha256 as b_sha from edges e"
            " join account_signals sa on sa.run_key = e.run_key and sa.account_key = e.a_key"
            " join account_signals sb on sb.run_key = e.run_key and sb.account_key = e.b_key"
            " where e.run_key = 'distinct' and e.edge_type = 'confirmed_near_duplicate'")).all()
    organic = [r for r in rows if "organic" in (pop.truth[r.a_key], pop.truth[r.b_key])]
    assert near > 0  # the distinct faces do have pHash near-duplicates: the pixel match had work to do
    assert all(source.get(r.a_sha) == source.get(r.b_sha) == UTKFACE for r in organic), organic
    ring_flags = [f for f in list_flags(settings, run_key="distinct") if "image_ring" in f["rules"]]
    members = {f"{m['platform']}:{m['account_id']}" for f in ring_flags for m in f["members"]}
    assert all(pop.truth[k] == "photo_ring" for k in members)
    metrics = planted.evaluate(settings, pop)
    assert metrics["photo_ring"]["recall"] >= 0.9 and metrics["photo_ring"]["precision"] >= 0.9, metrics["photo_ring"]
    image = ImageParams()
    rings = [r.evidence for r in rows if pop.truth[r.a_key] == "photo_ring"]
    assert rings and all(e["confirmed_by"] == ["local_features"] and e["inliers"] >= image.near_dup_confirm_min_inliers
                         and e["inlier_share"] >= image.near_dup_confirm_inlier_share
                         and e["detail_correlation"] >= image.near_dup_confirm_detail_corr for e in rings)

