"""Hostile configuration (issue 13, items 5 and 9): wrong types, zero batch sizes, corrupted detector
files, unparsable URLs and a database that never answers are one line and exit 2, before any stage runs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import load_settings
from pipeline.errors import UserError

REPO = Path(__file__).resolve().parent.parent


def cli(*args: str, env: dict[str, str] | None = None, home: Path | None = None) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("PROFILE_AUDIT_")}
    full.update(PYTHONPATH=str(REPO), PROFILE_AUDIT_NO_PROGRESS="1", HF_HUB_OFFLINE="1", **(env or {}))
    if home is not None:
        full["PROFILE_AUDIT_HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True, env=full,
                          timeout=120, check=False)


def one_line_error(done: subprocess.CompletedProcess, *needles: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert done.stderr.startswith("profile-audit: error: ") and done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr
    for needle in needles:
        assert needle in done.stderr, done.stderr


@pytest.mark.parametrize("env, message", [
    ({"PROFILE_AUDIT_BATCH_SIZE": "0"}, "PROFILE_AUDIT_BATCH_SIZE must be at least 1, got '0'"),
    ({"PROFILE_AUDIT_BATCH_SIZE": "lots"}, "PROFILE_AUDIT_BATCH_SIZE must be a whole number, got 'lots'"),
    ({"PROFILE_AUDIT_SCORE_WORKERS": "-1"}, "PROFILE_AUDIT_SCORE_WORKERS must be at least 0"),
    ({"PROFILE_AUDIT_CONNECT_TIMEOUT": "nan"}, "PROFILE_AUDIT_CONNECT_TIMEOUT must be at least 1"),
    ({"PROFILE_AUDIT_LOCK_TIMEOUT": "soon"}, "PROFILE_AUDIT_LOCK_TIMEOUT must be a number"),
])
def test_bad_numbers_in_the_environment(tmp_path, env, message):
    with pytest.raises(UserError, match="^" + message.replace("(", r"\(")):
        load_settings(env=env, home=tmp_path)
    one_line_error(cli("--database-url", "postgresql+psycopg2://u@127.0.0.1:1/db", "detectors", env=env,
                       home=tmp_path), message)


@pytest.mark.parametrize("toml, message", [
    ("batch_size = 0\n", "batch_size must be at least 1, got 0"),
    ("batch_size = 2.5\n", "batch_size must be a whole number, got 2.5"),
    ("batch_size = true\n", "batch_size must be a whole number, got True"),
    ("network = 3\n", "[network] in the config file must be a table"),
    ("[network]\nmin_cluster_size = \"three\"\n", "network parameter min_cluster_size must be an integer"),
    ("[network]\nclip_min_cosine = [0.9]\n", "network parameter clip_min_cosine must be a number"),
    ("[fetch]\nconcurrency = \"x\"\n", "bad value in the [fetch] settings"),
])
def test_bad_types_in_the_config_file(tmp_path, toml, message):
    (tmp_path / "config.toml").write_text(toml)
    with pytest.raises(UserError) as raised:
        load_settings(env={}, shipped_detector=False, home=tmp_path)
    assert message in str(raised.value)
    one_line_error(cli("detectors", home=tmp_path), message)


@pytest.mark.parametrize("url", ["postgresql+psycopg2://u@[::1:5432/db", "postgresql+psycopg2://u:secret@[::1/db",
                                 "postgresql+psycopg2://u@h:port/db"])
def test_unparsable_urls(tmp_path, url):
    done = cli("--database-url", url, "db", "upgrade", home=tmp_path)
    one_line_error(done, "is not a URL")
    assert "secret" not in done.stderr


def test_a_database_that_never_answers_times_out_with_one_line(tmp_path):
    """A listener that accepts the TCP connection and then says nothing (a black-holed port, a wedged
    proxy): libpq's connect_timeout ends the wait."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # never accept(): the kernel completes the handshake, nothing ever replies
        port = listener.getsockname()[1]
        done = cli("--database-url", f"postgresql+psycopg2://u:pw@127.0.0.1:{port}/db", "db", "upgrade",
                   env={"PROFILE_AUDIT_CONNECT_TIMEOUT": "1"}, home=tmp_path)
    one_line_error(done, "cannot connect to PostgreSQL", "timeout expired")
    assert ":pw@" not in done.stderr


def _saved_probe(demo_data) -> dict:
    return json.loads(Path(demo_data["detector"]).read_text())


@pytest.mark.parametrize("corrupt, message", [
    (lambda d: [d], "a saved detector is a JSON object with kind and spec, got a JSON list"),
    (lambda d: {k: v for k, v in d.items() if k != "spec"}, "the saved detector has no 'spec'"),
    (lambda d: {**d, "spec": "x"}, "spec is a JSON str, not an object"),
    (lambda d: {**d, "spec": {**d["spec"], "weight": d["spec"]["weight"][:10]}},
     "clip_probe has 10 weights but backbone pa-tiny-vit embeds 64 dimensions"),
    (lambda d: {**d, "spec": {**d["spec"], "weight": ["0.1"] * len(d["spec"]["weight"])}},
     "clip_probe weight 0 is '0.1', not a finite number"),
    (lambda d: {**d, "spec": {**d["spec"], "bias": None}}, "clip_probe bias is None"),
])
def test_corrupted_detector_files_fail_before_any_stage(tmp_path, database_url, demo_data, corrupt, message):
    path = tmp_path / "probe.json"
    path.write_text(json.dumps(corrupt(_saved_probe(demo_data))))
    from pipeline.scoring.detector_store import resolve_detector

    settings = load_settings(env={}, shipped_detector=False, home=tmp_path / "h", database_url=database_url)
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        resolve_detector(settings, str(path))
    done = cli("--database-url", database_url, "audit", str(demo_data["export"]), "--run-key", "corrupt",
               "--detector", str(path), home=tmp_path / "h")
    one_line_error(done, message)
    import sqlalchemy as sa

    from pipeline.core.db import transaction

    with transaction(settings) as conn:  # refused before the run was opened: no stage ran
        assert conn.execute(sa.text("select count(*) from runs")).scalar() == 0


def test_the_demo_probe_itself_passes_validation(demo_data):
    from detectors.validation import check_saved_detector

    check_saved_detector(_saved_probe(demo_data))


def test_a_run_locked_by_another_session_gives_one_line(tmp_path, database_url, demo_data):
    """Another session holds the run's row (a second audit of the same key, a stuck client): the audit
    gives up after lock_timeout with one line instead of waiting forever."""
    import sqlalchemy as sa

    from pipeline.core.db import ensure_schema, get_engine
    from pipeline.core.runs import start_run

    settings = load_settings(env={}, shipped_detector=False, home=tmp_path / "h", database_url=database_url)
    ensure_schema(settings)
    start_run(settings, "busy", str(demo_data["export"]), "generic")
    with get_engine(settings).connect() as holder:
        holder.execute(sa.text("select * from runs where run_key = 'busy' for update"))  # held until rollback
        done = cli("--database-url", database_url, "audit", str(demo_data["export"]), "--run-key", "busy",
                   "--detector", str(demo_data["detector"]), env={"PROFILE_AUDIT_LOCK_TIMEOUT": "1"},
                   home=tmp_path / "h")
        holder.rollback()
    assert done.returncode == 3, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("profile-audit: error: gave up waiting for a database lock"), done.stderr
