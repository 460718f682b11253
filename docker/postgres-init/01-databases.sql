-- Runs once, when the postgres-data volume is first initialised (as POSTGRES_USER, in POSTGRES_DB).
-- `airflow` (Airflow's metadata) is created by the image from POSTGRES_DB; this adds the project's store.
-- Its schema is created by `profile-audit db upgrade` in the airflow-init service.
CREATE DATABASE profile_audit OWNER airflow;
