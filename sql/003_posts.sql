-- Posts from the readers that yield them (today the X/Twitter IO tweets CSV and X/Twitter personal archives).
-- The network stage builds co-repost, co-link and co-post edges from this table, with the same
-- meanings as QUT's coordination-network-toolkit (co_retweet, co_link, co_tweet).
create table posts (
    run_key         text not null references runs(run_key) on delete cascade,
    account_key     text not null references accounts(account_key),
    post_id         text not null,             -- platform post id, as written in the export
    posted_at       timestamptz,               -- UTC
    reposted_id     text,                      -- id of the post this one reposts (retweet/boost)
    quoted_id       text,
    replied_id      text,
    urls            text[] not null default '{}',   -- expanded URLs as in the export
    hashtags        text[] not null default '{}',   -- lower-case, without '#'
    text            text,
    source_file     text not null,
    source_locator  text not null,
    primary key (run_key, account_key, post_id)
);
create index posts_run_time on posts (run_key, posted_at);
create index posts_run_repost on posts (run_key, reposted_id) where reposted_id is not null;
