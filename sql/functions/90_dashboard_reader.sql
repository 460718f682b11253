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
                    dashboard_flag_queue to profile_audit_reader;
    return true;
end
$$;
revoke execute on function grant_dashboard_reader() from public;
