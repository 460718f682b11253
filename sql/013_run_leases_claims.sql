-- Issue 12: runs that hold under a real scheduler.
-- The run row is the run's single source of truth, pinned at `begin`: who owns it (the lease), which
-- run it inherits cluster ids and investigator statuses from, and which stages are done.
alter table runs
    add column owner         text,                          -- 'cli:<host>:<pid>:<token>' or 'airflow:<dag>/<run>'
    add column predecessor   text,                          -- nightly: the previous day's run key, fixed at begin
    add column shard_count   integer not null default 1,
    add column airflow       jsonb not null default '{}'::jsonb,  -- dag_id, run_id, try_number
    add column stages_done   text[] not null default '{}',
    add column heartbeat_at  timestamptz;                   -- volatile: the owner's last sign of life

-- 'skipped': a nightly day with no export; it is still a link in the lineage chain.
alter table runs drop constraint runs_status_check;
alter table runs add constraint runs_status_check check (status in ('running', 'succeeded', 'failed', 'skipped'));

-- The score stage claims an image before it embeds it, so concurrent runs and shards never embed one
-- image twice for the same detector: `insert ... on conflict do nothing` decides who does the work.
create table image_claims (
    sha256          text not null references images(sha256),
    detector_id     text not null references detectors(detector_id),
    run_key         text not null,              -- who claimed it (no FK: a claim outlives a rerun's delete)
    claimed_at      timestamptz not null default now(),
    primary key (sha256, detector_id)
);
