"""Safe access to an export that is a folder or a zip: names are checked, nothing is extracted.

An export can hold members named ``../../x`` or ``/etc/passwd``, symlinks that point out of the
folder, or zip members that claim one size and inflate to another. Every read goes through this
module: names are normalised and refused when they leave the export, zip members are streamed into
memory with a byte cap (never written to disk), and symlinks inside zips are refused.
"""

from __future__ import annotations

import io
import stat
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Self

from pipeline.core.storage import resolve_inside

DEFAULT_MAX_MEMBER_BYTES = 10 * 1024 * 1024


@dataclass(frozen=True)
class InflateLimits:
    """Caps on what a zip may inflate to while it is streamed (a 1 MB archive can hold 1 GiB of padding).

    ``member_bytes``: one streamed member; ``export_bytes``: all members of one archive together;
    ``max_ratio``: inflated / compressed bytes of a member past its first ``ratio_grace`` bytes
    (text exports compress about 10:1; zip bombs 1000:1)."""

    member_bytes: int = 2 * 1024**3
    export_bytes: int = 8 * 1024**3
    max_ratio: float = 200.0
    ratio_grace: int = 16 * 1024 * 1024


DEFAULT_LIMITS = InflateLimits()


class UnsafeMember(ValueError):
    """A name or member that would leave the export, or exceeds a limit; the message says which."""


def safe_member_name(name: str) -> str:
    """The normalised relative POSIX name, or UnsafeMember for absolute, drive or parent-escaping names."""
    text = name.replace("\\", "/")
    if not text or "\x00" in text:
        raise UnsafeMember(f"member name {name!r} is empty or contains NUL; refused")
    if text.startswith("/") or (len(text) > 1 and text[1] == ":"):
        raise UnsafeMember(f"member name {name!r} is an absolute path; refused")
    parts: list[str] = []
    for part in PurePosixPath(text).parts:
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise UnsafeMember(f"member name {name!r} leaves the export (zip-slip); refused")
            parts.pop()
            continue
        parts.append(part)
    if not parts:
        raise UnsafeMember(f"member name {name!r} names no file; refused")
    return "/".join(parts)


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def read_zip_member(archive: zipfile.ZipFile, name: str, max_bytes: int = DEFAULT_MAX_MEMBER_BYTES) -> bytes:
    """Stream one member into memory, refusing symlinks and anything over max_bytes (declared or actual)."""
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise UnsafeMember(f"zip member {name!r} not found") from None
    if _is_symlink(info):
        raise UnsafeMember(f"zip member {name!r} is a symlink; refused")
    if info.is_dir():
        raise UnsafeMember(f"zip member {name!r} is a folder")
    if info.file_size > max_bytes:
        raise UnsafeMember(f"zip member {name!r} declares {info.file_size} bytes, over the {max_bytes}-byte limit")
    buf = io.BytesIO()
    with archive.open(info) as fh:
        while chunk := fh.read(1 << 16):
            if buf.tell() + len(chunk) > max_bytes:  # a lying header: stop inflating at the cap
                raise UnsafeMember(f"zip member {name!r} inflates past the {max_bytes}-byte limit; refused")
            buf.write(chunk)
    return buf.getvalue()


class CappedMember(io.RawIOBase):
    """A zip member's inflating stream that raises UnsafeMember as soon as it passes a cap, so a bomb
    costs at most the cap's worth of CPU, and never memory (the caller reads in chunks)."""

    def __init__(self, raw: IO[bytes], name: str, compressed: int, limits: InflateLimits,
                 budget: list[int]):
        self._raw, self.name, self._compressed, self._limits, self._budget = raw, name, compressed, limits, budget
        self.inflated = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        data = self._raw.read(len(buffer))
        n = len(data)
        self.inflated += n
        self._budget[0] += n
        limits = self._limits
        if self.inflated > limits.member_bytes:
            raise UnsafeMember(f"zip member {self.name!r} inflates past the {limits.member_bytes}-byte limit; refused")
        if self._budget[0] > limits.export_bytes:
            raise UnsafeMember(f"the archive inflates past the {limits.export_bytes}-byte limit per export; "
                               f"refused at member {self.name!r}")
        if self.inflated > limits.ratio_grace and self.inflated > limits.max_ratio * max(1, self._compressed):
            raise UnsafeMember(f"zip member {self.name!r} inflates more than {limits.max_ratio:g}:1 "
                               "(a zip bomb?); refused")
        buffer[:n] = data
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


