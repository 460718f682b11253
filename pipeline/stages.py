"""The stage table: the audit's stages in order, each a name, the function that runs it and what it does.

This is the one list of stages. The CLI (`pipeline.audit`), the Airflow DAGs, `pipeline.testing.planted`
and the benches all read it. It is light: DAG files import it at parse time, and a stage's module
(torch, open_clip, numpy) is imported only when that stage runs (`Stage.load`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.config import NetworkParams, Settings


@dataclass(frozen=True)
class RunContext:
    """What a stage gets: where the data is, which run, and the run's parameters."""

    settings: Settings
    run_key: str
    network: NetworkParams
    detector: str | None = None  # id or .json path; None = the promoted default
    shard_index: int = 0  # the score stage handles the images whose hash falls in this shard
    shard_count: int = 1


@dataclass(frozen=True)
class Stage:
    name: str
    target: str  # "module:function"; the function takes a RunContext and returns its counts
    summary: str

    @property
    def module(self) -> str:
        return self.target.partition(":")[0]

    def load(self) -> Callable[[RunContext], Any]:
        module, _, function = self.target.partition(":")
        return getattr(importlib.import_module(module), function)


STAGES: tuple[Stage, ...] = (
    Stage("ingest", "pipeline.ingest.load:run_stage",
          "an export becomes accounts, snapshots, posts and avatar references; bad records are quarantined"),
    Stage("acquire_images", "pipeline.images.acquire:run_stage",
          "avatars are read or fetched safely, validated and stored content-addressed by sha256"),
    Stage("score", "pipeline.scoring.score:run_stage",
          "each new image hash is scored by the detectors (sharded by hash)"),
    Stage("aggregate", "pipeline.signals.aggregate:run_stage",
          "near-duplicate avatar pairs, then per-account signals and risk in SQL"),
    Stage("networks", "pipeline.networks.build:run_stage",
          "typed, evidenced edges between accounts, then clusters"),
    Stage("flag", "pipeline.flags.rules:run_stage",
          "clusters are scored, flag rules applied, evidence and investigator status kept"),
    Stage("report", "pipeline.reporting.html:run_stage",
          "the static HTML evidence report of the run"),
    Stage("summarize", "pipeline.reporting.summary:run_stage",
          "the run summary, stored on the run row"),
)
STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)
_BY_NAME = {s.name: s for s in STAGES}


def stage(name: str) -> Stage:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown stage {name!r}; stages: {', '.join(STAGE_NAMES)}") from None


def run_stages(ctx: RunContext, names: tuple[str, ...] = STAGE_NAMES,
               on_stage: Callable[[str, Any, float], None] | None = None) -> dict[str, Any]:
    """Run the named stages in table order, in this process, without run bookkeeping (benches, planted
    populations); ``on_stage(name, result, seconds)`` after each. Returns each stage's result."""
    import time

    results: dict[str, Any] = {}
    for s in STAGES:
        if s.name not in names:
            continue
        started = time.perf_counter()
        results[s.name] = s.load()(ctx)
        if on_stage is not None:
            on_stage(s.name, results[s.name], time.perf_counter() - started)
    return results
