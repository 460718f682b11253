"""Settings: where the data lives, which database, which detector, which thresholds.

Resolution order, first hit wins: explicit keyword arguments, environment variables
(``PROFILE_AUDIT_*``), a TOML file (``$PROFILE_AUDIT_CONFIG``, else ``$PROFILE_AUDIT_HOME/config.toml``),
then defaults. With no database URL the embedded PostgreSQL under ``$PROFILE_AUDIT_HOME/pg`` is used.
"""

from __future__ import annotations

import math
import os
import re
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
    # image, text and cluster parameters (pipeline/signals/neardup.py, edges.py, clusters.py; README "Edges")
    near_dup_max_distance: int = 6  # near_duplicate_avatar: pHash Hamming distance, of 64 bits
    clip_min_cosine: float = 0.95  # similar_embedding: cosine between two likely-synthetic avatars
    clip_max_neighbours: int = 10  # similar_embedding: nearest neighbours kept per avatar
    identical_text_max_group: int = 50  # identical_bio / identical_link: larger groups are boilerplate
    strong_edge_min_weight: float = 0.5  # a pair joins a component when its summed edge weights reach this
    leiden_min_size: int = 200  # components at least this large are split by Leiden
    leiden_resolution: float = 1.0  # Leiden (RBConfiguration) resolution: higher, smaller communities
    coactivity_share_rule: float = 0.5  # rule coordinated_activity: share of members with a co_* edge
    coactivity_min_weight: int = 3  # ... of at least this weight (weight-2 co-reposts of viral posts are chance at 1M)
    cluster_match_jaccard: float = 0.5  # a cluster keeps a previous run's id at this member overlap
    status_keep_jaccard: float = 0.8  # an investigator's status carries over at this overlap, else re-opened
    burst_factor: float = 2.0  # creation_window: a trait's accounts in one window vs its average rate
    burst_p_value: float = 0.01  # creation_window: Poisson tail of a window's count, Bonferroni over the trait group
    # co_repost / co_link / co_post edges (pipeline/networks/coactivity.py), as QUT's coordination-network-toolkit:
    # two posts co-occur when |t1 - t2| <= co_window_seconds (QUT's README works with 1 minute), and an
    # edge needs co_min_weight co-occurring posts (QUT's CLI default --min_edge_weight 2).
    co_window_seconds: float = 60.0
    co_min_weight: int = 2
    co_evidence_examples: int = 5  # example post pairs kept in each edge's evidence (plus the total count)

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
class FetchParams:
    """Limits of avatar URL fetching (TOML table ``[fetch]``). There is deliberately no setting that
    allows private or loopback destinations: see pipeline/images/fetch.py."""

    concurrency: int = 16  # requests in flight
    per_host_rate: float = 10.0  # request starts per second to one host (0 = unlimited)
    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    total_timeout: float = 60.0  # per URL, retries and redirects included
    max_bytes: int = 10 * 1024 * 1024
    max_redirects: int = 3
    retries: int = 3  # on 429, 5xx and connection errors
    backoff: float = 0.5  # seconds, doubled per retry
    max_retry_after: float = 30.0  # a longer Retry-After gives up instead of waiting

    @classmethod
    def from_mapping(cls, values: dict[str, Any] | None) -> "FetchParams":
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise UserError(f"unknown fetch setting(s) {sorted(unknown)} in [fetch]; known: {sorted(known)}")
        default = cls()
        try:
            params = cls(**{k: type(getattr(default, k))(v) for k, v in values.items()})
        except (TypeError, ValueError) as exc:
            raise UserError(f"bad value in the [fetch] settings: {exc}") from None
        if params.concurrency < 1 or params.max_bytes < 1 or params.retries < 0 or params.max_redirects < 0:
            raise UserError("[fetch] concurrency and max_bytes must be at least 1, retries and max_redirects at least 0")
        return params


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str | None = None
    landing_dir: Path = Path("/opt/profile-audit/landing")  # the nightly DAG reads <landing_dir>/<YYYY-MM-DD>/
    detector: str | None = None  # detector id or path to a saved detector JSON; None = the promoted default
    batch_size: int = 64
    torch_threads: int | None = None
    score_workers: int = 2  # decode/preprocess threads that feed inference (0 = no overlap)
    device: str | None = None  # 'cuda', 'cpu', ...; None = CUDA with fp16 when available, else the CPU
    face_signals: bool = True  # the score stage also runs the face detector (face_signals table)
    connect_timeout: float = 10.0  # seconds to reach PostgreSQL (a listener that never answers fails, not hangs)
    lock_timeout: float = 60.0  # seconds a statement waits for a lock another session holds, then fails
    network: NetworkParams = field(default_factory=NetworkParams)
    fetch: FetchParams = field(default_factory=FetchParams)

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

    def number(name: str, default: Any, minimum: float, kind: type = int) -> Any:
        """A numeric setting, checked now (before any stage runs) with where it came from."""
        value = pick(name, default)
        if value is None:
            return None
        where = (f"{ENV_PREFIX}{name.upper()}" if overrides.get(name) is None and env.get(ENV_PREFIX + name.upper())
                 else name)
        try:
            if isinstance(value, bool) or (kind is int and isinstance(value, float)):
                raise ValueError
            parsed = kind(str(value).strip()) if isinstance(value, str) else kind(value)
        except (TypeError, ValueError):
            raise UserError(f"{where} must be a {'whole ' if kind is int else ''}number, got {value!r}") from None
        if parsed < minimum or (kind is float and math.isnan(parsed)):
            raise UserError(f"{where} must be at least {minimum:g}, got {value!r}")
        return parsed

    url = pick("database_url")
    if url:
        validate_database_url(url)
    landing = pick("landing_dir", "/opt/profile-audit/landing")
    threads = pick("torch_threads")
    for name in ("network", "fetch"):
        if not isinstance(section.get(name, {}), dict):
            raise UserError(f"[{name}] in the config file must be a table of settings, got {section[name]!r}")
    try:
        network = NetworkParams.from_mapping(section.get("network"))
    except (TypeError, ValueError) as exc:
        raise UserError(f"bad value in the [network] settings: {exc}") from None
    return Settings(
        home=home.expanduser().resolve(),
        database_url=url,
        landing_dir=Path(landing).expanduser(),
        detector=pick("detector"),
        batch_size=number("batch_size", 64, 1),
        torch_threads=number("torch_threads", None, 1) if threads else None,
        score_workers=number("score_workers", 2, 0),
        device=pick("device") or None,
        face_signals=str(pick("face_signals", True)).strip().lower() not in ("0", "false", "no", "off"),
        connect_timeout=number("connect_timeout", 10.0, 1, float),
        lock_timeout=number("lock_timeout", 60.0, 0.001, float),
        network=network,
        fetch=FetchParams.from_mapping(section.get("fetch")),
    )


def validate_database_url(url: str) -> str:
    """Refuse URLs that would silently pick the wrong driver or are not Postgres at all."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
        _ = parsed.port  # make_url parses the port lazily in some versions
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number ("[::1:5432" lacks its "]")
        shown = re.sub(r"(//[^:/@]*:)[^@]*@", r"\1***@", url)  # never echo a password
        raise UserError(
            f"database URL {shown!r} is not a URL; expected postgresql+psycopg2://USER:PASSWORD@HOST:PORT/DB"
        ) from None
    if parsed.drivername != "postgresql+psycopg2":
        raise UserError(
            f"database URL uses driver {parsed.drivername!r}; use postgresql+psycopg2://USER:PASSWORD@HOST:PORT/DB"
        )
    return url
