"""Issue 24, part 3: every input mistake a new user makes gets one line that says what to do, from the real
CLI: exit 2 for an error, exit 0 with a visible WARNING otherwise, never a traceback. And what the audit
kept and rejected is shown: the ingest ledger and the quarantine count by reason in the printed summary
and in the HTML report, with the command that lists the rejections and the report's path."""

from __future__ import annotations

import contextlib
import html
import io
import shlex
import zipfile
from pathlib import Path

import pytest
from test_cli import _one_line_error, run_cli

from pipeline.ingest.readers import READERS, csv_requirements, resolve_reader

PNG_NAME = "avatar.jpg"  # a text file named like an image: acquisition fails it
HOSTILE_NAME = "<img src=x onerror=alert(1)>.csv"  # a file name is export text too


def _base(database_url: str, home: Path | None = None) -> tuple[str, ...]:
    return (*(("--home", str(home)) if home else ()), "--database-url", database_url)


def _error_line(out, expected: str) -> str:
    """The one error line (exit 2, no traceback), which must contain ``expected``."""
    assert out.returncode == 2, (out.stdout, out.stderr)
    _one_line_error(out, expected)
    return out.stderr.strip()


# ---------------------------------------------------------------------------------------------- exports


def test_empty_folder_says_it_is_empty_and_what_to_pass(tmp_path, database_url):
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "sub").mkdir()  # folders without files are still empty
    line = _error_line(run_cli(*_base(database_url), "audit", str(tmp_path / "export"), home=tmp_path),
                       "is an empty folder")
    assert "Pass the folder that holds the export's files" in line and len(line) < 300


def test_zip_without_files_says_it_is_empty(tmp_path, database_url):
    with zipfile.ZipFile(tmp_path / "export.zip", "w") as zf:
        zf.writestr("data/", b"")  # a folder entry only
    line = _error_line(run_cli(*_base(database_url), "audit", str(tmp_path / "export.zip"), home=tmp_path),
                       "is a zip with no files in it")
    assert "Pass the zip of the export's files" in line


def _needs(line: str) -> None:
    for label, columns in csv_requirements():
        assert f"{label} (needs {', '.join(columns)})" in line, label


def test_csv_with_wrong_columns_lists_columns_found_and_needed(tmp_path, database_url):
    export = tmp_path / "export"
    export.mkdir()
    (export / "people.csv").write_text("user,name,\"followers count\"\n1,a,3\n")
    line = _error_line(run_cli(*_base(database_url), "audit", str(export), home=tmp_path),
                       "the CSV people.csv has columns user, name, followers count;")
    _needs(line)
    assert "Rename the columns" in line and "--format" in line and len(line) < 700
    # one CSV file given alone, and a folder of several: the same line, naming the first
    (export / "more.csv").write_text("id\n1\n")
    line = _error_line(run_cli(*_base(database_url), "audit", str(export / "people.csv"), home=tmp_path),
                       "the CSV people.csv has columns user, name")
    _needs(line)
    with pytest.raises(Exception, match=r"the CSV more.csv \(and 1 more CSV, none matching\) has columns id;"):
        resolve_reader(export)


@pytest.mark.parametrize("label", [label for label, _ in csv_requirements()])
def test_the_columns_the_message_asks_for_are_what_detection_accepts(tmp_path, label):
    """The message's columns come from the readers; a CSV with just those columns is detected, one without
    any one of them is not (or, a tweets file, is refused for lacking it), so the message asks for no
    column too many and none too few."""
    columns = dict(csv_requirements())[label]
    name = {"generic manifest": "generic", "IO users file": "twitter_io", "IO tweets file": "twitter_io"}[label]
    good = tmp_path / "good.csv"
    good.write_text(",".join(columns) + "\n" + ",".join("1" for _ in columns) + "\n")
    assert resolve_reader(good).name == name
    for missing in columns:
        bad = tmp_path / f"without_{missing}.csv"
        bad.write_text(",".join(c for c in columns if c != missing) + "\n" + ",".join("1" for _ in columns[1:]) + "\n")
        refused = READERS[name].detect(bad) and [r.reason for r in READERS[name].read(bad) if hasattr(r, "reason")]
        assert not READERS[name].detect(bad) or any(missing in reason for reason in refused), (label, missing)


