-- Dashboard views for Superset, Metabase or Grafana, and a read-only role that sees only them.
--
-- Plain views (not materialized): they are always current, need no refresh after a run, and a rerun
-- of a run key changes them exactly as it changes the tables. Their names and columns are the
-- stable interface for dashboards; the tables behind them may change (docs/reporting.md, "Dashboards").
--
-- The views are owned by the migrating user and read the tables with the owner's rights, so
-- `profile_audit_reader` needs SELECT on the views only, never on a table.

-- Repeatable: dropped and recreated whenever a file of sql/functions or sql/views changes
-- (pipeline/core/db.py), so the definition of each view is here and nowhere else.

drop view if exists dashboard_account_risk, dashboard_cluster_summary, dashboard_daily_audit, dashboard_flag_queue,
    dashboard_ingest_ledger cascade;

-- One row per account per run: the risk, why (contributions), and the cluster and flag it belongs to.
create view dashboard_account_risk as
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
       s.link_domain,
       r.detector_id,                           -- the detector pinned on the run: label rates per detector (drift)
       r.started_at                             as run_started_at
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

-- One row per cluster per run: its features as columns, and its flag if one was raised.
create view dashboard_cluster_summary as
select c.run_key,
       r.kind                                        as run_kind,
       c.cluster_id,
       c.size,
       c.score,
       (c.features ->> 'synthetic_share')::float8    as synthetic_share,
       (c.features ->> 'burst_share')::float8        as burst_share,
       (c.features ->> 'mean_risk')::float8          as mean_risk,
       (c.features ->> 'density')::float8            as density,
       c.features -> 'edge_types'                    as edge_types,
       c.features,
       f.flag_id is not null                         as flagged,
       f.flag_id,
       f.status                                      as flag_status,
       f.rules,
       f.kind                                        as flag_kind   -- 'cluster', or 'pair' (two accounts)
from clusters c
join runs r on r.run_key = c.run_key
left join flags f on f.run_key = c.run_key and f.cluster_id = c.cluster_id;

-- Counts and rates per audit day, run kind and platform. The audit day of a nightly run is its data
-- interval (as_of is the interval's end, hence the one second back); other runs count on the day
-- they started (UTC).
create view dashboard_daily_audit as
with run_day as (
    select run_key, kind,
           coalesce(((params ->> 'as_of')::timestamptz - interval '1 second') at time zone 'UTC',
                    started_at at time zone 'UTC')::date as audit_date
    from runs
    where status = 'succeeded'
), flagged as (
    select distinct m.run_key, m.account_key
    from flags f join cluster_members m on m.run_key = f.run_key and m.cluster_id = f.cluster_id
)
select d.audit_date,
       d.kind                                                        as run_kind,
       a.platform,
       count(distinct d.run_key)                                     as runs,
       count(*)                                                      as accounts,
       count(s.avatar_probability)                                   as avatars_scored,
       count(*) filter (where s.avatar_label)                        as synthetic_avatars,
       round(count(*) filter (where s.avatar_label)::numeric
             / nullif(count(s.avatar_probability), 0), 4)            as synthetic_rate,
       count(*) filter (where s.risk >= 0.5)                         as high_risk_accounts,
       count(fl.account_key)                                         as flagged_accounts,
       round(count(fl.account_key)::numeric / count(*), 4)           as flagged_rate,
       round(avg(s.risk)::numeric, 4)                                as mean_risk
from run_day d
join account_signals s on s.run_key = d.run_key
join accounts a on a.account_key = s.account_key
left join flagged fl on fl.run_key = s.run_key and fl.account_key = s.account_key
group by d.audit_date, d.kind, a.platform;

-- The investigators' queue: escalated first, then new, by score; reason per rule and cluster size.
-- Flags outlive their cluster rows (a rerun can drop a cluster an investigator handled), so size
-- falls back to the flag's own evidence.
create view dashboard_flag_queue as
select f.flag_id,
       f.run_key,
       r.kind                                                           as run_kind,
       f.cluster_id,
       f.score,
       f.status,
       case f.status when 'escalated' then 1 when 'new' then 2 when 'confirmed' then 3 else 4 end
                                                                        as priority,
       f.rules,
       f.evidence -> 'rules'                                            as rule_reasons,
       coalesce(c.size, (f.evidence #>> '{features,size}')::integer)    as size,
       (f.evidence #>> '{features,synthetic_share}')::float8            as synthetic_share,
       f.status_note,
       f.status_changed_at,
       r.started_at                                                     as run_started_at,
       f.kind                                                           -- 'cluster', or 'pair' (two accounts)
from flags f
join runs r on r.run_key = f.run_key
left join clusters c on c.run_key = f.run_key and c.cluster_id = f.cluster_id;

-- What each run's ingest made of each export file (docs/formats.md, "The ingest ledger"): units seen,
-- stored, quarantined and ignored; unbalanced files (units lost in silence) and files that gave nothing
-- are the rows to alert on.
create view dashboard_ingest_ledger as
select l.run_key,
       r.kind                                                            as run_kind,
       r.status                                                          as run_status,
       r.started_at                                                      as run_started_at,
       l.source_file,
       l.seen,
       l.inferred,
       l.stored,
       l.quarantined,
       coalesce((select sum(value::bigint) from jsonb_each_text(l.ignored)), 0)::bigint as ignored,
       l.ignored                                                         as ignored_by_reason,
       l.repaired,
       l.balanced,
       l.stored = 0 and l.ignored = '{}'::jsonb                          as gave_nothing,
       l.notes
from ingest_ledger l
join runs r on r.run_key = l.run_key;

select grant_dashboard_reader();
