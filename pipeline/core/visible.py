"""Export text shown to a person: control and bidi characters made visible, spreadsheet formulas defused.

A handle holding U+202E (right-to-left override) reads backwards in a report, so ``moc.evil`` can pose as
a trusted domain; ESC and BEL from a record reach the terminal through ``profile-audit quarantine``.
Every place that shows export text to a person (the HTML report, the CLI, the CSV evidence) passes it
through `visible`, which replaces those characters with a visible escape such as ``\\u202e`` or
``\\x1b``. The database keeps the original text: this is about display, not storage.
"""

from __future__ import annotations

import re
from typing import Any

# Bidi embedding, override and isolate controls, marks, and invisible format characters (zero-width
# space/joiners, word joiner, BOM); plus every C0/C1 control. Tab and newline are kept where allowed.
_BIDI_AND_INVISIBLE = "\u061c\u200b\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2060\u2066\u2067\u2068\u2069\ufeff"
_HIDDEN = re.compile(f"[\x00-\x1f\x7f-\x9f{_BIDI_AND_INVISIBLE}]")
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")  # OWASP "CSV Injection": cells must not start with these


def _mark(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(value: Any, keep: str = "") -> str:
    """``str(value)`` with control, bidi and invisible format characters escaped (``keep``: ones to leave,
    e.g. "\\n" in a multi-line bio). None becomes ""."""
    if value is None:
        return ""
    text = str(value)
    if keep:
        return _HIDDEN.sub(lambda m: m.group() if m.group() in keep else _mark(m), text)
    return _HIDDEN.sub(_mark, text)


def csv_cell(value: Any) -> Any:
    """A CSV cell that a spreadsheet shows as text: hidden characters escaped, and a leading = + - @ tab
    or CR defused with a single quote (OWASP's rule). Numbers stay numbers (a negative weight is data)."""
    if value is None:
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    text = str(value)
    if text.startswith(FORMULA_PREFIXES):
        text = "'" + text
    return visible(text, keep="\n")
