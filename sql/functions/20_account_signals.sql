-- Per-account signals and the explainable risk score (docs/signals.md: "Signals and risk").
-- Repeatable: re-applied whenever this file changes (pipeline/core/db.py). The current definition
-- of every function here is this file; numbered migrations hold tables only.

create or replace function handle_template(handle text) returns text
language sql immutable as $$
    -- 'emma_smith48213377' -> 'a_a+8digits'; 'john.doe' -> 'a.a'
    select case
        when handle is null then null
        when lower(handle) ~ '\d+$' then
            regexp_replace(regexp_replace(lower(handle), '\d+$', ''), '[a-z]+', 'a', 'g')
            || '+' || length(substring(lower(handle) from '\d+$')) || 'digits'
        else regexp_replace(regexp_replace(lower(handle), '[a-z]+', 'a', 'g'), '\d+', '9', 'g')
    end
$$;

create or replace function handle_digit_suffix(handle text) returns integer
language sql immutable as $$
    select coalesce(length(substring(coalesce(handle, '') from '\d+$')), 0)
$$;

create or replace function handle_entropy(handle text) returns double precision
language sql immutable as $$
    -- Shannon entropy of the handle's characters, in bits per character: 'aaaa' -> 0, 'x7q9k2' -> 2.58
    select case when coalesce(handle, '') = '' then null else
        round((-sum(n / total * ln(n / total)) / ln(2))::numeric, 4)::double precision end
    from (select count(*)::double precision as n, length(lower(handle))::double precision as total
          from string_to_table(lower(coalesce(handle, '')), null) as c group by c) t
$$;

create or replace function is_default_bio(bio text, handle text, display_name text) returns boolean
language sql immutable as $$
    -- empty, punctuation only, a stock phrase, or just the account's own name
    select coalesce(btrim(bio), '') = ''
        or regexp_replace(lower(bio), '[^[:alnum:]]+', '', 'g') = ''
        or regexp_replace(lower(bio), '[^[:alnum:] ]+', '', 'g') in
           ('hi', 'hello', 'hey', 'hey there', 'hello world', 'new here', 'just joined', 'bio', 'no bio', 'none',
            'n a', 'na', 'hi there', 'welcome', 'just me', 'me')
        or lower(btrim(bio)) = lower(btrim(coalesce(handle, '')))
        or lower(btrim(bio)) = lower(btrim(coalesce(display_name, '')))
$$;

create or replace function link_domain(url text) returns text
language sql immutable as $$
    -- 'https://www.Example.com/a?b' -> 'example.com'
    select nullif(lower(substring(btrim(url) from '^(?:[A-Za-z][A-Za-z0-9+.-]*://)?(?:[^/?#@\s]*@)?(?:www\.)?([^/:?#@\s]+)')), '')
$$;

create or replace function policy_value(p_params jsonb, p_path text[]) returns numeric
language plpgsql immutable as $$
    -- one number of the policy a caller passed (pipeline.config.Policy.signal_arguments: shaped as runs.params
    -- records it); the defaults live in Python only, so a missing value is an error, not a guess
