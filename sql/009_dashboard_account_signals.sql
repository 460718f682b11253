-- dashboard_account_risk gains the richer account signals of 006_network_signals.sql.
-- `create or replace view` may only append columns, so the columns of 007 keep their names and
-- order (dashboards that select them are unaffected), and the reader's SELECT grant is kept.
create or replace view dashboard_account_risk as
select s.run_key,
       r.kind                                   as run_kind,
       a.platform,
       a.account_id,
       s.account_key,
       sn.handle,
       sn.display_name,
       sn.created_at,
       s.account_age_days,
       s.followers,
       s.following,
       s.avatar_sha256,
       s.avatar_probability,
       s.avatar_label                           as avatar_synthetic,
       s.avatar_reuse_count,
       s.handle_template,
       s.bio_empty,
       s.risk,
       s.contributions,
       cm.cluster_id,
       cm.flag_id,
       cm.flag_status,
       s.avatar_probability_max,
       s.near_duplicate_count,
       s.avatar_changes,
       s.face_count,
       s.posts,
       s.posts_per_day,
       s.handle_digits,
       s.handle_entropy,
       s.bio_default,
       s.link_domain
from account_signals s
join runs r on r.run_key = s.run_key
join accounts a on a.account_key = s.account_key
left join account_snapshots sn on sn.run_key = s.run_key and sn.account_key = s.account_key
left join lateral (
    select m.cluster_id, f.flag_id, f.status as flag_status
    from cluster_members m
    left join flags f on f.run_key = m.run_key and f.cluster_id = m.cluster_id
    where m.run_key = s.run_key and m.account_key = s.account_key
    order by f.score desc nulls last, m.cluster_id
    limit 1
) cm on true;
