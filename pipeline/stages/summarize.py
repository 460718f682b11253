"""Stage `summarize`: the run summary (`pipeline.reporting.summary`); the runner stores it on the run
row as it closes the run (`Stage.finishes_run`)."""

from __future__ import annotations

from typing import Any

from pipeline.reporting.summary import summarize_run
from pipeline.stages import RunContext


def run(ctx: RunContext) -> dict[str, Any]:
    return summarize_run(ctx.settings, ctx.run_key)