def test_unrecognised_files_name_the_formats_briefly(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "empty.json").write_text("")
    with pytest.raises(Exception) as raised:
        resolve_reader(tmp_path)
    line = str(raised.value)
    assert "no reader recognised its 2 files (empty.json, notes.txt)" in line
    assert all(f"{name} (" in line for name in READERS) and len(line) < 700 and "\n" not in line
    (tmp_path / "zero.csv").write_bytes(b"")
    with pytest.raises(Exception, match="it is an empty file"):
        resolve_reader(tmp_path / "zero.csv")


def _header_only(tmp_path: Path) -> Path:
    export = tmp_path / "export"
    export.mkdir()
    (export / "manifest.csv").write_text("platform,account_id,handle,avatar\n")
    return export


@pytest.mark.slow
def test_an_export_with_no_account_is_a_warning_or_with_require_accounts_an_error(tmp_path, database_url):
    export = _header_only(tmp_path)
    base = _base(database_url)
    out = run_cli(*base, "audit", str(export), "--run-key", "empty", home=tmp_path)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    warning = next(line for line in out.stdout.splitlines() if "WARNING the export gave 0 accounts" in line)
    assert str(export) in warning and "--require-accounts" in warning
    report = Path(out.stdout.strip().splitlines()[-1].removeprefix("report: "))
    assert report.name == "index.html" and "the export gave 0 accounts" in html.unescape(report.read_text())

    out = run_cli(*base, "audit", str(export), "--run-key", "empty", "--require-accounts", home=tmp_path)
    line = out.stderr.strip().splitlines()[-1]  # the stages before it log their warnings on stderr
    assert out.returncode == 2 and "Traceback" not in out.stderr and out.stderr.count("error:") == 1, out.stderr
    assert line.startswith("profile-audit: error: the export gave 0 accounts (0 records quarantined)")
    assert "The run is marked failed" in line
    out = run_cli(*base, "runs", home=tmp_path)
    assert out.returncode == 0 and any(line.startswith("empty  failed") for line in out.stdout.splitlines()), out.stdout


@pytest.mark.slow
def test_nightly_dag_fails_a_day_with_no_account(airflow_db, settings, tmp_path, monkeypatch):
    import pendulum
    from test_dags import _dagbag, _use_database

    _use_database(monkeypatch, settings)
    landing = tmp_path / "landing"
    landing.mkdir()
    _header_only(tmp_path).rename(landing / "2026-03-06")
    run = _dagbag().get_dag("profile_audit_nightly").test(logical_date=pendulum.datetime(2026, 3, 6, tz="UTC"),
                                                          run_conf={"landing_dir": str(landing)})
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == "failed" and states["begin"] == "success" and states["ingest"] == "failed"
    import sqlalchemy as sa

    from pipeline.core.db import transaction

    with transaction(settings) as conn:
        status, summary = conn.execute(sa.text("select status, summary from runs where run_key = 'nightly:2026-03-06'")).one()
    assert status == "failed" and summary["failed_stage"] == "ingest"
    assert summary["error"].startswith("the export gave 0 accounts") and "\n" not in summary["error"]


# ---------------------------------------------------------------------------------------------- run keys


