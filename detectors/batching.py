"""Overlap decoding and preprocessing with inference: workers fill a bounded queue of batches.

PIL decoding, resizing and the tensor conversion release the GIL, so threads keep the model fed;
dlib's face detector does not (two threads ran slower than one on two cores), so the score stage can
give ``prefetch`` a process pool instead (``Settings.score_decode``). The bound (``depth`` batches in
flight) caps memory however large the input is. ``BackgroundWriter`` overlaps database writes with
inference the same way, on one thread.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
import queue
import threading
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def batched(items: Sequence[T], size: int) -> Iterator[list[T]]:
    if size < 1:
        raise ValueError(f"batch size must be at least 1, got {size}")
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def prefetch(batches: Iterable[list[T]], prepare: Callable[[list[T]], R], workers: int = 2,
             depth: int | None = None, pool: Executor | None = None) -> Iterator[tuple[list[T], R]]:
    """Yield ``(batch, prepare(batch))`` in input order while later batches are prepared in threads
    (or in ``pool``, e.g. a process pool, which then must be able to pickle ``prepare``).

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
    if pool is not None:
        yield from _drain(source, prepare, pool, depth, pending)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="preprocess") as threads:
        yield from _drain(source, prepare, threads, depth, pending)


def _drain(source: Iterator[list[T]], prepare: Callable[[list[T]], R], pool: Executor, depth: int,
           pending: deque[tuple[list[T], Future[R]]]) -> Iterator[tuple[list[T], R]]:
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


class BackgroundWriter:
    """Runs submitted writes, in order, on one thread, so the next batch's inference overlaps this
    batch's database round trips. At most ``depth`` writes wait; the first error is raised by the next
    ``submit`` or by ``close`` (which waits for every write). ``threaded`` False writes inline."""

    def __init__(self, write: Callable[[Callable[..., Any]], None], depth: int = 2, threaded: bool = True):
        self._write = write  # runs one submitted job (e.g. in its own transaction)
        self._error: BaseException | None = None
        self._queue: queue.Queue[Callable[..., Any] | None] | None = None
        if threaded:
            self._queue = queue.Queue(maxsize=depth)
            self._thread = threading.Thread(target=self._run, name="score-writer", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        assert self._queue is not None
        while True:
            job = self._queue.get()
            if job is None:
                return
            if self._error is None:
                try:
                    self._write(job)
                except BaseException as exc:  # re-raised in the caller's thread
                    self._error = exc

    def _check(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def submit(self, job: Callable[..., Any]) -> None:
        self._check()
        if self._queue is None:
            self._write(job)
        else:
            self._queue.put(job)

    def close(self) -> None:
        if self._queue is not None:
            self._queue.put(None)
            self._thread.join()
            self._queue = None
        self._check()
