-- posts becomes partitioned by run: each run's posts are one partition, which ingest builds as a plain
-- table without indexes or constraints, then attaches (indexes built by sort, foreign keys checked by one
-- set-based query each), replacing the run's previous partition. Row-by-row foreign-key triggers and
-- B-tree maintenance on text keys made the load of a 10M-post export take 20 minutes (issue 15).
-- The secondary indexes posts_run_time and posts_run_repost are gone: inside one run's partition they
-- served no query (the network stage reads a run's posts whole).
alter table posts rename to posts_unpartitioned;
alter table posts_unpartitioned rename constraint posts_pkey to posts_unpartitioned_pkey;
create table posts (
    run_key         text not null references runs(run_key) on delete cascade,
    account_key     text not null references accounts(account_key),
    post_id         text not null,
    posted_at       timestamptz,
    reposted_id     text,
    quoted_id       text,
    replied_id      text,
    urls            text[] not null default '{}',
    hashtags        text[] not null default '{}',
    text            text,
    source_file     text not null,
    source_locator  text not null,
    primary key (run_key, account_key, post_id)
) partition by list (run_key);

-- rows written into posts directly (tests, tools) for a run without a partition land here; ingest moves
-- a run out of it when it builds the run's partition
create table posts_default partition of posts default;

do $$
declare
    r record;
begin
    for r in select distinct run_key from posts_unpartitioned loop
        execute 'create table ' || quote_ident('posts_' || left(md5(r.run_key), 16))
                || ' partition of posts for values in (' || quote_literal(r.run_key) || ')';
    end loop;
end $$;
insert into posts select * from posts_unpartitioned;
drop table posts_unpartitioned;
