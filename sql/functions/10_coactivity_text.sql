-- Text normalisation for the co_link and co_post edges (pipeline/networks/coactivity.py).
-- Repeatable: re-applied whenever this file changes (pipeline/core/db.py).

-- Normalisation used by the co_link and co_post edges (pipeline/networks/coactivity.py). In SQL so that the
-- grouping and the sort happen inside PostgreSQL, next to the posts, and the same rule is visible to
-- anyone querying the table.

-- The text of a post for co_post matching, as QUT's coordination-network-toolkit message_preprocessor:
-- lower-case, @mentions removed (from '@' to the next whitespace), whitespace runs collapsed to one space,
-- ends trimmed. The whitespace class is Python's str.split() set, so NBSP and ideographic spaces count.
-- Empty results are null: QUT matches empty messages with each other, we do not.
create or replace function normalise_post_text(t text) returns text
language sql immutable strict parallel safe as $$
    select nullif(btrim(regexp_replace(
        regexp_replace(lower(t), '@[^\s\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\u001c-\u001f]*', '', 'g'),
        '[\s\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\u001c-\u001f]+', ' ', 'g'), ' '), '')
$$;

-- A URL for co_link matching. QUT compares the raw strings; we first drop what does not change the
-- destination: scheme (http and https match), a leading 'www.', upper case in the host, default ports,
-- the fragment, tracking parameters (utm_*, fbclid, gclid, igshid, mc_cid, mc_eid), trailing slashes
-- of the path, and surrounding whitespace. Path and remaining query keep their case and order.
create or replace function normalise_url(u text) returns text
language plpgsql immutable strict parallel safe as $$
declare
    s text := btrim(u);
    host text;
    rest text;
begin
    s := regexp_replace(s, '#.*$', '');
    s := regexp_replace(s, '^[A-Za-z][A-Za-z0-9+.-]*://', '');
    host := lower(substring(s from '^[^/?]*'));
    rest := substring(s from '^[^/?]*(.*)$');
    host := regexp_replace(host, '^www\.', '');
    host := regexp_replace(host, ':(80|443)$', '');
    host := regexp_replace(host, '\.$', '');
    rest := regexp_replace(rest, '([?&])(utm_[^=&]*|fbclid|gclid|igshid|mc_cid|mc_eid)(=[^&]*)?', '\1', 'g');
    rest := regexp_replace(rest, '&&+', '&', 'g');
    rest := regexp_replace(rest, '\?&', '?');
    rest := regexp_replace(rest, '[?&]$', '');
    rest := regexp_replace(rest, '/+(\?|$)', '\1');
    return nullif(host || coalesce(rest, ''), '');
end
$$;

-- The hashtag set of a post for co_hashtag matching (pipeline/networks/coactivity.py): distinct tags,
-- lower case, without '#', sorted bytewise and joined by single spaces; null when fewer than p_min_tags.
-- Tags are stored lower case without '#' by the readers; this normalises again for other writers.
create or replace function hashtag_set(tags text[], p_min_tags integer) returns text
language sql immutable strict parallel safe as $$
    select case when count(*) >= p_min_tags then string_agg(t, ' ' order by t collate "C") end
    from (select distinct lower(ltrim(btrim(x), '#')) as t from unnest(tags) as x) s
    where t <> ''
$$;
