"""The files an export path means, whether it is one file, a folder or a zip of either.

Every reader lists and opens its files through `ExportFiles`, so each format accepts its export
zipped as well as unpacked with no code of its own: zip members are streamed through
`pipeline.ingest.archives.ExportSource` (unsafe names refused and reported, nothing extracted).
Names are relative POSIX paths; `ref` turns one into the avatar reference the acquire stage reads
(a path relative to `export_root`, or ``zip:<archive>!<member>``).
"""

from __future__ import annotations

import posixpath
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Iterator

from pipeline.ingest import ledger
from pipeline.ingest.archives import ExportSource
from pipeline.ingest.readers.base import Rejection, zip_ref
from pipeline.ingest.readers.textio import open_text


def is_zip(path: Path) -> bool:
    return path.is_file() and zipfile.is_zipfile(path)


class ExportFiles:
    """A read-only, listable view of an export path; use as a context manager."""

    def __init__(self, path: Path):
        self.path = path
        self.only: str | None = None
        if path.is_file() and not is_zip(path):  # one plain file: its folder, restricted to it
            self.source = ExportSource(path.parent)
            self.only = path.name
        else:
            self.source = ExportSource(path)
        self._names: list[str] | None = None

    def __enter__(self) -> "ExportFiles":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.source.close()

    @property
    def is_zip(self) -> bool:
        return self.source.is_zip

    @property
    def export_root(self) -> Path:
        """The folder avatar references resolve against (the zip's or the file's folder)."""
        return self.path if self.path.is_dir() else self.path.parent

    def names(self) -> list[str]:
        """Every readable file, sorted; for one plain file, just it."""
        if self._names is None:
            self._names = [self.only] if self.only is not None else list(self.source.names())
        return self._names

    def with_suffix(self, *suffixes: str) -> list[str]:
        return [n for n in self.names() if n.lower().endswith(suffixes)]

    def named(self, basename: str) -> list[str]:
        """Files with this base name, shallowest first (``actor.json``, ``data/account.js``)."""
        found = [n for n in self.names() if n == basename or n.endswith("/" + basename)]
        return sorted(found, key=lambda n: (n.count("/"), n))

    def exists(self, name: str) -> bool:
        return self.source.exists(name)

    def open(self, name: str) -> IO[bytes]:
        return self.source.open_binary(name)

    def read_bytes(self, name: str, max_bytes: int) -> bytes:
        return self.source.read_bytes(name, max_bytes)

    def head(self, name: str, size: int = 8192) -> str:
        try:
            with self.open(name) as raw:
                return open_text(raw).read(size)
        except (OSError, UnicodeError, ValueError):
            return ""

    def label(self, name: str) -> str:
        """How quarantine rows and snapshots name the file: the member inside the zip, prefixed by it."""
        return f"{self.source.label}!{name}" if self.is_zip else name

    def ref(self, name: str, relative_to: str = "") -> str:
        """The avatar reference for a file of the export (``relative_to``: the folder a manifest names it from)."""
        joined = posixpath.normpath(posixpath.join(posixpath.dirname(relative_to), name)) if relative_to else name
        return zip_ref(self.source.label, joined) if self.is_zip else joined

    def unsafe(self) -> Iterator[Rejection]:
        """Members refused by their name (zip-slip, absolute, symlink), as quarantine rows."""
        self.names()
        for raw_name, reason in self.source.unsafe:
            ledger.saw(self.source.label)  # the member is a unit of the archive, refused by its name
            yield Rejection.of(self.source.label, f"member {raw_name[:200]}", reason, raw_name)

    def modified(self) -> datetime:
        """The export's file time: the zip's or file's mtime, or the newest file of a folder."""
        if self.path.is_file():
            return datetime.fromtimestamp(self.path.stat().st_mtime, tz=timezone.utc)
        times = [(self.path / n).stat().st_mtime for n in self.names()]
        return datetime.fromtimestamp(max(times) if times else self.path.stat().st_mtime, tz=timezone.utc)
