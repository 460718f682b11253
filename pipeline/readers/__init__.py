"""Export readers: each turns one platform's export into AccountRecords and Rejections.

A reader is a small plug-in: a ``name``, a ``detect(path)`` test for ``--format auto``, and
``read(path)`` yielding records. Register new readers in ``READERS``.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import UserError
from pipeline.readers.base import AccountRecord, ExportReader, Rejection
from pipeline.readers.generic import GenericManifestReader

READERS: dict[str, ExportReader] = {reader.name: reader for reader in (GenericManifestReader(),)}


def resolve_reader(path: Path, fmt: str = "auto") -> ExportReader:
    """Pick the reader by name, or by detection when fmt is 'auto'; clear error otherwise."""
    if not path.exists():
        raise UserError(f"export path {path} does not exist")
    if fmt != "auto":
        if fmt not in READERS:
            raise UserError(f"unknown export format {fmt!r}; known formats: auto, {', '.join(sorted(READERS))}")
        return READERS[fmt]
    matches = [reader for reader in READERS.values() if reader.detect(path)]
    if not matches:
        raise UserError(
            f"could not detect the format of {path}: expected one of {', '.join(sorted(READERS))} "
            "(a generic export is a folder with manifest.csv or manifest.jsonl); pass --format to choose"
        )
    return matches[0]


__all__ = ["AccountRecord", "ExportReader", "Rejection", "READERS", "resolve_reader"]
