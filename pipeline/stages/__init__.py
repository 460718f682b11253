"""The stage table and its runner: the audit's stages in order, each with what it does and how it runs.

This is the one list of stages, and `run_one` / `run_all` the one way to run them. The CLI
(`pipeline.audit`), the Airflow DAGs, `pipeline.testing.planted` and the benches all call them.
The table is light: DAG files import it at parse time, and a stage's module (``pipeline/stages/<name>.py``,
which imports torch, open_clip, numpy ...) is imported only when that stage runs (`Stage.run`).

Each stage module holds the stage's entry, ``run(ctx)``, and the database glue that only serves it; the
algorithms stay in their packages (`pipeline.ingest`, `pipeline.images`, `pipeline.scoring`,
`pipeline.signals`, `pipeline.networks`, `pipeline.flags`, `pipeline.reporting`).
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, is_dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pipeline.config import NetworkParams, Policy, Settings

if TYPE_CHECKING:
    from pipeline.core.runs import OwnerAlive

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunContext:
    """What a stage gets: where the data is, which run, and the run's parameters."""

    settings: Settings
    run_key: str
    network: NetworkParams
    detector: str | None = None  # the detector id pinned on the run at `begin`; None = the run scores nothing
    shard_index: int = 0  # the score stage handles the images whose hash falls in this shard
    shard_count: int = 1
    # The whole policy pinned on the run (`runs.load_context` loads it once from the run row); a context
    # made by hand (planted populations, benches) gets these settings' policy with its ``network``.
    policy: Policy | None = None

    def __post_init__(self) -> None:
        if self.policy is None:
            object.__setattr__(self, "policy", self.settings.policy(self.network))
        elif self.policy.network != self.network:
            raise ValueError("RunContext: network and policy.network differ; pass the policy's network")


@dataclass(frozen=True)
class Outlet:
    """An Airflow Asset a stage's task updates (the task factory makes the Asset; Airflow is not imported here)."""

    name: str
    uri: str


def _score_queue() -> str:
    """The deployment's score queue, read where the DAGs are parsed."""
    from pipeline.airflow.params import score_queue

    return score_queue()


@dataclass(frozen=True)
class TaskOptions:
    """How a stage's Airflow task is scheduled; None = the DAG's defaults."""

    pool: str | None = None
    queue: Callable[[], str] | None = None  # called at DAG parse time
    timeout: timedelta | None = None
    outlets: tuple[Outlet, ...] = ()  # each gets an event with the run key, kind and flag count


@dataclass(frozen=True)
class Stage:
    name: str
    summary: str
    needs_predecessor: bool = False  # first wait until the run's predecessor has finished this same stage
    sharded: bool = False  # run once per hash shard of the run's images (`RunContext.shard_index`)
    finishes_run: bool = False  # its result closes the run as succeeded (the run summary)
    task_options: TaskOptions = field(default_factory=TaskOptions)

    @property
    def module(self) -> str:
        """Where the stage's entry lives: ``pipeline/stages/<name>.py``."""
        return f"{__name__}.{self.name}"

    def run(self, ctx: RunContext) -> Any:
        """The stage's entry, imported now (not when the table is): what it computes, without bookkeeping."""
        return importlib.import_module(self.module).run(ctx)


SCORE_POOL = "profile_audit_score"  # torch-heavy: `airflow pools set profile_audit_score 2 "score tasks"`
FLAGS_ASSET = Outlet("profile_audit_flags", "profile-audit://flags")

STAGES: tuple[Stage, ...] = (
    Stage("ingest", "an export becomes accounts, snapshots, posts and avatar references; bad records are quarantined"),
    Stage("acquire_images", "avatars are read or fetched safely, validated and stored content-addressed by sha256"),
    Stage("score", "each new image hash is scored by the detector pinned on the run (sharded by hash)",
          sharded=True,
          task_options=TaskOptions(pool=SCORE_POOL, queue=_score_queue, timeout=timedelta(hours=6))),
    # needs_predecessor: an account's avatar history comes from the predecessor's avatars (its aggregate
    # stage waited in turn, so the whole lineage is in place), cluster ids from its clusters,
    # investigator statuses from its flags
    Stage("aggregate", "near-duplicate avatar pairs, then per-account signals and risk in SQL",
          needs_predecessor=True),
    Stage("networks", "typed, evidenced edges between accounts, then clusters", needs_predecessor=True),
    Stage("flag", "clusters are scored, flag rules applied, evidence and investigator status kept",
          needs_predecessor=True),
    Stage("report", "the static HTML evidence report of the run"),
    Stage("summarize", "the run summary, stored on the run row", finishes_run=True,
          task_options=TaskOptions(outlets=(FLAGS_ASSET,))),
)
STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)
_BY_NAME = {s.name: s for s in STAGES}


