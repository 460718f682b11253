-- Core schema of the audit pipeline, in the order of the stage table (pipeline/stages.py):
-- runs -> accounts/snapshots -> images/avatars -> embeddings/scores -> signals -> edges/clusters -> flags.
-- Keys are natural (run_key, account_key, sha256, detector_id) so that a rerun of the same run key
-- rewrites the same rows instead of adding new ones.

create table runs (
    run_key         text primary key,          -- 'nightly:2026-03-04', 'investigation:<id>', 'export:<hash>'
    kind            text not null check (kind in ('nightly', 'investigation', 'adhoc')),
    export_path     text,
    export_format   text,
    params          jsonb not null default '{}'::jsonb,   -- thresholds and detector used: provenance
    detector_id     text,
    status          text not null default 'running' check (status in ('running', 'succeeded', 'failed')),
    summary         jsonb not null default '{}'::jsonb,
    started_at      timestamptz not null default now(),   -- volatile: changes on every attempt
    finished_at     timestamptz
);

create table accounts (
    account_key     text primary key,          -- '<platform>:<account_id>'
    platform        text not null,
    account_id      text not null,
    first_seen_run  text not null references runs(run_key),
    unique (platform, account_id)
);

-- One row per account per run: what the export said about the account at that time.
create table account_snapshots (
    run_key         text not null references runs(run_key) on delete cascade,
    account_key     text not null references accounts(account_key),
    handle          text,
    display_name    text,
    bio             text,
    url             text,
    location        text,
    created_at      timestamptz,
    followers       bigint,
    following       bigint,
    posts           bigint,
    language        text,
    avatar_ref      text,                      -- path, zip member or URL as written in the export
    source_file     text not null,
    source_locator  text not null,             -- line or record number inside source_file
    primary key (run_key, account_key)
);
create index account_snapshots_account on account_snapshots (account_key);

-- Content-addressed image store: one row per distinct original byte string.
create table images (
    sha256          text primary key,
    byte_size       integer not null,
    width           integer not null,
    height          integer not null,
    format          text not null,             -- sniffed from the bytes, not the file name
    phash           text not null,             -- 64-bit perceptual hash, hex
    storage_path    text not null              -- relative to $PROFILE_AUDIT_HOME/images
);

-- Which image each account showed in each run (history: an avatar change is a signal).
create table account_avatars (
    run_key         text not null references runs(run_key) on delete cascade,
    account_key     text not null references accounts(account_key),
    avatar_ref      text not null,
    sha256          text references images(sha256),
    status          text not null check (status in ('stored', 'failed')),
    reason          text,
    primary key (run_key, account_key)
);
create index account_avatars_sha on account_avatars (sha256);

create table detectors (
    detector_id     text primary key,          -- '<kind>-v<version>:<16 hex of sha256(spec)>', stable for identical detectors
    kind            text not null,
    version         text not null,
    backbone_id     text,
    spec            jsonb not null,            -- the whole saved detector: head, calibration, threshold
    metrics         jsonb not null default '{}'::jsonb,
    is_default      boolean not null default false,
    created_at      timestamptz not null default now()
);
create unique index detectors_one_default on detectors (is_default) where is_default;

-- Embedding cache per (image, backbone): a new head over the same backbone needs no forward pass.
create table embeddings (
    sha256          text not null references images(sha256),
    backbone_id     text not null,
    dim             integer not null,
    vector          real[] not null,
    primary key (sha256, backbone_id)
);

create table image_scores (
    sha256          text not null references images(sha256),
    detector_id     text not null references detectors(detector_id),
    probability     double precision not null,  -- calibrated P(generated)
    label           boolean not null,           -- probability >= the detector's threshold
    reason          text not null,
    primary key (sha256, detector_id)
);

create table account_signals (
    run_key             text not null references runs(run_key) on delete cascade,
    account_key         text not null references accounts(account_key),
    avatar_sha256       text,
    avatar_probability  double precision,
    avatar_label        boolean,
    avatar_reuse_count  integer not null default 0,  -- other accounts in the run showing the same image
    account_age_days    double precision,
    followers           bigint,
    following           bigint,
    follower_ratio      double precision,
    handle_template     text,                        -- e.g. 'alpha+8digits'
    bio_empty           boolean not null,
    risk                double precision not null,
    contributions       jsonb not null,              -- signal -> share of the risk: explains the score
    primary key (run_key, account_key)
);

create table edges (
    run_key         text not null references runs(run_key) on delete cascade,
    edge_type       text not null,
    a_key           text not null references accounts(account_key),
    b_key           text not null references accounts(account_key),
    weight          double precision not null,
    params          jsonb not null,            -- the thresholds that made this edge
    evidence        jsonb not null,            -- hashes, timestamps or values linking the pair
    primary key (run_key, edge_type, a_key, b_key),
    check (a_key < b_key)
);

create table clusters (
    run_key         text not null references runs(run_key) on delete cascade,
    cluster_id      text not null,             -- hash of the sorted member keys: stable across reruns
    size            integer not null,
    score           double precision not null,
    features        jsonb not null,
    primary key (run_key, cluster_id)
);

create table cluster_members (
    run_key         text not null,
    cluster_id      text not null,
    account_key     text not null references accounts(account_key),
    primary key (run_key, cluster_id, account_key),
    foreign key (run_key, cluster_id) references clusters(run_key, cluster_id) on delete cascade
);

create table flags (
    flag_id         text primary key,          -- hash of (run_key, cluster_id): a rerun updates, not duplicates
    run_key         text not null references runs(run_key) on delete cascade,
    cluster_id      text not null,
    score           double precision not null,
    rules           text[] not null,
    evidence        jsonb not null,
    status          text not null default 'new'
                    check (status in ('new', 'confirmed', 'dismissed', 'escalated')),
    status_note     text,
    status_changed_at timestamptz
    -- no foreign key to clusters: a rerun rebuilds clusters, and the investigator status must survive it
);
create index flags_status on flags (status);

-- Rejected records and images: never stop the run, always say which record and why.
create table quarantine (
    run_key         text not null references runs(run_key) on delete cascade,
    stage           text not null,             -- 'ingest' or 'images': a rerun of a stage replaces its rows
    source_file     text not null,
    locator         text not null,             -- line, record number, zip member or URL
    reason          text not null,
    excerpt         text not null,             -- bounded excerpt of the raw text
    primary key (run_key, stage, source_file, locator, reason)
);
