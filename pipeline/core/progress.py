"""Progress bars on a terminal, periodic log lines elsewhere (Airflow task logs)."""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")
log = logging.getLogger("profile_audit.progress")


def _interactive() -> bool:
    return sys.stderr.isatty() and not os.environ.get("PROFILE_AUDIT_NO_PROGRESS")


def progress(items: Iterable[T], desc: str, unit: str = "it", total: int | None = None) -> Iterator[T]:
    """Wrap an iterable: a tqdm bar on a terminal, else a log line every 10% (or 1000 items)."""
    if _interactive():
        from tqdm import tqdm

        yield from tqdm(items, desc=desc, unit=unit, total=total, leave=False)
        return
    step = max(1000, (total or 0) // 10)
    count = 0
    for count, item in enumerate(items, start=1):
        if count % step == 0:
            log.info("%s: %d%s %s", desc, count, f"/{total}" if total else "", unit)
        yield item
    log.info("%s: done, %d %s", desc, count, unit)


class Counter:
    """A manual progress counter for batch loops (images/s in the bar)."""

    def __init__(self, desc: str, total: int, unit: str = "img"):
        self.desc, self.total, self.unit, self.done = desc, total, unit, 0
        self._started = time.perf_counter()
        self._bar = None
        if _interactive():
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, leave=False)

    def update(self, n: int) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.total and (self.done * 10 // self.total) != ((self.done - n) * 10 // self.total):
            rate = self.done / max(time.perf_counter() - self._started, 1e-9)
            log.info("%s: %d/%d %s (%.1f %s/s)", self.desc, self.done, self.total, self.unit, rate, self.unit)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
