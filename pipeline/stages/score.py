"""Stage `score`: one shard of the run's images scored by the detector pinned on the run at `begin`
(`pipeline.scoring.score`).

Only the pinned id (``runs.detector_id``, `RunContext.detector`) is used: a run begun with no detector
scores nothing, even if one is promoted or configured later, so a run never changes detector mid-way.
"""

from __future__ import annotations

from pipeline.scoring.score import ScoreResult, run_images, score_run
from pipeline.stages import RunContext

NOT_PINNED = ("no detector was pinned on the run at begin (none named and none promoted then): images were not "
              "scored; begin a new run to score with a detector promoted since")


def run(ctx: RunContext) -> ScoreResult:
    if ctx.detector is None:
        images = run_images(ctx.settings, ctx.run_key, ctx.shard_index, ctx.shard_count)
        return ScoreResult("", len(images), 0, 0, 0, ctx.shard_index, ctx.shard_count, skipped=NOT_PINNED)
    return score_run(ctx.settings, ctx.run_key, ctx.detector, ctx.shard_index, ctx.shard_count)
