"""Stage `aggregate`: near-duplicate avatar pairs, then per-account signals and risk in SQL
(`pipeline.signals.aggregate`)."""

from __future__ import annotations

from typing import Any

from pipeline.signals.aggregate import aggregate_run
from pipeline.stages import RunContext


def run(ctx: RunContext) -> dict[str, Any]:
    return aggregate_run(ctx.settings, ctx.run_key, policy=ctx.policy)
