"""Overlap decoding and preprocessing with inference: worker threads fill a bounded queue of batches.

PIL decoding, resizing and the tensor conversion release the GIL, so threads are enough to keep
the model fed; the bound (``depth`` batches in flight) caps memory however large the input is.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def batched(items: Sequence[T], size: int) -> Iterator[list[T]]:
    if size < 1:
        raise ValueError(f"batch size must be at least 1, got {size}")
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def prefetch(batches: Iterable[list[T]], prepare: Callable[[list[T]], R], workers: int = 2,
             depth: int | None = None) -> Iterator[tuple[list[T], R]]:
    """Yield ``(batch, prepare(batch))`` in input order while later batches are prepared in threads.

    At most ``depth`` (default 2 x workers) prepared batches wait at any time. ``workers`` 0 prepares
    in the calling thread (no overlap; for debugging).
    """
    if workers <= 0:
        for batch in batches:
            yield batch, prepare(batch)
        return
    depth = depth or 2 * workers
    pending: deque[tuple[list[T], Future[R]]] = deque()
    source = iter(batches)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="preprocess") as pool:
        try:
            for batch in source:
                pending.append((batch, pool.submit(prepare, batch)))
                if len(pending) >= depth:
                    done, future = pending.popleft()
                    yield done, future.result()
            while pending:
                done, future = pending.popleft()
                yield done, future.result()
        finally:
            for _, future in pending:  # an error or an early stop: do not prepare what nobody will read
                future.cancel()
