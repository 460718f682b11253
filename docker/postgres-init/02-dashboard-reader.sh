#!/bin/bash
# Runs once, when the postgres-data volume is first initialised. Creates the read-only dashboard
# role (sql/views/dashboards.sql grants it SELECT on the dashboard_* views when
# `profile-audit db upgrade` runs) and the login user Grafana connects as.
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v reader_user="${PROFILE_AUDIT_GRAFANA_DB_USER:-grafana_reader}" \
     -v reader_password="${PROFILE_AUDIT_GRAFANA_DB_PASSWORD:-grafana_reader}" <<'SQL'
CREATE ROLE profile_audit_reader NOLOGIN;
CREATE ROLE :"reader_user" LOGIN PASSWORD :'reader_password' IN ROLE profile_audit_reader;
-- a dashboard session cannot hold a view (and so a schema upgrade) for long
ALTER ROLE :"reader_user" SET idle_in_transaction_session_timeout = '60s';
ALTER ROLE :"reader_user" SET statement_timeout = '120s';
SQL
