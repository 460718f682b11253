"""Stage `summarize`: the run summary (stored on the run row, printed by the CLI, logged by Airflow)."""

from __future__ import annotations

import shlex
from typing import Any

import sqlalchemy as sa

from pipeline.config import Settings
from pipeline.core.db import transaction
from pipeline.core.visible import visible
from pipeline.ingest.ledger import ledger_warnings
from pipeline.ingest.load import load_ledger
from pipeline.ingest.quarantine import reasons_by_kind
from pipeline.networks.baseline import run_baseline
from pipeline.reporting.detector_info import load_detector_info, rates_text

def summarize_run(settings: Settings, run_key: str) -> dict[str, Any]:
    """Counts straight from the tables, so the summary is the same on every rerun of the key."""
    with transaction(settings) as conn:
        one = lambda sql: conn.execute(sa.text(sql), {"k": run_key}).scalar_one()  # noqa: E731
        run = conn.execute(sa.text("select export_format, detector_id, params from runs where run_key = :k"),
                           {"k": run_key}).one()
        summary = {
            "run_key": run_key,
            "export_format": run.export_format,
            # several exports in one run (pipeline/ingest/exports.py): each one's path, format and label
            **({"exports": (run.params or {})["exports"]} if (run.params or {}).get("exports") else {}),
            "detector_id": run.detector_id,
            "accounts": one("select count(*) from account_snapshots where run_key = :k"),
            "quarantined": one("select count(*) from quarantine where run_key = :k"),
            "avatars_stored": one("select count(*) from account_avatars where run_key = :k and status = 'stored'"),
            "avatars_failed": one("select count(*) from account_avatars where run_key = :k and status = 'failed'"),
            "distinct_images": one("select count(distinct sha256) from account_avatars where run_key = :k"),
            "synthetic_avatars": one("select count(*) from account_signals where run_key = :k and avatar_label"),
            "edges": dict(conn.execute(sa.text(
                "select edge_type, count(*) from edges where run_key = :k group by 1 order by 1"), {"k": run_key}).all()),
            "clusters": one("select count(*) from clusters where run_key = :k"),
            "flags": one("select count(*) from flags where run_key = :k"),
            "quarantined_by_reason": reasons_by_kind(conn, run_key),
            # per export file: units seen, stored, quarantined, ignored by reason (docs/formats.md, "The ledger")
            "ingest": {"ledger": load_ledger(conn, run_key)},
            "warnings": list((run.params or {}).get("warnings", [])),  # e.g. images not scored: no detector
            "notes": list((run.params or {}).get("notes", [])),  # e.g. scored by the shipped detector
            # which detector labelled the avatars, whether it is real, what was measured on it
            "detector": load_detector_info(conn, run.detector_id, run.params or {}),
            # what the creation bursts were measured against (pipeline/networks/baseline.py)
            "baseline": run_baseline(conn, run_key).as_dict(),
        }
    ledger = summary["ingest"]["ledger"]
    summary["ingest"]["warnings"] = ledger_warnings(ledger, run_key)
    summary["warnings"] += summary["ingest"]["warnings"]
    return summary


def baseline_lines(baseline: dict[str, Any] | None) -> list[str]:
    """One line: what the creation bursts were measured against; a warning when nothing organic."""
    if not baseline:
        return []
    return [f"  {'WARNING ' if not baseline['organic'] else ''}baseline: {baseline['why']}"]


def detector_lines(info: dict[str, Any] | None) -> list[str]:
    """The detector that labelled the avatars: its name and how the run chose it, the caveat when it is not
    a real detector, and what was measured on it (one line each)."""
    if not info:
        return []
    chosen = f", {info['chosen']}" if info.get("chosen") else ""
    lines = [f"  detector {info['name']} ({info['kind']}{chosen})"]
    if not info["real_detector"]:
        lines.append(f"  WARNING {info['caveat']}")
    measured = info["measured"]
    if measured.get("tpr_by_generator") or measured.get("fpr_by_real_source"):
        lines.append(f"    measured TPR by generator: {rates_text(measured['tpr_by_generator'])}")
        lines.append(f"    measured FPR by real source: {rates_text(measured['fpr_by_real_source'])}")
        left_out = {key: {name: rates["left_out"] for name, rates in per.items() if "left_out" in rates}
                    for key, per in (measured.get("by_condition") or {}).items()}
        if any(left_out.values()):  # the figures for data unlike any it was trained on
            lines.append(f"    left out of training, TPR: {rates_text(left_out.get('tpr_by_generator', {}))}; "
                         f"FPR: {rates_text(left_out.get('fpr_by_real_source', {}))}")
    elif measured.get("overall"):
        overall = measured["overall"]
        lines.append("    measured " + ", ".join(f"{k.upper()} {v:.2f}" for k, v in overall.items()))
    lines.append(f"    ({info['how_measured']})")
    return lines


