"""Settings: where the data lives, which database, which detector, which thresholds.

Resolution order, first hit wins: explicit keyword arguments, environment variables
(``PROFILE_AUDIT_*``), a TOML file (``$PROFILE_AUDIT_CONFIG``, else ``$PROFILE_AUDIT_HOME/config.toml``),
then defaults. With no database URL the embedded PostgreSQL under ``$PROFILE_AUDIT_HOME/pg`` is used.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from pipeline.errors import UserError

ENV_PREFIX = "PROFILE_AUDIT_"


@dataclass(frozen=True)
class NetworkParams:
    """Thresholds of the network and flag stages; recorded with every run for provenance."""

    creation_window_hours: float = 48.0
    min_template_digits: int = 6
    identical_avatar_max_group: int = 1000
    min_cluster_size: int = 3
    flag_score_threshold: float = 0.5
    synthetic_share_rule: float = 0.5  # rule synthetic_faces: share of members with a synthetic avatar
    burst_share_rule: float = 0.5  # rule batch_created: largest one-day share of creation dates
    template_share_rule: float = 0.5  # rule templated_handles: share of members with one handle template

    @classmethod
    def from_mapping(cls, values: dict[str, Any] | None) -> "NetworkParams":
        values = dict(values or {})
        known = {f.name: f.type for f in fields(cls)}
        unknown = set(values) - set(known)
        if unknown:
            raise UserError(f"unknown network parameter(s) {sorted(unknown)}; known: {sorted(known)}")
        default = cls()
        return cls(**{k: type(getattr(default, k))(v) for k, v in values.items()})

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str | None = None
    landing_dir: Path = Path("/opt/profile-audit/landing")  # the nightly DAG reads <landing_dir>/<YYYY-MM-DD>/
    detector: str | None = None  # detector id or path to a saved detector JSON; None = the promoted default
    batch_size: int = 64
    torch_threads: int | None = None
    network: NetworkParams = field(default_factory=NetworkParams)

    @property
    def image_dir(self) -> Path:
        return self.home / "images"

    @property
    def detector_dir(self) -> Path:
        return self.home / "detectors"

    @property
    def pg_dir(self) -> Path:
        return self.home / "pg"


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"config file {path} is not valid TOML: {exc}") from None


def load_settings(env: dict[str, str] | None = None, **overrides: Any) -> Settings:
    """Build Settings from keyword overrides, the environment and the optional TOML file."""
    env = dict(os.environ if env is None else env)
    home = Path(overrides.pop("home", None) or env.get(ENV_PREFIX + "HOME") or Path.home() / ".profile-audit")
    config_path = env.get(ENV_PREFIX + "CONFIG")
    file_values: dict[str, Any] = {}
    if config_path:
        if not Path(config_path).is_file():
            raise UserError(f"{ENV_PREFIX}CONFIG points at {config_path}, which is not a file")
        file_values = _read_toml(Path(config_path))
    elif (home / "config.toml").is_file():
        file_values = _read_toml(home / "config.toml")
    section = file_values.get("profile_audit", file_values)

    def pick(name: str, default: Any = None) -> Any:
        if overrides.get(name) is not None:
            return overrides[name]
        if env.get(ENV_PREFIX + name.upper()):
            return env[ENV_PREFIX + name.upper()]
        return section.get(name, default)

    url = pick("database_url")
    if url:
        validate_database_url(url)
    landing = pick("landing_dir", "/opt/profile-audit/landing")
    threads = pick("torch_threads")
    return Settings(
        home=home.expanduser().resolve(),
        database_url=url,
        landing_dir=Path(landing).expanduser(),
        detector=pick("detector"),
        batch_size=int(pick("batch_size", 64)),
        torch_threads=int(threads) if threads else None,
        network=NetworkParams.from_mapping(section.get("network")),
    )


def validate_database_url(url: str) -> str:
    """Refuse URLs that would silently pick the wrong driver or are not Postgres at all."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise UserError(
            f"database URL {url!r} is not a URL; expected postgresql+psycopg2://USER:PASSWORD@HOST:PORT/DB"
        ) from None
    if parsed.drivername != "postgresql+psycopg2":
        raise UserError(
            f"database URL uses driver {parsed.drivername!r}; use postgresql+psycopg2://USER:PASSWORD@HOST:PORT/DB"
        )
    return url
