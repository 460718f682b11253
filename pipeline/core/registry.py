"""Plug-in registries: readers, detectors, backbones, edge types and flag rules are each registered
by a unique name in one `Registry`, and one contract test per kind iterates it.

Modelled on python-threatexchange's SignalType/ContentType lists: a name is validated when it is
registered, a second plug-in under the same name is an error (never a silent overwrite), and an
unknown name is a one-line error that lists the known ones.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from pipeline.errors import UserError

T = TypeVar("T")
NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")


class Registry(Generic[T]):
    """Name → plug-in, in registration order (order matters where detection tries them in turn)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T) -> T:
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise ValueError(f"{self.kind} name {name!r} must match {NAME_RE.pattern}")
        if name in self._items:
            raise ValueError(f"a {self.kind} named {name!r} is already registered ({self._items[name]!r})")
        self._items[name] = item
        return item

    def add(self, name: str) -> Callable[[T], T]:
        """Decorator form: ``@EDGE_TYPES.add("co_repost")``."""
        return lambda item: self.register(name, item)

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UserError(f"unknown {self.kind} {name!r}; known: {', '.join(self._items) or 'none'}") from None

    def names(self) -> tuple[str, ...]:
        return tuple(self._items)

    def items(self) -> list[tuple[str, T]]:
        return list(self._items.items())

    def values(self) -> list[T]:
        return list(self._items.values())

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, name: str) -> T:
        return self._items[name]
