-- Issue 24: the ingest ledger. Per run and export file: the units (records, lines, activities) the reader
-- saw, and what became of them. seen + inferred = stored + quarantined + sum(ignored); a file where it does
-- not is a warning (units lost in silence). Written by the ingest stage, replaced on a rerun.
create table ingest_ledger (
    run_key      text not null references runs(run_key) on delete cascade,
    source_file  text not null,
    seen         bigint not null,
    inferred     bigint not null default 0,  -- accounts known only as authors of posts (no unit of their own)
    stored       bigint not null,            -- account snapshots and posts naming the file
    quarantined  bigint not null,            -- quarantine rows naming the file (reader and database)
    ignored      jsonb not null default '{}'::jsonb,  -- reason -> units the format defines as not an account or post
    repaired     bigint not null default 0,  -- records stored with invalid UTF-8 replaced or NULs removed
    notes        text[] not null default '{}',  -- what the reader found odd about the file (warnings)
    balanced     boolean not null,
    primary key (run_key, source_file)
);
