"""The CPU side of the score stage: each image is decoded once, and the probe and the face detectors
all read that one decoded image.

``prepare_batch`` runs in the worker threads or processes (``Settings.score_decode``) that feed
inference. For each (sha256, storage_path, face kinds wanted) it:

1. decodes the stored file once (a ``DecodedImage``), at reduced scale in the DCT domain (Pillow's
   JPEG draft) only when every consumer allows it and the JPEG is at least twice what they need;
2. turns the batch into the backbone's input tensor (the probe's input view and preprocessing);
3. runs the face detectors that still lack a row for the image on the same pixels.

It also times each step (seconds of worker time), which the benchmark prints as the breakdown.
"""

from __future__ import annotations

import atexit
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pipeline.errors import UserError
from pipeline.images.acquire import decode_image

DECODE_POOLS = ("threads", "processes")  # what decode_pool builds; Settings.score_decode adds "auto"


@dataclass(frozen=True)
class DecodedImage:
    """One stored image decoded once for every detector of the stage."""

    sha256: str
    image: Image.Image  # upright RGB; DCT-reduced when ``scale`` > 1
    scale: int = 1  # 1 full decode, 2/4/8 Pillow draft
    data: bytes = b""  # the file's bytes, kept only for the GPU decoder


@dataclass
class Prepared:
    tensors: Any  # the backbone input of the batch (None when no probe runs)
    faces: list[list[tuple[str, Any]]]  # per face detector of the plan: (sha256, FaceSignal)
    seconds: dict[str, float] = field(default_factory=dict)  # worker time: read, decode, preprocess, faces
    raw: list[bytes] | None = None  # JPEG bytes for the GPU decoder (GPU plans only)


@dataclass(frozen=True)
class PreparePlan:
    """What the workers do with a batch; picklable, so process workers receive it once per batch."""

    image_dir: Path
    draft: tuple[int, int] | None = None  # (short side, long side) every consumer still needs; None: full
    to_tensor: Callable[[Sequence[Image.Image]], Any] | None = None  # the probe's input pipeline
    faces: tuple[Any, ...] = ()  # face detectors (FaceSignalSource)
    gpu_decode: bool = False  # the probe's pixels come from the GPU decoder: hand back the bytes


def combined_draft(needs: Sequence[tuple[int, int] | None]) -> tuple[int, int] | None:
    """The draft all consumers accept: the largest need of each side; None if any needs full pixels."""
    if not needs or any(n is None for n in needs):
        return None
    return (max(n[0] for n in needs), max(n[1] for n in needs))  # type: ignore[index]


def _read(plan: PreparePlan, storage_path: str) -> bytes:
    try:
        return (plan.image_dir / storage_path).read_bytes()
    except FileNotFoundError:
        raise UserError(f"stored image {plan.image_dir / storage_path} is missing; rerun the acquire_images stage "
                        "(it stores the files again) or restore $PROFILE_AUDIT_HOME/images") from None


def prepare_batch(plan: PreparePlan, batch: list[tuple[str, str, tuple[int, ...]]]) -> Prepared:
    """Decode each image once; build the probe's tensor and the wanted face signals from the same pixels."""
    seconds = {"read": 0.0, "decode": 0.0, "preprocess": 0.0, "faces": 0.0}
    decoded: list[DecodedImage | None] = []
    raw: list[bytes] = []
    for sha, path, kinds in batch:
        clock = time.perf_counter()
        data = _read(plan, path)
        seconds["read"] += time.perf_counter() - clock
        raw.append(data)
        needs_pixels = (plan.to_tensor is not None and not plan.gpu_decode) or bool(kinds)
        if not needs_pixels:
            decoded.append(None)
            continue
        clock = time.perf_counter()
        image = decode_image(data, plan.draft)[1]
        seconds["decode"] += time.perf_counter() - clock
        decoded.append(DecodedImage(sha, image))
    tensors = None
    if plan.to_tensor is not None and not plan.gpu_decode:
        clock = time.perf_counter()
        tensors = plan.to_tensor([d.image for d in decoded if d is not None])
        seconds["preprocess"] += time.perf_counter() - clock
    faces: list[list[tuple[str, Any]]] = [[] for _ in plan.faces]
    clock = time.perf_counter()
    for (sha, _, kinds), item in zip(batch, decoded):
        for k in kinds:
            assert item is not None
            faces[k].append((sha, plan.faces[k].analyze([item.image])[0]))
    seconds["faces"] += time.perf_counter() - clock
    return Prepared(tensors, faces, seconds, raw if plan.gpu_decode else None)


