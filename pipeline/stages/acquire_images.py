"""Stage `acquire_images`: the run's avatars are read or fetched safely, validated and stored by sha256
(`pipeline.images.acquire`)."""

from __future__ import annotations

from pipeline.images.acquire import AcquireResult, acquire_avatars
from pipeline.stages import RunContext


def run(ctx: RunContext) -> AcquireResult:
    return acquire_avatars(ctx.settings, ctx.run_key)
