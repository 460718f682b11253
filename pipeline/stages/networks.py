"""Stage `networks`: typed, evidenced edges between the run's accounts, then clusters
(`pipeline.networks.build`)."""

from __future__ import annotations

from pipeline.networks.build import NetworkResult, build_networks
from pipeline.stages import RunContext


def run(ctx: RunContext) -> NetworkResult:
    return build_networks(ctx.settings, ctx.run_key, ctx.policy)