def concat_batches(batches: Sequence[Any]) -> Any:
    """The batches of one backbone as one, in order, of the type its ``embed_tensors`` takes: each kind's
    ``tensors()`` returns its own (open_clip a torch tensor, dlib-face a list of face chips or None,
    an onnxruntime backbone a numpy array), so ``torch.cat`` alone failed on the others (issue 21). A tuple is
    a fused detector's batch (one per part, ``avatar_stack``): merged part by part. None when no probe runs
    (face signals only)."""
    first = batches[0]
    if first is None:
        return None
    if isinstance(first, tuple):
        return tuple(concat_batches([batch[i] for batch in batches]) for i in range(len(first)))
    if isinstance(first, list):
        return [item for batch in batches for item in batch]
    if isinstance(first, np.ndarray):
        return np.concatenate(batches)
    import torch

    if isinstance(first, torch.Tensor):
        return torch.cat(list(batches))
    raise TypeError(f"cannot merge backbone batches of type {type(first).__name__}")


def merge_prepared(parts: Sequence[Prepared]) -> Prepared:
    """Units prepared by different workers, as one inference batch (in order)."""
    if len(parts) == 1:
        return parts[0]
    tensors = concat_batches([p.tensors for p in parts])
    seconds: dict[str, float] = {}
    for part in parts:
        for key, value in part.seconds.items():
            seconds[key] = seconds.get(key, 0.0) + value
    faces = [[item for part in parts for item in part.faces[k]] for k in range(len(parts[0].faces))]
    raw = None if parts[0].raw is None else [data for part in parts for data in (part.raw or [])]
    return Prepared(tensors, faces, seconds, raw)


_pools: dict[int, ProcessPoolExecutor] = {}


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)  # each worker process is one core's worth; the main process runs inference
    # import now what the first batch would: open_clip's transforms (unpickling them) and dlib
    import open_clip  # noqa: F401
    import torchvision.transforms  # noqa: F401

    import detectors.faces  # noqa: F401
    from detectors.landmarks import check_available

    try:
        check_available()
    except Exception:  # noqa: BLE001 - the Haar fallback, or no faces wanted: found at first use
        pass


def warm_pool(pool: Executor, workers: int) -> None:
    """Wait until every worker process has started (and run its initializer)."""
    list(pool.map(abs, range(4 * workers), chunksize=1))


def started_pools() -> set[int]:
    """Worker counts of the process pools this process has already started."""
    return set(_pools)


def decode_pool(kind: str, workers: int) -> Executor | None:
    """The process pool for ``score_decode = "processes"`` (spawned once per process and reused, since a
    worker's start imports torch); None for threads, which ``prefetch`` creates per call."""
    if kind not in DECODE_POOLS:
        raise UserError(f"score_decode must be one of {DECODE_POOLS}, not {kind!r}")
    if kind == "threads" or workers <= 0:
        return None
    if workers not in _pools:
        import multiprocessing

        # spawn, not fork: forking a process whose torch/OpenMP threads are running can deadlock
        _pools[workers] = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                              initializer=_worker_init)
    return _pools[workers]


@atexit.register
def _shutdown() -> None:
    for pool in _pools.values():
        pool.shutdown(cancel_futures=True)
    _pools.clear()