def stage(name: str | Stage) -> Stage:
    if isinstance(name, Stage):
        return name
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown stage {name!r}; stages: {', '.join(STAGE_NAMES)}") from None


def _as_dict(result: Any) -> dict[str, Any]:
    return asdict(result) if is_dataclass(result) else dict(result)


def run_one(ctx_or_run_key: RunContext | str, name: str | Stage, *, settings: Settings | None = None,
            shard_index: int = 0, owner: str | None = None, record: bool = True,
            alive: OwnerAlive | None = None) -> dict[str, Any]:
    """Run one stage and return its result as a dict.

    ``ctx_or_run_key``: a RunContext, or the key of a run begun with `pipeline.audit.begin` (its context is
    loaded from the pinned run row; ``settings`` says where, ``shard_index`` which shard).

    ``record`` (the default): the run's bookkeeping. The stage first waits for its predecessor when it
    ``needs_predecessor``; a failure marks the run failed (the exception carries ``failed_stage``); success
    records the stage done, and a stage that ``finishes_run`` closes the run with its result. ``owner``:
    only a run that owner holds is closed. ``alive``: whether another run's owner is still going (the
    Airflow API), so a failed predecessor that Airflow will retry is waited for. ``record=False`` leaves the run row alone (planted populations
    and benches that run a few stages on a row they close themselves).
    """
    from pipeline.core import runs

    entry = stage(name)
    if isinstance(ctx_or_run_key, RunContext):
        ctx = ctx_or_run_key
    else:
        if settings is None:
            raise TypeError("run_one with a run key needs settings")
        ctx = runs.load_context(settings, ctx_or_run_key, shard_index)
    if not record:
        return _as_dict(entry.run(ctx))
    try:
        runs.wait_for_predecessor(ctx.settings, ctx.run_key, entry.name, alive=alive)
        out = _as_dict(entry.run(ctx))
    except BaseException as exc:
        exc.failed_stage = entry.name  # type: ignore[attr-defined]  # the CLI names it (SIGTERM, Ctrl-C)
        runs.finish_run(ctx.settings, ctx.run_key, {"failed_stage": entry.name, "error": str(exc)[:500]},
                        status="failed", owner=owner)
        raise
    runs.stage_done(ctx.settings, ctx.run_key, entry.name)
    if entry.finishes_run:
        runs.finish_run(ctx.settings, ctx.run_key, out, owner=owner)
    log.info("%s: %s", entry.name, out)
    return out


def run_all(ctx_or_run_key: RunContext | str, names: tuple[str, ...] = STAGE_NAMES, *,
            settings: Settings | None = None, owner: str | None = None, record: bool = True,
            on_stage: Callable[[str, dict[str, Any], float], None] | None = None) -> dict[str, dict[str, Any]]:
    """The named stages in table order, in this process, each with `run_one`; ``on_stage(name, result,
    seconds)`` after each. Returns each stage's result by name.

    With ``record``, an exception between stages (a signal while ``on_stage`` prints) also marks the run
    failed, naming the stage it came after, so the run is never left `running`.
    """
    from pipeline.core import runs

    unknown = sorted(set(names) - set(STAGE_NAMES))
    if unknown:
        stage(unknown[0])  # raises, naming the stages
    if not isinstance(ctx_or_run_key, RunContext):
        if settings is None:
            raise TypeError("run_all with a run key needs settings")
        ctx_or_run_key = runs.load_context(settings, ctx_or_run_key)
    ctx = ctx_or_run_key
    results: dict[str, dict[str, Any]] = {}
    current = names[0] if names else STAGE_NAMES[0]
    try:
        for entry in STAGES:
            if entry.name not in names:
                continue
            current = entry.name
            started = time.perf_counter()
            results[entry.name] = run_one(ctx, entry, owner=owner, record=record)
            if on_stage is not None:
                on_stage(entry.name, results[entry.name], time.perf_counter() - started)
    except BaseException as exc:
        if record and not hasattr(exc, "failed_stage"):
            exc.failed_stage = current  # type: ignore[attr-defined]
            runs.finish_run(ctx.settings, ctx.run_key, {"failed_stage": current}, status="failed", owner=owner)
        raise
    return results