declare
    v numeric := (p_params #>> p_path)::numeric;
begin
    if v is null then
        -- (no percent sign in this file: it is executed through the DB-API, which would read it as a placeholder)
        raise exception using message = 'run policy has no value at ' || p_path::text
            || '; pass the run policy''s values (pipeline.config.Policy.signal_arguments)';
    end if;
    return v;
end
$$;

-- Earlier definitions read the run's policy, detector, as-of time and lineage from runs; the caller passes them now.
drop function if exists compute_account_signals(text);
drop function if exists run_lineage(text);

-- Reads nothing from runs: the caller (pipeline.signals.aggregate.compute_account_signals) passes what the
-- run pinned at begin.
--   p_policy:   the values of the run's policy used here (pipeline.config.Policy.signal_arguments):
--               {"risk_weights": {...all twelve...}, "network": {"min_template_digits": n}}
--   p_detector: the detector pinned on the run (its image_scores are read); null: no avatar scores
--   p_as_of:    the run's as-of time (nightly: end of the data interval), else the export's own date;
--               null: the newest account creation in the export
--   p_lineage:  the run and the runs it builds on (its predecessor, that one's, ...): an account's avatar
--               history is read from these runs only, never from later or unrelated ones, so a run's
--               signals do not depend on which other runs happened to be in the database
create or replace function compute_account_signals(p_run_key text, p_policy jsonb, p_detector text,
                                                   p_as_of timestamptz, p_lineage text[]) returns integer
-- the server's default work_mem (4MB) sent every hash and sort of the statement below to disk at 1M accounts
-- (2 GB of temporary files); restored when the function returns
language plpgsql set work_mem = '256MB' as $$
declare
    v_as_of     timestamptz;
    v_digits    integer;
    v_count     integer;
    w           jsonb;  -- risk weights and cut-offs of the run's policy (pipeline.config.RiskWeights)
begin
    v_digits := policy_value(p_policy, '{network,min_template_digits}')::integer;
    w := jsonb_build_object(
        'synthetic_avatar', policy_value(p_policy, '{risk_weights,synthetic_avatar}'),
        'past_synthetic_avatar', policy_value(p_policy, '{risk_weights,past_synthetic_avatar}'),
        'gan_eye_alignment', policy_value(p_policy, '{risk_weights,gan_eye_alignment}'),
        'avatar_reuse', policy_value(p_policy, '{risk_weights,avatar_reuse}'),
        'near_duplicate_avatar', policy_value(p_policy, '{risk_weights,near_duplicate_avatar}'),
        'template_handle', policy_value(p_policy, '{risk_weights,template_handle}'),
        'new_account', policy_value(p_policy, '{risk_weights,new_account}'),
        'empty_bio', policy_value(p_policy, '{risk_weights,empty_bio}'),
        'default_bio', policy_value(p_policy, '{risk_weights,default_bio}'),
        'few_followers', policy_value(p_policy, '{risk_weights,few_followers}'),
        'new_account_days', policy_value(p_policy, '{risk_weights,new_account_days}'),
        'few_followers_below', policy_value(p_policy, '{risk_weights,few_followers_below}'));
    -- age is measured at the run's as-of time (nightly: end of the data interval), else at the export's
    -- own date (runs.export_as_of, set by ingest; both passed as p_as_of), else at the newest account
    -- creation in the export, so a rerun computes the same ages on any day
    v_as_of := coalesce(p_as_of, (select max(created_at) from account_snapshots where run_key = p_run_key));

    -- face signals come from the face stage's table when it exists; absent, the signal is null
    drop table if exists pg_temp.pa_faces;
    create temp table pa_faces (sha256 text primary key, face_count integer, gan_eye_aligned boolean,
                                usable_face boolean) on commit drop;
    if to_regclass('face_signals') is not null then
        execute 'insert into pa_faces select distinct on (f.sha256) f.sha256, f.face_count, f.gan_eye_aligned,'
                ' f.usable_face'
                ' from face_signals f where f.sha256 in'
                ' (select sha256 from account_avatars where run_key = $1 and sha256 is not null)'
                ' order by f.sha256, f.detector_id desc'
        using p_run_key;
    end if;

    delete from account_signals where run_key = p_run_key;

    insert into account_signals (
        run_key, account_key, avatar_sha256, avatar_probability, avatar_label, avatar_reuse_count,
        account_age_days, followers, following, follower_ratio, handle_template, bio_empty, risk, contributions,
        avatar_probability_max, face_count, face_gan_eye_aligned, near_duplicate_count, posts, posts_per_day,
        handle_digits, handle_entropy, bio_default, link_domain, avatar_changes, face_usable, avatar_parts)
    with base as (
        select s.account_key, s.handle, s.display_name, s.bio, s.url, s.created_at, s.followers, s.following,
               s.posts, av.sha256, sc.probability, sc.label, sc.parts, f.face_count, f.gan_eye_aligned, f.usable_face
        from account_snapshots s
        left join account_avatars av on av.run_key = s.run_key and av.account_key = s.account_key
                                    and av.status = 'stored'
        left join image_scores sc on sc.sha256 = av.sha256 and sc.detector_id = p_detector
        left join pa_faces f on f.sha256 = av.sha256
        where s.run_key = p_run_key
    ), per_image as (
        select sha256, count(*) as n from base where sha256 is not null group by sha256
    ), near as (
        -- accounts of the run whose avatar is a near-duplicate (not the same image) of this one
        select p.sha, sum(pi.n) as n
        from (select sha_a as sha, sha_b as other from avatar_near_duplicates where run_key = p_run_key
              union all
              select sha_b, sha_a from avatar_near_duplicates where run_key = p_run_key) p
        join per_image pi on pi.sha256 = p.other
        group by p.sha
    ), history as (
        select h.account_key, count(distinct h.sha256) as images, max(hs.probability) as p_max
        from account_avatars h
        left join image_scores hs on hs.sha256 = h.sha256 and hs.detector_id = p_detector
        where h.status = 'stored' and h.run_key = any(coalesce(p_lineage, array[p_run_key]))
          and h.account_key in (select account_key from base)
        group by h.account_key
    ), parts as (
        -- offset 0 keeps this a subquery of its own: each expression is computed once per account, not once
        -- per reference below (flattened, is_default_bio ran twice and the contributions three times)
        select b.*, coalesce(pi.n - 1, 0) as reuse_count, coalesce(nr.n, 0) as near_count,
               greatest(coalesce(hi.p_max, b.probability), b.probability) as p_max,
               greatest(coalesce(hi.images, 0) - 1, 0) as changes,
               extract(epoch from (v_as_of - b.created_at)) / 86400.0 as age_days,
               handle_digit_suffix(b.handle) as digits,
               is_default_bio(b.bio, b.handle, b.display_name) as default_bio
        from base b
        left join per_image pi using (sha256)
        left join near nr on nr.sha = b.sha256
        left join history hi using (account_key)
        offset 0
    ), scored as (
        -- one column per signal (null: absent); the risk is their sum, computed here rather than by reading
        -- the contributions jsonb back per account (jsonb_each_text per row cost more than the rest together)
        select p.*,
               case when p.probability is not null then round(((w->>'synthetic_avatar')::numeric * p.probability::numeric), 4) end as c_synthetic_avatar,
               case when p.p_max - coalesce(p.probability, 0) > 0.0001
                    then round(((w->>'past_synthetic_avatar')::numeric * (p.p_max - coalesce(p.probability, 0))::numeric), 4) end as c_past_synthetic_avatar,
               -- avatar evidence: the probe's probability (a face probe gives none without a face), and the
               -- eye test counted only on a usable face (Ricker et al.'s pre-filter); a face too small or
               -- too turned to judge is named, at no weight, so the reader sees why the eye test is absent
               -- a fused detector (avatar_stack) already counts the eye test in its probability: the
               -- eye test is then named at no weight, and its share is in avatar_parts
               case when p.gan_eye_aligned and p.usable_face
                    then case when p.parts ? 'eye' then 0 else (w->>'gan_eye_alignment')::numeric end end as c_gan_eye_alignment,
               case when p.face_count is not null and p.usable_face is not true then 0 end as c_no_usable_face,
               case when p.reuse_count > 0 then (w->>'avatar_reuse')::numeric end as c_avatar_reuse,
               case when p.reuse_count = 0 and p.near_count > 0 then (w->>'near_duplicate_avatar')::numeric end as c_near_duplicate_avatar,
               case when p.digits >= v_digits then (w->>'template_handle')::numeric end as c_template_handle,
               case when p.created_at is not null
                         and v_as_of - p.created_at < make_interval(days => (w->>'new_account_days')::int)
                    then (w->>'new_account')::numeric end as c_new_account,
               case when coalesce(btrim(p.bio), '') = '' then (w->>'empty_bio')::numeric end as c_empty_bio,
               case when coalesce(btrim(p.bio), '') <> '' and p.default_bio then (w->>'default_bio')::numeric end as c_default_bio,
               case when p.followers is not null and p.followers < (w->>'few_followers_below')::int
                    then (w->>'few_followers')::numeric end as c_few_followers
        from parts p
        offset 0
    )
    select p_run_key, account_key, sha256, probability, label, reuse_count,
           round(age_days::numeric, 3), followers, following,
           case when followers is not null and following is not null
                then round((followers::numeric / (following + 1)), 4) end,
           handle_template(handle), coalesce(btrim(bio), '') = '',
           -- numeric addition is exact, so this equals the sum of the contributions' values in any order
           least(1.0, coalesce(c_synthetic_avatar, 0) + coalesce(c_past_synthetic_avatar, 0)
                      + coalesce(c_gan_eye_alignment, 0) + coalesce(c_no_usable_face, 0) + coalesce(c_avatar_reuse, 0)
                      + coalesce(c_near_duplicate_avatar, 0) + coalesce(c_template_handle, 0) + coalesce(c_new_account, 0)
                      + coalesce(c_empty_bio, 0) + coalesce(c_default_bio, 0) + coalesce(c_few_followers, 0)),
           jsonb_strip_nulls(jsonb_build_object(
               'synthetic_avatar', c_synthetic_avatar, 'past_synthetic_avatar', c_past_synthetic_avatar,
               'gan_eye_alignment', c_gan_eye_alignment, 'no_usable_face', c_no_usable_face,
               'avatar_reuse', c_avatar_reuse, 'near_duplicate_avatar', c_near_duplicate_avatar,
               'template_handle', c_template_handle, 'new_account', c_new_account, 'empty_bio', c_empty_bio,
               'default_bio', c_default_bio, 'few_followers', c_few_followers)),
           p_max, face_count, gan_eye_aligned, near_count, posts,
           case when posts is not null and age_days is not null
                then round((posts / greatest(age_days, 1.0))::numeric, 4) end,
           digits,
           -- handle_entropy(handle), its body inlined: called per account, the SQL function's own executor
           -- doubled its cost (tests/test_signals.py checks the two agree)
           (select case when coalesce(handle, '') = '' then null else
                       round((-sum(n / total * ln(n / total)) / ln(2))::numeric, 4)::double precision end
            from (select count(*)::double precision as n, length(lower(handle))::double precision as total
                  from string_to_table(lower(coalesce(handle, '')), null) as c group by c) t),
           default_bio, link_domain(url), changes, usable_face, parts
    from scored;

    get diagnostics v_count = row_count;
    return v_count;
end
$$;
