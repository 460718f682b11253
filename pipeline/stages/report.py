"""Stage `report`: the static HTML evidence report of the run (`pipeline.reporting.html`)."""

from __future__ import annotations

from typing import Any

from pipeline.reporting.html import report_run
from pipeline.stages import RunContext


def run(ctx: RunContext) -> dict[str, Any]:
    return report_run(ctx.settings, ctx.run_key)
