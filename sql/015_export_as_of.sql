-- The date an export states for itself (archive manifest, repository commit, newest post, file time),
-- written by the ingest stage. Account ages of a run without an explicit as-of are measured at it,
-- so a personal archive's account is not "0 days old" (see docs/formats.md, "Account age").
alter table runs add column export_as_of timestamptz;
alter table runs add column export_as_of_source text;  -- e.g. 'data/manifest.js archiveInfo.generationDate'
