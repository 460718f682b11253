"""Settings resolution: keyword > environment > TOML file > defaults."""

from __future__ import annotations

import re

import pytest

from pipeline.config import NetworkParams, load_settings
from pipeline.errors import UserError

URL = "postgresql+psycopg2://u:p@db.example:5432/audit"


def test_defaults_use_embedded_database(tmp_path):
    s = load_settings(env={"PROFILE_AUDIT_HOME": str(tmp_path)})
    assert s.database_url is None and s.home == tmp_path.resolve() and s.pg_dir == tmp_path.resolve() / "pg"
    assert s.network == NetworkParams()


def test_toml_file_then_environment_then_keywords(tmp_path):
    (tmp_path / "config.toml").write_text(
        f'database_url = "{URL}"\nbatch_size = 16\n[network]\nmin_cluster_size = 5\n')
    s = load_settings(env={"PROFILE_AUDIT_HOME": str(tmp_path)})
    assert (s.database_url, s.batch_size, s.network.min_cluster_size) == (URL, 16, 5)
    other = URL.replace("audit", "other")
    s = load_settings(env={"PROFILE_AUDIT_HOME": str(tmp_path), "PROFILE_AUDIT_DATABASE_URL": other,
                           "PROFILE_AUDIT_BATCH_SIZE": "8"})
    assert (s.database_url, s.batch_size) == (other, 8)
    assert load_settings(env={"PROFILE_AUDIT_HOME": str(tmp_path)}, batch_size=4).batch_size == 4


def test_explicit_config_path(tmp_path):
    cfg = tmp_path / "elsewhere.toml"
    cfg.write_text(f'[profile_audit]\ndatabase_url = "{URL}"\nlanding_dir = "/data/landing"\n')
    s = load_settings(env={"PROFILE_AUDIT_HOME": str(tmp_path), "PROFILE_AUDIT_CONFIG": str(cfg)})
    assert s.database_url == URL and str(s.landing_dir) == "/data/landing"
    with pytest.raises(UserError, match="not a file"):
        load_settings(env={"PROFILE_AUDIT_CONFIG": str(tmp_path / "missing.toml")})


@pytest.mark.parametrize("url,message", [
    ("postgresql://u@h/db", "postgresql+psycopg2://"),
    ("sqlite:///x.db", "uses driver 'sqlite'"),
    ("::::", "is not a URL"),
])
def test_bad_urls(url, message, tmp_path):
    with pytest.raises(UserError, match=re.escape(message)):
        load_settings(env={"PROFILE_AUDIT_HOME": str(tmp_path), "PROFILE_AUDIT_DATABASE_URL": url})


def test_unknown_network_parameter(tmp_path):
    (tmp_path / "config.toml").write_text("[network]\nmin_cluster_sise = 5\n")
    with pytest.raises(UserError, match="unknown network parameter"):
        load_settings(env={"PROFILE_AUDIT_HOME": str(tmp_path)})