MAX_REASONS_SHOWN = 10  # quarantine reason kinds listed under the summary
MAX_INGEST_WARNINGS_SHOWN = 20  # ledger warnings (one per file) printed; an export of thousands of files has more


def ledger_total(ledger: dict[str, dict[str, Any]]) -> dict[str, int]:
    """The ingest ledger summed over its files: files, seen, inferred, stored, quarantined, ignored, unbalanced."""
    total = {"files": len(ledger), "seen": 0, "inferred": 0, "stored": 0, "quarantined": 0, "ignored": 0,
             "repaired": 0, "unbalanced": 0}
    for row in ledger.values():
        for key in ("seen", "inferred", "stored", "quarantined", "repaired"):
            total[key] += row.get(key) or 0
        total["ignored"] += sum((row.get("ignored") or {}).values())
        total["unbalanced"] += not row.get("balanced", True)
    return total


def ledger_line(ledger: dict[str, dict[str, Any]]) -> str:
    t = ledger_total(ledger)
    inferred = f" (+{t['inferred']} inferred)" if t["inferred"] else ""
    unbalanced = (f"; {t['unbalanced']} file{' does' if t['unbalanced'] == 1 else 's do'} not balance"
                  if t["unbalanced"] else "")
    return (f"ingest ledger: {t['files']} file{'s' if t['files'] != 1 else ''}, {t['seen']} seen{inferred}, "
            f"{t['stored']} stored, {t['quarantined']} quarantined, {t['ignored']} ignored{unbalanced}")


def shown_warnings(summary: dict[str, Any], cap: int = MAX_INGEST_WARNINGS_SHOWN) -> list[str]:
    """The run's warnings with at most ``cap`` of the ledger's per-file ones, and a line saying how many more."""
    ingest = set((summary.get("ingest") or {}).get("warnings") or [])
    shown: list[str] = []
    seen_ingest = 0
    for warning in summary.get("warnings", []):
        seen_ingest += warning in ingest
        if warning not in ingest or seen_ingest <= cap:
            shown.append(warning)
    hidden = seen_ingest - min(seen_ingest, cap)
    if hidden:
        shown.append(f"{hidden} more ingest ledger warnings like these (--json lists them all; the report's ledger "
                     "table lists the files)")
    return shown


def format_summary(summary: dict[str, Any], flags: list[dict[str, Any]], command: str = "profile-audit") -> str:
    """The run summary as the CLI prints it. It ends with where the records went (the ledger total), the
    quarantine count by reason and ``command`` (the CLI with the invocation's global flags) that lists them."""
    lines = [
        f"run {summary['run_key']} ({summary['export_format']}, detector {summary['detector_id']})",
        *(f"  export {visible(e['label'])}: {e['format']} at {visible(e['path'])}" for e in summary.get("exports", [])),
        f"  accounts {summary['accounts']}, quarantined records {summary['quarantined']}",
        f"  avatars stored {summary['avatars_stored']}, failed {summary['avatars_failed']},"
        f" distinct images {summary['distinct_images']}, scored synthetic {summary['synthetic_avatars']}",
        f"  edges {summary['edges'] or 0}, clusters {summary['clusters']}, flags {summary['flags']}",
        *baseline_lines(summary.get("baseline")),
        *(f"  WARNING {visible(w)}" for w in shown_warnings(summary)),
        *(f"  NOTE {n}" for n in summary.get("notes", [])),
        *detector_lines(summary.get("detector")),
    ]
    for f in flags:
        lines.append(f"  FLAG {f['flag_id']} {f.get('kind', 'cluster')} {f['cluster_id']} score {f['score']:.2f}"
                     f" members {len(f['members'])} rules {', '.join(f['rules'])}")
        for rule, why in f["evidence"]["rules"].items():
            lines.append(f"      {rule}: {why}")
    ledger = (summary.get("ingest") or {}).get("ledger")
    if ledger is not None:
        lines.append(f"  {ledger_line(ledger)}")
    reasons = summary.get("quarantined_by_reason") or {}
    if reasons:
        total = sum(reasons.values())
        lines.append(f"  quarantined {total} by reason (stage: reason):")
        width = len(str(max(reasons.values())))
        lines += [f"    {n:>{width}}  {visible(reason)}" for reason, n in list(reasons.items())[:MAX_REASONS_SHOWN]]
        if len(reasons) > MAX_REASONS_SHOWN:
            rest = list(reasons.values())[MAX_REASONS_SHOWN:]
            lines.append(f"    {sum(rest):>{width}}  in {len(rest)} more reasons")
        lines.append(f"  list them: {command} quarantine --run-key {shlex.quote(summary['run_key'])}")
    else:
        lines.append("  nothing quarantined")
    return "\n".join(lines)