class ExportSource:
    """A read-only view of an export folder or zip with one API: list, exists, open_text, read_bytes.

    Names are relative POSIX paths. For a folder, a name (or symlink) that resolves outside the
    folder is refused; for a zip, unsafe member names are skipped by ``names()`` and recorded in
    ``unsafe`` so the reader can quarantine them.
    """

    def __init__(self, path: Path, limits: InflateLimits = DEFAULT_LIMITS):
        self.path = path
        self.limits = limits
        self._inflated = [0]  # bytes inflated from this archive so far, across members (shared by streams)
        self.is_zip = path.is_file() and zipfile.is_zipfile(path)
        self._zip: zipfile.ZipFile | None = zipfile.ZipFile(path) if self.is_zip else None
        self.unsafe: list[tuple[str, str]] = []  # (raw name, reason)
        self._members: dict[str, str] = {}  # safe name -> raw name
        if self._zip is not None:
            for info in self._zip.infolist():
                if info.is_dir():
                    continue
                try:
                    safe = safe_member_name(info.filename)
                    if _is_symlink(info):
                        raise UnsafeMember(f"zip member {info.filename!r} is a symlink; refused")
                except UnsafeMember as exc:
                    self.unsafe.append((info.filename, str(exc)))
                    continue
                self._members.setdefault(safe, info.filename)

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def label(self) -> str:
        return self.path.name

    def names(self) -> Iterator[str]:
        """Every readable file name (safe, relative), sorted."""
        if self._zip is not None:
            yield from sorted(self._members)
            return
        for path in sorted(self.path.rglob("*")):
            if path.is_symlink() and resolve_inside(self.path, path.relative_to(self.path)) is None:
                self.unsafe.append((str(path.relative_to(self.path)), "symlink points outside the export; refused"))
                continue
            if path.is_file():
                yield path.relative_to(self.path).as_posix()

    def _local(self, name: str) -> Path:
        candidate = resolve_inside(self.path, safe_member_name(name))
        if candidate is None:
            raise UnsafeMember(f"{name!r} resolves outside the export folder (symlink?); refused")
        return candidate

    def exists(self, name: str) -> bool:
        try:
            if self._zip is not None:
                return safe_member_name(name) in self._members
            return self._local(name).is_file()
        except UnsafeMember:
            return False

    def size(self, name: str) -> int:
        if self._zip is not None:
            return self._zip.getinfo(self._members[safe_member_name(name)]).file_size
        return self._local(name).stat().st_size

    def open_binary(self, name: str) -> IO[bytes]:
        """A streaming handle (zip members are inflated as read, never extracted)."""
        if self._zip is not None:
            safe = safe_member_name(name)
            if safe not in self._members:
                raise UnsafeMember(f"{name!r} is not a readable member of {self.label}")
            info = self._zip.getinfo(self._members[safe])
            return io.BufferedReader(CappedMember(self._zip.open(info), safe, info.compress_size, self.limits,
                                                  self._inflated), 1 << 20)
        return self._local(name).open("rb")

    def read_bytes(self, name: str, max_bytes: int = DEFAULT_MAX_MEMBER_BYTES) -> bytes:
        if self._zip is not None:
            safe = safe_member_name(name)
            if safe not in self._members:
                raise UnsafeMember(f"{name!r} not found in {self.label}")
            return read_zip_member(self._zip, self._members[safe], max_bytes)
        path = self._local(name)
        if not path.is_file():
            raise UnsafeMember(f"{name!r} not found in the export")
        if path.stat().st_size > max_bytes:
            raise UnsafeMember(f"{name!r} is {path.stat().st_size} bytes, over the {max_bytes}-byte limit")
        return path.read_bytes()
