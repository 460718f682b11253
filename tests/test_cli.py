"""The CLI contract: command names, --help everywhere, one-line errors with a non-zero exit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

COMMANDS = [[], ["db"], ["db", "upgrade"], ["audit"], ["flags"], ["flag"], ["flag", "set-status"], ["quarantine"],
            ["train-probe"], ["detectors"], ["demo"], ["report"]]


def run_cli(*args: str, env: dict | None = None, home: Path | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    if home is not None:
        full_env["PROFILE_AUDIT_HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True,
                          env=full_env, timeout=300)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "top")
def test_help_for_every_command(command):
    out = run_cli(*command, "--help")
    assert out.returncode == 0, out.stderr
    assert "usage: profile-audit" in out.stdout


def _one_line_error(out: subprocess.CompletedProcess, expected: str) -> None:
    assert out.returncode != 0
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert lines == [lines[0]] and lines[0].startswith("profile-audit: error: "), out.stderr
    assert expected in lines[0]
    assert "Traceback" not in out.stderr


def test_missing_export_path(tmp_path, database_url):
    out = run_cli("--database-url", database_url, "audit", str(tmp_path / "missing"), home=tmp_path)
    _one_line_error(out, "does not exist")


def test_bad_database_urls(tmp_path):
    _one_line_error(run_cli("--database-url", "not a url", "db", "upgrade", home=tmp_path), "is not a URL")
    _one_line_error(run_cli("--database-url", "postgresql://u@h/db", "db", "upgrade", home=tmp_path),
                    "postgresql+psycopg2://")
    _one_line_error(run_cli("--database-url", "mysql://u@h/db", "db", "upgrade", home=tmp_path), "uses driver")


def test_unreachable_database(tmp_path):
    out = run_cli("db", "upgrade", env={"PROFILE_AUDIT_DATABASE_URL":
                                        "postgresql+psycopg2://nobody@127.0.0.1:1/none?connect_timeout=3"},
                  home=tmp_path)
    _one_line_error(out, "cannot connect to PostgreSQL at postgresql+psycopg2://nobody@127.0.0.1:1/none")


def test_bad_config_file(tmp_path):
    (tmp_path / "config.toml").write_text("database_url = [unterminated")
    _one_line_error(run_cli("db", "upgrade", home=tmp_path), "is not valid TOML")


@pytest.mark.slow
def test_unknown_flag_and_missing_detector_file(tmp_path, database_url, demo_data):
    _one_line_error(run_cli("--database-url", database_url, "flag", "set-status", "fdeadbeef", "confirmed",
                            home=tmp_path), "no flag 'fdeadbeef'")
    _one_line_error(run_cli("--database-url", database_url, "audit", str(demo_data["export"]),
                            "--detector", str(tmp_path / "nope.json"), home=tmp_path), "detector file")


@pytest.mark.slow
@pytest.mark.empty_database
def test_audit_then_flags_json_and_set_status(tmp_path, database_url, demo_data):
    base = ("--database-url", database_url)
    out = run_cli(*base, "db", "upgrade", home=tmp_path)
    assert out.returncode == 0 and out.stdout.startswith("applied: 001_core_schema.sql")
    assert run_cli(*base, "db", "upgrade", home=tmp_path).stdout.strip() == "database schema is up to date"

    out = run_cli(*base, "audit", str(demo_data["export"]), "--run-key", "cli", "--detector",
                  str(demo_data["detector"]), home=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "flags 2" in out.stdout and out.stdout.count("FLAG ") == 2

    out = run_cli(*base, "flags", "--run-key", "cli", "--json", home=tmp_path)
    flags = json.loads(out.stdout)
    assert {len(f["members"]) for f in flags} == {24, 16}
    for flag in flags:
        assert set(flag) >= {"flag_id", "cluster_id", "score", "members", "rules", "evidence"}
        assert all(set(m) >= {"platform", "account_id"} for m in flag["members"])
        assert flag["detector"]["id"] and flag["detector"]["real_detector"] is False  # the demo's random backbone

    out = run_cli(*base, "flag", "set-status", flags[0]["flag_id"], "dismissed", "--note", "brand accounts",
                  home=tmp_path)
    assert out.returncode == 0, out.stderr
    out = run_cli(*base, "flags", "--status", "dismissed", "--json", home=tmp_path)
    assert [f["flag_id"] for f in json.loads(out.stdout)] == [flags[0]["flag_id"]]

    out = run_cli(*base, "quarantine", "--run-key", "cli", home=tmp_path)
    assert "2 quarantined" in out.stdout


@pytest.mark.slow
def test_manifest_without_id_columns_with_forced_format(tmp_path, database_url, demo_data):
    export = tmp_path / "export"
    export.mkdir()
    (export / "manifest.csv").write_text("user,name\n1,a\n")
    out = run_cli("--database-url", database_url, "audit", str(export), home=tmp_path)
    _one_line_error(out, "could not detect the format")
    out = run_cli("--database-url", database_url, "audit", str(export), "--format", "generic",
                  "--detector", str(demo_data["detector"]), home=tmp_path)
    _one_line_error(out, "has no platform,account_id header")


@pytest.mark.slow
def test_pretrained_tag_without_network_is_a_clear_error(tmp_path, database_url, demo_data):
    """The real loading path (model + pretrained tag) is in the code; offline it fails in one line."""
    out = run_cli("--database-url", database_url, "train-probe", "--real", str(demo_data["real"]),
                  "--fake", str(demo_data["fake"]), "--model", "ViT-B-32", "--weights", "openai", home=tmp_path)
    _one_line_error(out, "cannot load backbone ViT-B-32/openai/encode_image-l2/resize_center_crop")
    assert "pass the checkpoint file" in out.stderr
