-- The read-only dashboard role and its grants. Repeatable: re-applied whenever a file of sql/functions
-- or sql/views changes; sql/views/dashboards.sql calls it after recreating the views.

-- The reader role. Roles are cluster-wide while this migration runs once per database, so creating
-- it must tolerate an existing role (and a concurrent migration of another database). Where the
-- migrating user may not create roles, an administrator creates it and runs
-- `select grant_dashboard_reader();` again in this database.
create or replace function grant_dashboard_reader() returns boolean
language plpgsql as $$
begin
    if not exists (select 1 from pg_roles where rolname = 'profile_audit_reader') then
        begin
            create role profile_audit_reader nologin;
        exception
            when duplicate_object or unique_violation then
                null;  -- created meanwhile by a migration of another database
            when insufficient_privilege then
                raise warning using message = 'cannot create role profile_audit_reader (' || sqlerrm
                    || '); ask an administrator to run "create role profile_audit_reader nologin",'
                    || ' then "select grant_dashboard_reader()" in this database';
                return false;
        end;
    end if;
    -- no percent signs in migrations: the driver formats the migration text
    execute 'grant usage on schema ' || quote_ident(current_schema()) || ' to profile_audit_reader';
    grant select on dashboard_account_risk, dashboard_cluster_summary, dashboard_daily_audit,
                    dashboard_flag_queue, dashboard_ingest_ledger to profile_audit_reader;
    execute 'grant connect on database ' || quote_ident(current_database()) || ' to profile_audit_reader';
    -- Nothing else. PostgreSQL grants TEMP on every database and CONNECT to every database to PUBLIC,
    -- and has no per-role deny, so these are taken from PUBLIC: the owner, superusers and roles granted
    -- them explicitly keep them (the migrating user is granted TEMP here, for the ingest's staging tables).
    -- The migration lock is a table lock on schema_migrations (pipeline/core/db.py), which the reader
    -- cannot take; advisory locks are left alone (other software in the database may rely on them).
    begin
        execute 'grant temporary on database ' || quote_ident(current_database()) || ' to ' || quote_ident(current_user);
        execute 'revoke temporary on database ' || quote_ident(current_database()) || ' from public';
    exception when insufficient_privilege then
        raise warning using message = 'cannot revoke TEMP on this database from PUBLIC (' || sqlerrm
            || '); the dashboard role can create temporary tables until an owner runs "select grant_dashboard_reader()"';
    end;
    declare
        other text;
    begin
        for other in select datname from pg_database where datname <> current_database() and datallowconn loop
            begin
                execute 'revoke connect on database ' || quote_ident(other) || ' from public';
            exception when insufficient_privilege then
                raise warning using message = 'cannot revoke CONNECT on database ' || other || ' from PUBLIC ('
                    || sqlerrm || '); run "revoke connect on database ' || other || ' from public" as its owner';
            end;
        end loop;
    end;
    return true;
end
$$;
revoke execute on function grant_dashboard_reader() from public;
