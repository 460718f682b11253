-- Richer per-account signals (columns) and near-duplicate avatar pairs. The function that fills
-- them, compute_account_signals, is in sql/functions/20_account_signals.sql.

alter table account_signals
    add column if not exists avatar_probability_max double precision,  -- max over the account's avatar history
    add column if not exists face_count integer,                        -- from face_signals, when present
    add column if not exists face_gan_eye_aligned boolean,              -- GAN eye-position test (face_signals)
    add column if not exists near_duplicate_count integer not null default 0,  -- other accounts, near-dup avatar
    add column if not exists posts bigint,
    add column if not exists posts_per_day double precision,
    add column if not exists handle_digits integer,                     -- length of the trailing digit run
    add column if not exists handle_entropy double precision,           -- Shannon entropy, bits per character
    add column if not exists bio_default boolean,                       -- empty, a stock phrase, or the handle
    add column if not exists link_domain text,
    add column if not exists avatar_changes integer not null default 0; -- distinct avatars in history minus one

-- Pairs of distinct images of one run whose 64-bit pHashes differ in at most `near_dup_max_distance`
-- bits; written by the aggregate stage (pipeline/signals/neardup.py), read by signals and the network stage.
create table if not exists avatar_near_duplicates (
    run_key     text not null references runs(run_key) on delete cascade,
    sha_a       text not null references images(sha256),
    sha_b       text not null references images(sha256),
    distance    integer not null,
    primary key (run_key, sha_a, sha_b),
    check (sha_a < sha_b)
);
