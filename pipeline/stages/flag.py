"""Stage `flag`: the run's clusters scored, the flag rules applied, evidence and investigator status kept
(`pipeline.flags.rules`)."""

from __future__ import annotations

from typing import Any

from pipeline.flags.rules import flag_run
from pipeline.stages import RunContext


def run(ctx: RunContext) -> dict[str, Any]:
    return {"flags": flag_run(ctx.settings, ctx.run_key, ctx.policy)}
