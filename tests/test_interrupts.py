"""SIGTERM and SIGINT during an audit (issue 13, item 6): the run is marked failed with the stage, the
message is one line, and the embedded server is stopped by the last process out. Real CLI process,
real embedded PostgreSQL, a real export large enough that the signal lands inside a stage."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def big_export(folder: Path, rows: int = 300_000) -> Path:
    folder.mkdir(parents=True)
    with (folder / "manifest.csv").open("w") as fh:
        fh.write("platform,account_id,handle,bio,created_at\n")
        for i in range(rows):
            fh.write(f"x,{i},user{i},bio number {i} with some words,2024-01-{1 + i % 28:02d}\n")
    return folder


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_marks_the_run_failed_and_stops_the_embedded_server(tmp_path, demo_data, signum):
    home = tmp_path / "home"
    export = big_export(tmp_path / "export")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROFILE_AUDIT_")}
    env.update(PYTHONPATH=str(REPO), PROFILE_AUDIT_HOME=str(home), PROFILE_AUDIT_NO_PROGRESS="1", HF_HUB_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "-v", "audit", str(export), "--format", "generic",
                             "--run-key", "sig", "--detector", str(demo_data["detector"])],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stderr:  # the ingest logs every 1,000 of its 300,000 records: it is inside the stage
        lines.append(line)
        if "ingest: 1000 rec" in line:
            break
    else:
        pytest.fail("".join(lines))
    proc.send_signal(signum)
    rest = proc.stderr.read()
    proc.wait(120)
    assert proc.returncode == 128 + signum, rest
    last = rest.strip().splitlines()[-1]
    found = re.fullmatch(rf"profile-audit: interrupted by {signum.name} during stage (\w+); the run is marked failed",
                         last)
    assert found and found.group(1) == "ingest", rest
    assert "Traceback" not in rest
    pg = home / "pg"
    deadline = time.time() + 60
    while (pg / "postmaster.pid").exists() and time.time() < deadline:
        time.sleep(0.2)
    assert not (pg / "postmaster.pid").exists(), "the embedded server outlived the interrupted command"
    assert json.loads((pg / ".handle_pids.json").read_text()) == []

    from pipeline.config import load_settings
    from pipeline.core.db import dispose_engines, get_engine
    from pipeline.core.embedded import start_embedded

    settings = load_settings(env={}, shipped_detector=False, home=home)
    try:
        with get_engine(settings).connect() as conn:
            status, summary = conn.execute(sa.text("select status, summary from runs where run_key = 'sig'")).one()
        assert status == "failed" and summary["failed_stage"] == found.group(1), (status, summary)
    finally:
        dispose_engines()
        start_embedded(settings.pg_dir)[0]._cleanup()
