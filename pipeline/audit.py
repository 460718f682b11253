"""Running the audit: `begin` opens and pins a run, `audit_export` runs every stage of it in one process
(the CLI), with the runner of the stage table (`pipeline.stages.run_all`). The DAGs run the same
table one stage per task (`pipeline.stages.run_one`), so the CLI and Airflow run the same code.

`begin` pins everything the stages need on the run row (`pipeline.core.runs`); stages get their
RunContext from that row (`runs.load_context`), so a config change, a detector promoted later or a
second trigger mid-run cannot change what a running run does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pipeline.config import Policy, Settings
from pipeline.core import runs
from pipeline.core.db import ensure_schema, transaction
from pipeline.core.storage import sweep_stale_temp
from pipeline.errors import UserError
from pipeline.ingest.exports import ExportSpec, combined_format, combined_path, resolve_exports
from detectors.presets import SHIPPED_DETECTOR, is_shipped
from pipeline.scoring.detector_store import register_detector, resolve_detector
from pipeline.stages import STAGES, run_all

log = logging.getLogger(__name__)
AUTO = "auto"  # begin's predecessor default: the previous nightly day when its run exists
SHIPPED_NOTE = (f"no promoted detector: avatars were scored with the shipped face detector {SHIPPED_DETECTOR} "
                "(CLIP ViT-B/16 probe + dlib-face probe + eye test, trained on public research face sets; its measured "
                "figures are in docs/detectors.md). Promote your own with `profile-audit promote` to change it")
NO_DETECTOR_WARNING = ("no detector: images were not scored (train one with `profile-audit train-probe --promote`, "
                       "run `profile-audit demo`, or pass --detector); signals that need no detector were computed")


def _default_predecessor(settings: Settings, run_key: str) -> str | None:
    previous = runs.previous_nightly_key(run_key)
    if previous is None:
        return None
    import sqlalchemy as sa

    with transaction(settings) as conn:
        found = conn.execute(sa.text("select 1 from runs where run_key = :k"), {"k": previous}).first()
    return previous if found else None


def _checked_baseline(settings: Settings, run_key: str, baseline_run: str | None) -> str | None:
    """The baseline run key (None: none), checked to name another run (a one-line error otherwise)."""
    if not baseline_run:
        return None
    from pipeline.networks.baseline import check_baseline_run

    with transaction(settings) as conn:
        check_baseline_run(conn, run_key, baseline_run)
    return baseline_run


def _as_paths(export_path: Path | Sequence[Path]) -> list[Path]:
    return [Path(export_path)] if isinstance(export_path, (str, Path)) else [Path(p) for p in export_path]


def _pin_exports(params: dict[str, Any], exports: list[ExportSpec], merged: list[str]) -> None:
    """Several exports: the sorted list on the run's params (ingest and acquire read it back); what was
    merged (a path given twice) in its notes. A DAG's ``exports`` Param (paths) is replaced by the pinned list."""
    params.pop("exports", None)
    if len(exports) > 1:
        params["exports"] = [e.as_param() for e in exports]
    if merged:
        params["notes"] = [*params.get("notes", []), *merged]
        for line in merged:
            log.warning("%s", line)


