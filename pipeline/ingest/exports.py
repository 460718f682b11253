"""Several exports in one run (issue 23, item 4): an investigator receives one export per platform (an X
IO release, Mastodon API accounts, Bluesky profiles) and audits them together, so that cross-platform
edges can join an operation's accounts on each.

What a run of several exports is:
- The paths are resolved, checked and **sorted** (by resolved path) before anything is pinned, so the
  run key, the order records are read in (and so which of two copies of an account is kept) and every
  row are the same whatever order the paths were given in.
- ``--format auto`` (the default) detects each path's format on its own; a named ``--format`` applies to
  every path, and a path that another reader recognises and this one does not is an error (one line):
  a format cannot be forced onto an export of another.
- A path given twice (also under another spelling: ``./a`` and ``a``, a symlink) is read once, and the
  run's notes say so. A path inside another given path (a file of a given folder) is an error: its
  records would be read twice.
- Each export keeps its own files in the ingest ledger: with several exports, every file name (ledger,
  snapshots' ``source_file``, quarantine rows) is prefixed by the export's label (its base name, made
  unique), so the ledger balances per file of each export. A non-URL avatar reference is tagged with
  the label (``export:<label>:<ref>``) so acquisition reads it from the right export's folder.
- An account in two exports (the same platform and id) is kept once, from the first export in sorted
  order; the other copy is quarantined naming the first, as for a duplicate inside one export, and the
  run's notes count them.

Accounts keep their platform: account keys are ``<platform>:<id>`` (`readers.base.AccountRecord`), so
``twitter:123`` and ``mastodon:maria@mastodon.social`` never collide.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import UserError

TAG = re.compile(r"^export:([^:]+):(.*)$", re.S)  # an avatar reference of one export among several


@dataclass(frozen=True)
class ExportSpec:
    """One export of a run: its resolved path, the reader's name and (with several exports) its label."""

    path: Path
    format: str
    label: str = ""

    def as_param(self) -> dict[str, str]:
        return {"path": str(self.path), "format": self.format, "label": self.label}

    @classmethod
    def from_param(cls, value: dict[str, Any]) -> ExportSpec:
        return cls(Path(value["path"]), value["format"], value.get("label") or "")


def _label_of(path: Path) -> str:
    """A file-name-safe label: the base name, without characters the tag or a file label would mix up."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", path.name) or "export"


def resolve_exports(paths: list[Path], fmt: str = "auto") -> tuple[list[ExportSpec], list[str]]:
    """The run's exports, sorted and labelled, and notes on what was merged (a path given twice).

    One line (UserError) for: a missing path, an undetectable one, a named format that another reader
    recognises on one of the paths, a path inside another given path."""
    from pipeline.ingest.readers import READERS, resolve_reader

    if not paths:
        raise UserError("no export path given")
    notes: list[str] = []
    unique: dict[Path, str] = {}
    for given in paths:
        resolved = Path(given).resolve()
        if resolved in unique:
            notes.append(f"export {given} was given more than once (as {unique[resolved]}); it was read once")
            continue
        unique[resolved] = str(given)
    ordered = sorted(unique)
    for i, a in enumerate(ordered):
        for b in ordered[i + 1:]:
            if b.is_relative_to(a):
                raise UserError(f"export {unique[b]} is inside export {unique[a]}, which is also given: its records"
                                f" would be read twice; pass {unique[a]} alone, or the exports beside it")
    specs: list[ExportSpec] = []
    for path in ordered:
        reader = resolve_reader(path, fmt)
        if fmt != "auto" and len(ordered) > 1 and not reader.detect(path):
            other = next((r.name for r in READERS.values() if r.name != fmt and r.detect(path)), None)
            if other is not None:
                raise UserError(f"--format {fmt} applies to every export path, but {unique[path]} is a {other} export;"
                                " a format cannot be forced onto another's export: leave out --format to detect"
                                " each path's own format")
        specs.append(ExportSpec(path, reader.name))
    if len(specs) == 1:
        return specs, notes
    labels: dict[str, int] = {}
    labelled = []
    for spec in specs:
        base = _label_of(spec.path)
        labels[base] = labels.get(base, 0) + 1
        label = base if labels[base] == 1 else f"{base}~{labels[base]}"
        labelled.append(ExportSpec(spec.path, spec.format, label))
    return labelled, notes


def combined_format(specs: list[ExportSpec]) -> str:
    """The run's ``export_format``: the one reader's name, or the sorted names joined by '+'."""
    return "+".join(sorted({s.format for s in specs}))


def combined_path(specs: list[ExportSpec]) -> str:
    """The run's ``export_path``: the one path, or the sorted paths joined by ' + ' (params holds the list)."""
    return " + ".join(str(s.path) for s in specs)


def pinned_exports(export_path: str | None, export_format: str | None, params: dict[str, Any] | None) -> list[ExportSpec]:
    """The exports a run pinned at begin: ``params.exports`` (several), else its one path and format."""
    listed = (params or {}).get("exports")
    if listed:
        return [ExportSpec.from_param(v) for v in listed]
    if export_path is None:
        raise UserError("the run has no export pinned; start it with `profile-audit audit` or its DAG")
    return [ExportSpec(Path(export_path), export_format or "auto")]


def tag_ref(label: str, ref: str | None) -> str | None:
    """An avatar reference of one export among several: URLs as they are, files tagged with the export."""
    if not ref or not label or "://" in ref:
        return ref
    return f"export:{label}:{ref}"


def split_ref(ref: str) -> tuple[str, str]:
    """(label, reference inside that export) of a tagged reference; ('', ref) for an untagged one."""
    m = TAG.match(ref)
    return (m.group(1), m.group(2)) if m else ("", ref)
