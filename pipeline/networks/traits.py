"""The run's account traits as compact columns, for the creation-window, creation-batch and identical-text
edges (pipeline/networks/edges.py) at millions of accounts.

One ``AccountTraits`` dataclass per account, and a list of (account, extra) tuples per trait value for
every trait kind at once, held about 3 GB at 1M accounts. Here an account is a row index into numpy
columns (creation time, counts, factorized codes of its template, bio, link, language and location)
and its key is a slice of one UTF-8 buffer; the (value, account) rows of ONE trait kind are built at a
time, as integer arrays, by ``kind_rows``. The rows are the same as ``edges.account_trait_values``
gives account by account (tests/test_network_columns.py checks it on every account of a planted
population), so the edges built from them are the same.

Rows are in account-key order (``order by account_key collate "C"``: byte order of UTF-8, which is
Python's ``str`` order), so a row index is also the key's rank, and sorting members by (creation time,
index) is sorting them by (creation time, key), as the dataclass code did.
"""

from __future__ import annotations

import functools
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import sqlalchemy as sa

from pipeline.config import NetworkParams
from pipeline.networks import edges as E

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
NAIVE_EPOCH = datetime(1970, 1, 1)
_US = timedelta(microseconds=1)


class _Factor:
    """Distinct strings -> dense codes (-1: none)."""

    def __init__(self) -> None:
        self.codes: dict[str, int] = {}
        self.values: list[str] = []

    def code(self, value: str | None) -> int:
        if value is None:
            return -1
        c = self.codes.get(value)
        if c is None:
            c = self.codes[value] = len(self.values)
            self.values.append(value)
        return c


