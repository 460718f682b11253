"""Contract test for the edge-type registry: names are unique and valid, every family is known, every type
a builder writes is registered, and the docs' edge table lists exactly the registered types."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import sqlalchemy as sa

from pipeline.core.db import transaction
from pipeline.core.registry import NAME_RE
from pipeline.networks.edge_types import EDGE_TYPES, FAMILIES, EdgeType, register_edge_type, types_in
from pipeline.testing import planted

DOCS = Path(__file__).resolve().parent.parent / "docs" / "networks.md"


@pytest.mark.parametrize("name", EDGE_TYPES.names())
def test_every_edge_type_is_well_formed(name):
    edge_type = EDGE_TYPES.get(name)
    assert edge_type.name == name and NAME_RE.match(name)
    assert edge_type.family in FAMILIES
    assert edge_type.summary.strip()
    assert not edge_type.shared_image or edge_type.family == "image"


def test_a_second_type_of_the_same_name_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        register_edge_type(EdgeType("co_repost", "coactivity", "again"))
    with pytest.raises(ValueError, match="family"):
        register_edge_type(EdgeType("co_new_kind", "posts", "unknown family"))
    assert "co_new_kind" not in EDGE_TYPES


def test_families_partition_the_registry():
    assert sorted(n for f in FAMILIES for n in types_in(f)) == sorted(EDGE_TYPES.names())


def test_the_docs_edge_table_lists_the_registered_types():
    text = DOCS.read_text(encoding="utf-8")
    section = text[text.index("\n## Edges"):]
    section = section[:section.find("\n## ", 5)]
    first_cells = [row.split("|")[1] for row in section.splitlines() if row.startswith("| `")]
    documented = {name for cell in first_cells for name in re.findall(r"`([a-z_]+)`", cell)}
    assert set(EDGE_TYPES.names()) <= documented, set(EDGE_TYPES.names()) - documented


def test_builders_write_only_registered_types(settings):
    planted.generate(settings, "contract", organic=300, seed=3)
    planted.run_network_stages(settings, "contract")
    with transaction(settings) as conn:
        written = set(conn.execute(sa.text("select distinct edge_type from edges where run_key = 'contract'")).scalars())
    assert written and written <= set(EDGE_TYPES.names()), written - set(EDGE_TYPES.names())