def begin(settings: Settings, run_key: str | None, export_path: Path | Sequence[Path], fmt: str, policy: Policy | None,
          detector: str | None, as_of: str | None = None, *, owner: str | None = None,
          predecessor: str | None = AUTO, shard_count: int = 1, airflow: dict[str, Any] | None = None,
          alive: runs.OwnerAlive | None = None, extra_params: dict[str, Any] | None = None,
          require_detector: bool = False, require_accounts: bool = False, baseline_run: str | None = None) -> str:
    """Check the export(s) and the detector before a run row exists, then open (or reopen) the run and pin
    it: the exports (several paths: sorted, each with its format, `pipeline.ingest.exports`), the resolved detector id (a .json detector is stored first), params and policy (None: these
    settings' policy), predecessor, shard count.

    A named detector that cannot be found is an error now, not after ingest. With none named and none
    promoted, the run goes on without scoring (a warning recorded on the run) unless ``require_detector``.
    ``require_accounts`` (pinned on the run): an export that gives no account fails the run at ingest
    (the nightly DAG's rule; else it is a warning, `pipeline.stages.ingest.check_accounts`).
    ``baseline_run`` (pinned as ``params.baseline_run``; also taken from ``extra_params``, the DAG Param):
    an earlier run whose accounts join the population the creation bursts are measured against
    (pipeline/networks/baseline.py); a key that names no run is an error now.

    The caller holds the run's lease (`runs.RunLease`) around this call.
    """
    ensure_schema(settings)
    for folder in (settings.detector_dir, settings.image_dir, settings.home / "reports"):
        sweep_stale_temp(folder)  # temp files of writes a killed run left (older than an hour)
    exports, merged = resolve_exports(_as_paths(export_path), fmt or "auto")
    run_key = run_key or runs.default_run_key([e.path for e in exports])
    baseline_run = _checked_baseline(settings, run_key, baseline_run or (extra_params or {}).get("baseline_run"))
    warnings: list[str] = []
    try:
        resolved = resolve_detector(settings, detector)
    except UserError:
        if detector or settings.detector or require_detector:
            raise
        resolved = None
        warnings.append(NO_DETECTOR_WARNING)
        log.warning("run without a detector: %s", NO_DETECTOR_WARNING)
    if resolved is not None:
        register_detector(settings, resolved)
    if predecessor == AUTO:
        predecessor = _default_predecessor(settings, run_key)
    reaped = runs.reap_stale_runs(settings, alive)  # the stale-run rule, for every key, at every begin
    if reaped:
        log.warning("marked stale runs failed (their owner is gone): %s", ", ".join(reaped))
    params: dict[str, Any] = {**(extra_params or {}), **(policy or settings.policy()).run_params(),
                              "detector": detector or settings.detector or "default"}
    if resolved is not None and not (detector or settings.detector) and is_shipped(resolved):
        params["detector"] = f"shipped:{SHIPPED_DETECTOR}"
        params["notes"] = [SHIPPED_NOTE]
        log.info("%s", SHIPPED_NOTE)
    if warnings:
        params["detector"] = None
        params["warnings"] = warnings
    if as_of:
        params["as_of"] = as_of
    if require_accounts:
        params["require_accounts"] = True
    params.pop("baseline_run", None)
    params.update({"baseline_run": baseline_run} if baseline_run else {})
    _pin_exports(params, exports, merged)
    fmt_name, path_text = combined_format(exports), combined_path(exports)
    runs.start_run(settings, run_key, path_text, fmt_name, params, owner=owner,
                   detector_id=resolved.id if resolved is not None else None,
                   predecessor=predecessor, shard_count=shard_count, airflow=airflow, alive=alive)
    log.info("run %s: %s export at %s, detector %s, predecessor %s", run_key, fmt_name, path_text,
             resolved.id if resolved is not None else "none", predecessor)
    return run_key


def audit_export(
    settings: Settings,
    export_path: Path | Sequence[Path],
    fmt: str = "auto",
    run_key: str | None = None,
    detector: str | None = None,
    policy: Policy | None = None,
    as_of: str | None = None,
    on_stage: Callable[[str, dict[str, Any], float], None] | None = None,
    predecessor: str | None = AUTO,
    require_detector: bool = False,
    require_accounts: bool = False,
    baseline_run: str | None = None,
) -> dict[str, Any]:
    """Every stage for one export (or several, into one run: `pipeline.ingest.exports`), in order, holding the run's lease throughout. Idempotent per run key.
    Returns the run summary.

    ``on_stage(name, result, seconds)`` is called after each stage (the CLI prints progress with it).
    ``require_accounts``: an export that gives no account fails the run (else a warning;
    `pipeline.stages.ingest.check_accounts`).
    ``predecessor``: the run this one inherits cluster ids from (default: for ``nightly:D``, ``nightly:D-1``
    when that run exists); its networks and flag stages wait for it.
    ``baseline_run``: an earlier run whose accounts the creation bursts are measured against, with this
    run's (an IO release audited alone has no organic population; pipeline/networks/baseline.py).
    """
    ensure_schema(settings)
    run_key = run_key or runs.default_run_key(sorted({p.resolve() for p in _as_paths(export_path)}))
    owner = runs.cli_owner()
    with runs.RunLease(settings, run_key, owner):
        begin(settings, run_key, export_path, fmt, policy, detector, as_of, owner=owner, predecessor=predecessor,
              require_detector=require_detector, require_accounts=require_accounts, baseline_run=baseline_run)
        results = run_all(run_key, settings=settings, owner=owner, on_stage=on_stage)
    return next(results[s.name] for s in STAGES if s.finishes_run)