def test_unknown_run_key_is_an_error_in_every_command_that_takes_one(tmp_path, database_url):
    base = _base(database_url, tmp_path)
    commands = [["quarantine", "--run-key", "nope"], ["flags", "--run-key", "nope"], ["report", "--run-key", "nope"],
                ["score", "--run-key", "nope"], ["evidence", "c1", "--run-key", "nope"]]
    from pipeline.cli import build_parser

    takes_a_key = {name for name, p in next(a for a in build_parser()._actions if a.dest == "command").choices.items()
                   if any("--run-key" in a.option_strings for a in p._actions)}
    assert takes_a_key == {c[0] for c in commands} | {"audit"}  # audit names a new run: no check there
    for command in commands:
        line = _error_line(run_cli(*base, *command, home=tmp_path), "no run 'nope' in this database")
        assert f"`profile-audit --home {tmp_path} --database-url" in line and " runs` lists the runs" in line, line
    out = run_cli(*base, "runs", home=tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == \
        "no runs in this database yet; `profile-audit audit EXPORT_PATH` makes one"


# ---------------------------------------------------------------------------------------------- options


def _parse_error(argv: list[str]) -> tuple[int, str]:
    from pipeline.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exited:
        main(argv)
    return exited.value.code, err.getvalue()


def test_a_misspelt_option_is_named_under_the_subcommands_usage(tmp_path):
    code, err = _parse_error(["audit", "--formt", "generic", str(tmp_path)])
    lines = err.strip().splitlines()
    assert code == 2 and lines[0].startswith("usage: profile-audit audit ")
    assert lines[-1] == "profile-audit audit: error: unrecognized arguments: --formt (did you mean --format?)"
    code, err = _parse_error(["audit", str(tmp_path), "--home", str(tmp_path)])
    assert err.strip().splitlines()[-1] == ("profile-audit audit: error: unrecognized arguments: --home "
                                            "(--home is an option of profile-audit itself: put it before the command)")
    code, err = _parse_error(["db", "upgrade", "--dry-run"])
    assert code == 2 and err.strip().splitlines()[-1] == "profile-audit db upgrade: error: unrecognized arguments: --dry-run"


def _subcommands(parser, path=()):
    for action in parser._actions:
        if action.dest in ("command", "db_command", "flag_command"):
            for name, sub in action.choices.items():
                yield from _subcommands(sub, (*path, name))
            return
    yield path, parser


def test_every_subcommand_reports_its_own_unknown_options():
    from pipeline.cli import build_parser

    leaves = list(_subcommands(build_parser()))
    assert len(leaves) > 15
    for path, parser in leaves:
        # each command's required arguments, so only the unknown option is wrong
        required = []
        for action in parser._actions:
            if action.required and action.option_strings:
                required += [action.option_strings[0], (action.choices and next(iter(action.choices))) or "x"]
            elif not action.option_strings and action.nargs not in ("?", "*") and action.dest != "help":
                required.append(next(iter(action.choices)) if action.choices else "x")
        code, err = _parse_error([*path, *required, "--no-such-option"])
        assert code == 2, (path, err)
        assert err.strip().splitlines()[-1].startswith(
            f"profile-audit {' '.join(path)}: error: unrecognized arguments: --no-such-option"), (path, err)
        assert err.startswith(f"usage: profile-audit {' '.join(path)}"), (path, err)


# ---------------------------------------------------------------------------------------------- what was kept


@pytest.mark.slow
def test_summary_ends_with_the_ledger_the_quarantine_by_reason_and_the_command_to_list_it(tmp_path, database_url):
    """A text file named .jpg fails acquisition: the summary says so by reason and gives the exact command;
    the report (its path printed last) shows the ledger per file, the hostile file name escaped."""
    export = tmp_path / "export"
    export.mkdir()
    (export / PNG_NAME).write_text("not an image")
    (export / HOSTILE_NAME).write_text(
        "platform,account_id,handle,avatar\nx,1,alice," + PNG_NAME + "\nx,,nobody,\n")
    out = run_cli(*_base(database_url, tmp_path), "audit", str(export), "--run-key", "mistakes")
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    lines = out.stdout.strip().splitlines()
    assert "  accounts 1, quarantined records 2" in lines and any("failed 1" in line for line in lines)
    assert "  ingest ledger: 1 file, 2 seen, 1 stored, 1 quarantined, 0 ignored" in lines
    assert "  quarantined 2 by reason (stage: reason):" in lines
    by_reason = lines[lines.index("  quarantined 2 by reason (stage: reason):") + 1:-2]
    assert len(by_reason) == 2 and {line.split()[0] for line in by_reason} == {"1"}
    assert any(line.split(None, 1)[1].startswith("images:") for line in by_reason), by_reason
    listing = lines[-2].removeprefix("  list them: ")
    assert listing.startswith(f"profile-audit --home {tmp_path} --database-url ") and listing.endswith(
        " quarantine --run-key mistakes")
    again = run_cli(*shlex.split(listing)[1:], home=None)  # the printed command, as printed
    assert again.returncode == 0 and again.stdout.strip().endswith("2 quarantined"), again.stderr
    assert "[images] " in again.stdout and "avatar: unreadable image" in again.stdout

    report = Path(lines[-1].removeprefix("report: "))
    text = report.read_text()
    assert "<img src=x" not in text and html.escape(HOSTILE_NAME) in text
    assert "<h2>Ingest ledger</h2>" in text and "quarantine --run-key mistakes" in text


def test_the_ledger_table_lists_files_that_need_a_look_first_and_is_capped():
    from pipeline.reporting.html import MAX_LEDGER_FILES, MAX_LEDGER_WARNINGS, ledger_section
    from pipeline.reporting.summary import format_summary

    def row(seen, stored, quarantined=0, ignored=None):
        ignored = ignored or {}
        return {"seen": seen, "inferred": 0, "stored": stored, "quarantined": quarantined, "ignored": ignored,
                "repaired": 0, "balanced": seen == stored + quarantined + sum(ignored.values())}

    ledger = {f"posts/{i:05d}.json": row(3, 2, ignored={"activity Like": 1}) for i in range(1000)}
    ledger["z-lost.json"] = row(5, 1)
    ledger["y-nothing.json"] = row(0, 0)
    warnings = [f"warning {i}" for i in range(MAX_LEDGER_WARNINGS + 5)]
    summary = {"run_key": "k", "ingest": {"ledger": ledger, "warnings": warnings}, "quarantined_by_reason": {}}
    text = ledger_section(summary)
    assert text.count("<tr>") == MAX_LEDGER_FILES + 1  # the header row and the capped file rows
    assert text.index("z-lost.json") < text.index("y-nothing.json") < text.index("posts/00000.json")
    assert f"{len(ledger) - MAX_LEDGER_FILES} more files not listed" in text
    assert "5 more files with a ledger warning" in text and text.count('class="warn"') == MAX_LEDGER_WARNINGS + 1
    assert "1002 files, 3005 seen, 2001 stored, 0 quarantined, 1000 ignored; 1 file does not balance" in text

    printed = format_summary({"run_key": "k", "export_format": "x", "detector_id": None, "accounts": 0,
                              "quarantined": 0, "avatars_stored": 0, "avatars_failed": 0, "distinct_images": 0,
                              "synthetic_avatars": 0, "edges": {}, "clusters": 0, "flags": 0,
                              "warnings": ["no detector", *warnings], "ingest": summary["ingest"],
                              "quarantined_by_reason": {}}, [])
    assert "  WARNING no detector" in printed and printed.count("  WARNING warning ") == 20
    assert "  WARNING 5 more ingest ledger warnings like these" in printed
    assert printed.endswith("  nothing quarantined")


@pytest.mark.slow
def test_demo_ends_with_the_report_path_and_the_quarantine_command(tmp_path, database_url):
    out = run_cli(*_base(database_url, tmp_path), "demo")
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    lines = out.stdout.strip().splitlines()
    report = Path(lines[-1].removeprefix("report: "))
    assert lines[-1].startswith("report: ") and report.is_file() and "<h2>Ingest ledger</h2>" in report.read_text()
    assert any(line.startswith("  ingest ledger: 1 file, ") for line in lines)
    assert any(line.startswith(f"  list them: profile-audit --home {tmp_path} ") and line.endswith(
        "quarantine --run-key demo") for line in lines)
