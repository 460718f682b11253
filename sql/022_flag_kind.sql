-- Issue 23, item 3: a flag is a cluster, or a pair of accounts (below min_cluster_size) reported on a
-- co-activity edge that chance does not explain (pipeline/flags/rules.py, rule coordinated_pair). Flags
-- raised before this migration are all clusters.
alter table flags add column kind text not null default 'cluster' check (kind in ('cluster', 'pair'));
