"""`profile-audit evidence` and `profile-audit flags` / `flag set-status` on a planted run, through the real CLI."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.testing import planted

pytestmark = pytest.mark.slow  # a planted population through the network stages, then the CLI


def run_cli(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PROFILE_AUDIT_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)


@pytest.fixture
def audited(settings, database_url):
    pop = planted.generate(settings, "ev", organic=200, seed=9)
    planted.run_network_stages(settings, "ev")
    return pop


def _flags(database_url, home):
    out = run_cli("--database-url", database_url, "flags", "--run-key", "ev", "--json", home=home)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_evidence_json_has_members_edges_and_flag(audited, database_url, tmp_path):
    # the co-repost ring's flag (the planted pairs' flags, kind pair, fire coordinated_activity too)
    flag = next(f for f in _flags(database_url, tmp_path) if "coordinated_activity" in f["rules"] and f["kind"] == "cluster")
    out = run_cli("--database-url", database_url, "evidence", flag["cluster_id"], home=tmp_path)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["run_key"] == "ev" and data["flag"]["flag_id"] == flag["flag_id"]
    members = {m["account_key"] for m in data["members"]}
    assert len(members) == data["size"] == len(flag["members"])
    assert all(audited.truth[m] == "corepost_ring" for m in members)
    co = [e for e in data["edges"] if e["edge_type"] == "co_repost"]
    assert co and all(e["a_key"] in members and e["b_key"] in members for e in data["edges"])
    assert all(e["params"]["co_window_seconds"] == 60 and e["evidence"] for e in co)
    assert data["flag"]["reasons"]["coordinated_activity"].startswith(f"{len(members)}/{len(members)} accounts")


def test_evidence_csv_files(audited, database_url, tmp_path):
    flag = next(f for f in _flags(database_url, tmp_path) if "shared_avatar" in f["rules"])
    out = run_cli("--database-url", database_url, "evidence", flag["cluster_id"], "--run-key", "ev",
                  "--format", "csv", "--out", str(tmp_path / "case"), home=tmp_path)
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in (tmp_path / "case").iterdir()) == ["cluster.csv", "edges.csv", "members.csv"]
    with (tmp_path / "case" / "members.csv").open() as fh:
        members = list(csv.DictReader(fh))
    with (tmp_path / "case" / "edges.csv").open() as fh:
        edges = list(csv.DictReader(fh))
    with (tmp_path / "case" / "cluster.csv").open() as fh:
        [cluster] = list(csv.DictReader(fh))
    assert len(members) == len(flag["members"]) and all(m["avatar_sha256"] for m in members)
    assert all(json.loads(m["contributions"]) for m in members)
    types = {e["edge_type"] for e in edges}
    assert "identical_avatar" in types and all(json.loads(e["evidence"]) for e in edges)
    assert cluster["flag_id"] == flag["flag_id"] and "shared_avatar" in json.loads(cluster["rules"])


def test_set_status_then_list_by_status(audited, database_url, tmp_path):
    flag = _flags(database_url, tmp_path)[0]
    out = run_cli("--database-url", database_url, "flag", "set-status", flag["flag_id"], "escalated", "--note",
                  "to legal", home=tmp_path)
    assert out.returncode == 0, out.stderr
    listed = run_cli("--database-url", database_url, "flags", "--status", "escalated", "--json", home=tmp_path)
    [only] = json.loads(listed.stdout)
    assert only["flag_id"] == flag["flag_id"] and only["status_note"] == "to legal"


def test_evidence_mistakes_are_one_line_errors(audited, database_url, tmp_path):
    out = run_cli("--database-url", database_url, "evidence", "cnope", home=tmp_path)
    assert out.returncode == 2 and out.stderr.startswith("profile-audit: error: no cluster 'cnope'")
    assert len(out.stderr.strip().splitlines()) == 1
    flag = _flags(database_url, tmp_path)[0]
    (tmp_path / "afile").write_text("x")
    out = run_cli("--database-url", database_url, "evidence", flag["cluster_id"], "--format", "csv", "--out",
                  str(tmp_path / "afile"), home=tmp_path)
    assert out.returncode == 2 and "give --out a folder" in out.stderr
    out = run_cli("--database-url", database_url, "evidence", flag["cluster_id"], "--run-key", "other", home=tmp_path)
    # a run key the database does not have is said first, whatever the cluster (issue 24: every command)
    assert out.returncode == 2 and "no run 'other' in this database" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
