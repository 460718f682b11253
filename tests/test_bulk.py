"""COPY's text format: the per-row fast path writes exactly what ``copy_value`` writes field by field."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from pipeline.core.bulk import copy_line, copy_value


def test_copy_line_is_copy_value_per_field_for_every_kind_of_value():
    row = ("plain", "tab\there", "new\nline\r", "back\\slash", "", None, True, False, 0, -7, 1.5, float("nan"),
           np.float32(0.25), np.int64(3), datetime(2026, 3, 1, 12, 30, tzinfo=UTC), ["a", 'b"c', "d\\e"], ("x",),
           {"k": 1})
    assert copy_line(row) == "\t".join(copy_value(v) for v in row)
    assert copy_line(row).count("\t") == len(row) - 1  # the tab inside a field is escaped, not a separator
