"""Creation bursts measured against the whole population, not against the trait's own history.

A trait (a handle template, a bio, a count profile, a language) is in a burst around an account when
the window centred on the account holds more accounts with the trait than the population makes
likely. The expected count is the trait's share of all accounts times the population's creation
count around that window. That count is the larger of the
window's own count and a smoothed rate (the count over ``smoothing_days`` scaled to the window), so
a quiet stretch does not make any pair look unusual. A busy platform day raises the expectation of every trait, so a common template
on such a day is no burst. A template only a batch uses is a burst wherever the batch was made,
because its share is tiny. The test is a Poisson tail, Bonferroni-corrected over every window tested
for that kind of trait (all values together: at 1M accounts thousands of count-profile cells are
tested, and a correction per cell let rare cells on a busy day through). A window is centred on each
timed account; date-only accounts of one date share their date's window, one test
(``edges.distinct_windows``).

The test counts the trait's own accounts in the population's rate, which keeps a handful of
coincidences from passing. The trait's share is measured twice: over all accounts, then without the
trait's accounts found bursting (left out of the trait's count and of the population), so a takedown
that is a fifth of a small run, split over a few sign-up profiles, does not make its own profile
common and explain its own members. How clean a burst is asks another question: of the accounts observed,
how many does the rest of the population explain (share / (1 - share) times the other accounts'
count, for a minority trait)? That chance share decides whether the burst may link accounts
(pipeline/networks/edges.py); counting the burst into its own rate would make a batch of 30 in a
window of 55 sign-ups expect a share of 85.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Population:
    """Sorted creation times (seconds) of every account of the run that has one."""

    times: np.ndarray

    @classmethod
    def of(cls, times: np.ndarray) -> Population:
        return cls(np.sort(np.asarray(times, dtype=np.float64)))

    @property
    def size(self) -> int:
        return len(self.times)

    def count_around(self, at: np.ndarray, width: float | np.ndarray) -> np.ndarray:
        """Accounts created within ``width`` / 2 of each time in ``at``."""
        return (np.searchsorted(self.times, at + width / 2, side="right")
                - np.searchsorted(self.times, at - width / 2, side="left"))

    def rate_around(self, at: np.ndarray, window: float | np.ndarray, smoothing: float,
                    without: Population | None = None) -> np.ndarray:
        """The population's creation count per ``window`` around each time: the window's own count, or
        the smoothed count over ``smoothing`` scaled to the window, whichever is larger. ``without``
        (a trait's own accounts) is left out of both counts: the rest of the population, which gives
        a burst's chance members. ``window`` may differ per time (a date-only creation time's window
        is its date)."""
        def count(width: float | np.ndarray) -> np.ndarray:
            n = self.count_around(at, width).astype(np.float64)
            return n - without.count_around(at, width) if without is not None else n

        own = count(window)
        if np.all(smoothing <= np.asarray(window)):
            return own
        return np.where(smoothing <= np.asarray(window), own, np.maximum(own, count(smoothing) * (window / smoothing)))


def poisson_tail(observed: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """P(X >= observed) for X ~ Poisson(expected), elementwise (the regularised lower incomplete gamma)."""
    from scipy.special import gammainc

    observed = np.asarray(observed, dtype=np.float64)
    expected = np.maximum(np.asarray(expected, dtype=np.float64), 1e-12)
    return np.where(observed <= 0, 1.0, gammainc(np.maximum(observed, 1e-12), expected))


@dataclass(frozen=True)
class BurstTest:
    """Observed and expected counts of one trait in the window around each of its accounts, and the verdict."""

    observed: np.ndarray
    expected: np.ndarray
    p_value: np.ndarray
    bursting: np.ndarray
    chance_share: np.ndarray  # of the observed accounts, the share the rest of the population explains


def burst_test(times: np.ndarray, population: Population, window: float | np.ndarray, smoothing: float, min_count: int,
               factor: float, p_value: float, tests: int | None = None) -> BurstTest:
    """Which of a trait's sorted creation ``times`` lie in a burst of the trait, against the population:
    the centred window holds at least ``min_count`` of them, at least ``factor`` times the expected
    count, and a count whose Poisson tail at the expected count is below ``p_value`` / ``tests`` (the
    windows tested for this kind of trait; default the trait's own n). ``window`` is one width, or one
    per time (``date_windows``)."""
    n = len(times)
    observed = np.searchsorted(times, times + window / 2, side="right") - np.searchsorted(times, times - window / 2)
    rate = population.rate_around(times, window, smoothing)

    def verdict(share: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        expected = share * rate
        tail = poisson_tail(observed, expected)
        return expected, tail, (observed >= min_count) & (observed >= factor * expected) & (tail < p_value / max(tests or n, 1))

    share = n / max(population.size, 1)
    expected, tail, bursting = verdict(share)
    if bursting.any():  # the trait's share without its bursting accounts: a batch that is a tenth of a
        hot = int(bursting.sum())  # small run would otherwise raise its own expectation and explain itself
        share = (n - hot) / max(population.size - hot, 1)
        expected, tail, bursting = verdict(share)
    if share < 0.5:  # the chance members: share / (1 - share) x the rest of the population's count
        others = population.rate_around(times, window, smoothing, without=Population(np.asarray(times, dtype=np.float64)))
        by_chance = share / (1.0 - share) * others
    else:  # a majority trait has too few others to estimate from
        by_chance = expected
    return BurstTest(observed, expected, tail, bursting, by_chance / np.maximum(observed, 1))


DAY = 86400.0


def is_date_only(seconds: np.ndarray) -> np.ndarray:
    """Creation times at exactly midnight UTC: a source that gives dates only (X/Twitter IO releases'
    ``account_creation_date``). A timed account lands there once in 86,400."""
    return np.mod(np.asarray(seconds, dtype=np.float64), DAY) == 0


def date_windows(seconds: np.ndarray, window: float) -> np.ndarray:
    """Each time's burst window: ``window`` for a timed account; for a date-only one, its date (a
    centred window just under a day wide, holding that midnight and no other). A 48 h window centred on
    a midnight holds three dates: the day's sign-ups would be compared with three days of the
    population, and one day's batch chained to the next day's accounts."""
    return np.where(is_date_only(seconds), min(window, DAY - 1.0), window)
