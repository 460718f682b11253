-- Per-account signals for one run, computed in Postgres.
-- The risk score is a documented weighted sum; `contributions` records each signal's share so an
-- investigator can see why an account scored as it did (README: "Account risk").

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

create or replace function compute_account_signals(p_run_key text) returns integer
language plpgsql as $$
declare
    v_detector  text;
    v_params    jsonb;
    v_as_of     timestamptz;
    v_digits    integer;
    v_count     integer;
begin
    select detector_id, params into v_detector, v_params from runs where run_key = p_run_key;
    v_digits := coalesce((v_params #>> '{network,min_template_digits}')::integer, 6);
    -- age is measured at the run's as-of time (nightly: end of the data interval), else at the newest
    -- account creation in the export, so a rerun computes the same ages on any day
    v_as_of := coalesce(
        (v_params ->> 'as_of')::timestamptz,
        (select max(created_at) from account_snapshots where run_key = p_run_key));

    delete from account_signals where run_key = p_run_key;

    insert into account_signals (
        run_key, account_key, avatar_sha256, avatar_probability, avatar_label, avatar_reuse_count,
        account_age_days, followers, following, follower_ratio, handle_template, bio_empty, risk, contributions)
    with base as (
        select s.account_key, s.handle, s.bio, s.created_at, s.followers, s.following,
               av.sha256, sc.probability, sc.label
        from account_snapshots s
        left join account_avatars av on av.run_key = s.run_key and av.account_key = s.account_key
                                    and av.status = 'stored'
        left join image_scores sc on sc.sha256 = av.sha256 and sc.detector_id = v_detector
        where s.run_key = p_run_key
    ), reuse as (
        select sha256, count(*) - 1 as others from base where sha256 is not null group by sha256
    ), parts as (
        select b.*, coalesce(r.others, 0) as reuse_count,
               extract(epoch from (v_as_of - b.created_at)) / 86400.0 as age_days,
               jsonb_strip_nulls(jsonb_build_object(
                   'synthetic_avatar', case when b.probability is not null then round((0.45 * b.probability)::numeric, 4) end,
                   'avatar_reuse',     case when coalesce(r.others, 0) > 0 then 0.20 end,
                   'template_handle',  case when handle_digit_suffix(b.handle) >= v_digits then 0.15 end,
                   'new_account',      case when b.created_at is not null
                                             and v_as_of - b.created_at < interval '90 days' then 0.10 end,
                   'empty_bio',        case when coalesce(btrim(b.bio), '') = '' then 0.05 end,
                   'few_followers',    case when b.followers is not null and b.followers < 10 then 0.05 end
               )) as contributions
        from base b left join reuse r using (sha256)
    )
    select p_run_key, account_key, sha256, probability, label, reuse_count,
           round(age_days::numeric, 3), followers, following,
           case when followers is not null and following is not null
                then round((followers::numeric / (following + 1)), 4) end,
           handle_template(handle), coalesce(btrim(bio), '') = '',
           least(1.0, coalesce((select sum(value::numeric) from jsonb_each_text(contributions)), 0)),
           contributions
    from parts;

    get diagnostics v_count = row_count;
    return v_count;
end
$$;