@dataclass
class TraitColumns:
    """Per account (row i, in key order): what the creation and identical-text edges read of it."""

    key_blob: bytes  # the keys, UTF-8, back to back
    key_end: np.ndarray  # int64: where key i ends in key_blob
    dated: np.ndarray  # bool: has a creation time
    us: np.ndarray  # int64: creation time, microseconds since the epoch (wall clock for naive times)
    seconds: np.ndarray  # float64: ``created_at.timestamp()``, as the burst test has always used
    utc_offset: np.ndarray  # int32 seconds (aware times), to give back the datetime the database gave
    naive: bool  # creation times without a time zone (hand-made accounts in tests)
    counts: dict[str, np.ndarray]  # followers, following, posts: int64, -1 for none
    has_avatar: np.ndarray  # bool: an avatar sha256 (not None)
    label: np.ndarray  # bool: avatar labelled synthetic
    digits: np.ndarray  # int32: trailing digits of the handle
    template: np.ndarray  # int32 code into templates (-1: none or empty)
    templates: list[str]
    bio: np.ndarray  # int32 code of ``normalised_bio`` (-1: none)
    bios: list[str]
    no_bio: np.ndarray  # bool: empty or blank bio
    link: np.ndarray  # int32 code of ``normalised_link``
    links: list[str]
    language: np.ndarray  # int32 code of ``normalised_attribute(language)``
    languages: list[str]
    location: np.ndarray
    locations: list[str]

    def __len__(self) -> int:
        return len(self.dated)

    def key(self, i: int) -> str:
        start = int(self.key_end[i - 1]) if i else 0
        return self.key_blob[start:int(self.key_end[i])].decode()

    def created(self, i: int) -> datetime:
        """The creation time as the loader gave it (same instant and UTC offset: same ``isoformat``)."""
        if self.naive:
            return NAIVE_EPOCH + int(self.us[i]) * _US
        return (EPOCH + int(self.us[i]) * _US).astimezone(timezone(timedelta(seconds=int(self.utc_offset[i]))))

    @classmethod
    def build(cls, rows: Iterable[tuple]) -> TraitColumns:
        """From (account_key, created_at, has an avatar (its sha256 is not null), avatar_label, handle_template, handle_digits, bio, url,
        followers, following, posts, language, location) rows, in key order."""
        blob, ends = bytearray(), array("q")
        us, seconds, offsets, dated = array("q"), array("d"), array("i"), array("b")
        cnt = {n: array("q") for n in E.COUNTS}
        has_avatar, label, digits, no_bio = array("b"), array("b"), array("i"), array("b")
        facts = {n: _Factor() for n in ("template", "bio", "link", "language", "location")}
        codes = {n: array("i") for n in facts}
        naive: bool | None = None
        last: str | None = None
        for (key, created, avatar, lab, template, dig, bio, url, followers, following, posts, language,
             location) in rows:
            if last is not None and not last < key:
                raise ValueError(f"trait rows out of key order at {key!r}")  # a loader's bug, not bad input
            last = key
            blob += key.encode()
            ends.append(len(blob))
            if created is None:
                dated.append(0)
                us.append(0)
                seconds.append(np.nan)
                offsets.append(0)
            else:
                if naive is None:
                    naive = created.tzinfo is None
                elif naive != (created.tzinfo is None):
                    raise ValueError("creation times mix naive and aware datetimes")
                dated.append(1)
                us.append((created - (NAIVE_EPOCH if naive else EPOCH)) // _US)
                seconds.append(created.timestamp())
                offsets.append(0 if naive else int(created.utcoffset().total_seconds()))
            for n, v in zip(E.COUNTS, (followers, following, posts)):
                cnt[n].append(-1 if v is None or v < 0 else v)
            has_avatar.append(bool(avatar))
            label.append(bool(lab))
            digits.append(dig or 0)
            no_bio.append(not (bio or "").strip())
            codes["template"].append(facts["template"].code(template or None))
            codes["bio"].append(facts["bio"].code(E.normalised_bio(bio)))
            codes["link"].append(facts["link"].code(E.normalised_link(url)))
            codes["language"].append(facts["language"].code(E.normalised_attribute(language)))
            codes["location"].append(facts["location"].code(E.normalised_attribute(location)))

        def arr(a: array, dtype: Any) -> np.ndarray:
            return np.frombuffer(a, dtype=dtype).copy() if len(a) else np.zeros(0, dtype=dtype)

        return cls(bytes(blob), arr(ends, np.int64), arr(dated, np.int8).astype(bool), arr(us, np.int64),
                   arr(seconds, np.float64), arr(offsets, np.int32), bool(naive),
                   {n: arr(a, np.int64) for n, a in cnt.items()}, arr(has_avatar, np.int8).astype(bool),
                   arr(label, np.int8).astype(bool), arr(digits, np.int32),
                   arr(codes["template"], np.int32), facts["template"].values,
                   arr(codes["bio"], np.int32), facts["bio"].values, arr(no_bio, np.int8).astype(bool),
                   arr(codes["link"], np.int32), facts["link"].values,
                   arr(codes["language"], np.int32), facts["language"].values,
                   arr(codes["location"], np.int32), facts["location"].values)

    @classmethod
    def of(cls, accounts: Iterable[E.AccountTraits]) -> TraitColumns:
        """From dataclasses (the pure functions' inputs and tests), in key order."""
        ordered = sorted(accounts, key=lambda a: a.account_key)
        return cls.build((a.account_key, a.created_at, a.avatar_sha256 is not None, a.avatar_label, a.handle_template,
                          a.handle_digits, a.bio, a.url, a.followers, a.following, a.posts, a.language, a.location)
                         for a in ordered)


TRAITS_QUERY = (
    "select s.account_key, s.created_at, g.avatar_sha256 is not null, g.avatar_label, g.handle_template,"
    " handle_digit_suffix(s.handle), s.bio, s.url, s.followers, s.following, s.posts, s.language, s.location"
    " from account_snapshots s join account_signals g using (run_key, account_key)"
    ' where s.run_key = :k order by s.account_key collate "C"')


def load_columns(conn: sa.Connection, run_key: str, chunk: int = 20_000) -> TraitColumns:
    """The run's accounts as columns, streamed from a server-side cursor ``chunk`` rows at a time."""
    result = conn.execute(sa.text(TRAITS_QUERY), {"k": run_key},
                          execution_options={"stream_results": True, "yield_per": chunk})
    return TraitColumns.build(tuple(r) for r in result)


@functools.lru_cache(maxsize=1 << 16)
def _bin(n: int, width: float, offset: float) -> tuple[int, tuple[int, int]]:
    k, bounds = E.count_bin(n, width, offset)
    return k, (bounds[0], bounds[1])


def count_bins(counts: np.ndarray, mask: np.ndarray, width: float, offset: float) -> tuple[np.ndarray, dict[int, list[int]]]:
    """``count_bin`` of each count under ``mask`` (others 0), computed once per distinct count, and the
    [low, high] bounds of every bin found."""
    out = np.zeros(len(counts), dtype=np.int64)
    if not mask.any():
        return out, {}
    distinct, inverse = np.unique(counts[mask], return_inverse=True)
    ks = np.empty(len(distinct), dtype=np.int64)
    bounds: dict[int, list[int]] = {}
    for j, n in enumerate(distinct.tolist()):
        k, b = _bin(int(n), width, offset)
        ks[j] = k
        bounds[k] = list(b)
    out[mask] = ks[inverse]
    return out, bounds


@dataclass
class KindRows:
    """One trait kind's (value, account) rows: ``values[code[j]]`` is held by account ``account[j]``,
    with the extra evidence ``extras[code[j]]`` (a function of the value)."""

    kind: str
    values: list[str]
    extras: list[dict[str, Any]]
    code: np.ndarray
    account: np.ndarray


def _combos(parts: list[np.ndarray], mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of the stacked ``parts`` under ``mask``, and each masked account's row code. The
    parts are folded into one dense code one at a time (code x radius + part stays below accounts x
    radius, far from overflowing), so each step is a 1-D ``unique``."""
    cols = [np.asarray(p[mask], dtype=np.int64) for p in parts]
    code = np.zeros(len(cols[0]), dtype=np.int64)
    for c in cols:
        if len(c):
            shifted = c - c.min()
            code = np.unique(code * (int(shifted.max()) + 1) + shifted, return_inverse=True)[1].reshape(-1)
    first = np.unique(code, return_index=True)[1]
    return np.stack([c[first] for c in cols], axis=1), code


class _Builder:
    def __init__(self, kind: str) -> None:
        self.kind, self.values, self.extras = kind, [], []
        self.codes: list[np.ndarray] = []
        self.accounts: list[np.ndarray] = []

    def add(self, values: list[str], extras: list[dict[str, Any]], code: np.ndarray, accounts: np.ndarray) -> None:
        self.codes.append(np.asarray(code, dtype=np.int64) + len(self.values))
        self.accounts.append(np.asarray(accounts, dtype=np.int64))
        self.values += values
        self.extras += extras

    def done(self) -> KindRows:
        return KindRows(self.kind, self.values, self.extras, _cat(self.codes), _cat(self.accounts))


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


_MISSING = -1  # a count the account does not have, in a sign-up profile (bins are never negative)


def _count_cells(cols: TraitColumns, mask: np.ndarray, width: float, offset: float, optional_posts: bool
                 ) -> tuple[list[np.ndarray], list[dict[int, list[int]]]]:
    ks, bounds = [], []
    for name in E.COUNTS:
        present = mask & (cols.counts[name] >= 0)
        k, b = count_bins(cols.counts[name], present, width, offset)
        if optional_posts:
            k = np.where(present, k, _MISSING)  # '-' (only posts can be missing here)
        ks.append(k)
        bounds.append(b)
    return ks, bounds


class _Kinds:
    """Builds one trait kind's rows at a time (``kind_rows``)."""

    def __init__(self, cols: TraitColumns, params: NetworkParams) -> None:
        self.cols, self.params = cols, params
        self.all_counts = cols.dated & np.logical_and.reduce([cols.counts[n] >= 0 for n in E.COUNTS])
        self.signup = cols.dated & ~self.all_counts & (cols.counts["followers"] >= 0) & (cols.counts["following"] >= 0)
        self.templated = cols.dated & (cols.digits >= params.min_template_digits) & (cols.template >= 0)
        self.labelled = cols.dated & cols.label

    def makers(self) -> dict[str, Any]:
        c = self.cols
        out = {
            "count_profile": self.count_profile,
            "handle_template": functools.partial(self.simple, "handle_template", c.template, c.templates, self.templated),
            "identical_bio": functools.partial(self.simple, "identical_bio", c.bio, c.bios, c.dated & (c.bio >= 0)),
            "language": functools.partial(self.simple, "language", c.language, c.languages, c.dated & (c.language >= 0)),
            "location": functools.partial(self.simple, "location", c.location, c.locations, c.dated & (c.location >= 0)),
            "signup_profile": self.signup_profile,
            "synthetic_avatar": functools.partial(self.simple, "synthetic_avatar", np.zeros(len(c), dtype=np.int32),
                                                  ["label"], self.labelled),
        }
        for base in E.REFINED_TRAITS:
            for r_trait in (*E.COUNTS, "no_bio"):
                out[f"{base}+{r_trait}"] = functools.partial(self.refined, base, r_trait)
        return out

    def simple(self, kind: str, codes: np.ndarray, values: list[str], mask: np.ndarray) -> KindRows:
        b = _Builder(kind)
        idx = np.flatnonzero(mask)
        b.add(list(values), [{} for _ in values], codes[idx], idx)
        return b.done()

    def count_profile(self) -> KindRows:
        b, mask = _Builder("count_profile"), self.all_counts
        if not mask.any():
            return b.done()
        for offset in (0.0, 0.5):
            ks, bounds = _count_cells(self.cols, mask, self.params.count_profile_bin, offset, False)
            distinct, inverse = _combos(ks, mask)
            rows = distinct.tolist()
            values = [f"grid{offset:g}:" + "|".join(f"{n}{k}" for n, k in zip(E.COUNTS, row)) for row in rows]
            extras = [{"bins": {n: list(bounds[i][k]) for i, (n, k) in enumerate(zip(E.COUNTS, row))}} for row in rows]
            b.add(values, extras, inverse, np.flatnonzero(mask))
        return b.done()

    def signup_profile(self) -> KindRows:
        b, mask, cols = _Builder("signup_profile"), self.signup, self.cols
        if not mask.any():
            return b.done()
        for offset in (0.0, 0.5):
            ks, bounds = _count_cells(cols, mask, self.params.burst_refine_bin, offset, True)
            parts = ks + [cols.has_avatar.astype(np.int64), (cols.link >= 0).astype(np.int64), cols.language.astype(np.int64)]
            distinct, inverse = _combos(parts, mask)
            values, extras = [], []
            for row in distinct.tolist():
                cells, bins = [], {}
                for i, name in enumerate(E.COUNTS):
                    if row[i] == _MISSING:
                        cells.append(f"{name}-")
                        continue
                    bins[name] = list(bounds[i][row[i]])
                    cells.append(f"{name}{row[i]}")
                lang = cols.languages[row[5]] if row[5] >= 0 else "-"
                cells += [f"avatar{row[3]}", f"link{row[4]}", f"lang:{lang}"]
                values.append(f"grid{offset:g}:" + "|".join(cells))
                extras.append({"bins": bins})
            b.add(values, extras, inverse, np.flatnonzero(mask))
        return b.done()

    def refined(self, base: str, r_trait: str) -> KindRows:
        """A handle template or a synthetic label narrowed by a coarse count bin or an empty bio (``edges.refinements``)."""
        b, cols = _Builder(f"{base}+{r_trait}"), self.cols
        mask = self.templated if base == "handle_template" else self.labelled
        base_code = (cols.template if base == "handle_template" else np.zeros(len(cols), dtype=np.int32)).astype(np.int64)
        base_values = cols.templates if base == "handle_template" else ["label"]
        if r_trait == "no_bio":
            m = mask & cols.no_bio
            if m.any():
                distinct, inverse = _combos([base_code], m)
                b.add([f"{base_values[row[0]]}|" for row in distinct.tolist()], [{} for _ in range(len(distinct))],
                      inverse, np.flatnonzero(m))
            return b.done()
        m = mask & (cols.counts[r_trait] >= 0)
        if not m.any():
            return b.done()
        for offset in (0.0, 0.5):
            k, bounds = count_bins(cols.counts[r_trait], m, self.params.burst_refine_bin, offset)
            distinct, inverse = _combos([base_code, k], m)
            rows = distinct.tolist()
            b.add([f"{base_values[row[0]]}|grid{offset:g}:{row[1]}" for row in rows],
                  [{"bins": {r_trait: list(bounds[row[1]])}} for row in rows], inverse, np.flatnonzero(m))
        return b.done()


def kind_rows(cols: TraitColumns, params: NetworkParams, kinds: Iterable[str] | None = None) -> Iterator[KindRows]:
    """The (value, account) rows of each trait kind of ``edges.account_trait_values`` over the dated
    accounts, one kind at a time, in sorted kind order (``kinds``: only these); kinds no account holds
    are left out."""
    makers = _Kinds(cols, params).makers()
    for kind in sorted(makers):
        if kinds is None or kind in kinds:
            rows = makers[kind]()
            if len(rows.account):
                yield rows


@dataclass
class ValueGroup:
    """One trait value's accounts, sorted by (creation time, key)."""

    value: str
    extra: dict[str, Any]
    accounts: np.ndarray


def value_groups(cols: TraitColumns, rows: KindRows, min_size: int) -> tuple[int, Iterator[ValueGroup]]:
    """The windows the kind's values test (``edges.distinct_windows`` summed over every value: the
    Bonferroni family), and its values of at least ``min_size`` accounts in sorted value order."""
    distinct = sorted(set(rows.values))  # equal strings under two codes are one value, as in one dict
    position = {v: i for i, v in enumerate(distinct)}
    extra_of = {}
    for value, extra in zip(rows.values, rows.extras):
        extra_of.setdefault(value, extra)
    rank = np.fromiter((position[v] for v in rows.values), dtype=np.int64, count=len(rows.values))[rows.code]
    acc = rows.account
    order = np.lexsort((acc, cols.us[acc], rank))
    rank, acc = rank[order], acc[order]
    seconds = cols.seconds[acc]
    date_only = E.is_date_only(seconds)
    new_value = np.ones(len(acc), dtype=bool)
    new_value[1:] = rank[1:] != rank[:-1]
    new_time = new_value.copy()
    new_time[1:] |= seconds[1:] != seconds[:-1]
    tested = int((~date_only).sum()) + int((date_only & new_time).sum())
    starts = np.flatnonzero(new_value)
    ends = np.append(starts[1:], len(acc))

    def groups() -> Iterator[ValueGroup]:
        for s, e in zip(starts.tolist(), ends.tolist()):
            if e - s >= min_size:
                value = distinct[int(rank[s])]
                yield ValueGroup(value, extra_of[value], acc[s:e])

    return tested, groups()
