"""Features of (reader, candidate, time) for the learned ranker, from what was known before that time.

One function, ``candidate_features``, computes them for the offline replay, for ``recsys train`` and for
the service, so the score served is the score evaluated. Its inputs are a ``LogState`` (what the logs
said up to the moment: popularity at two half-lives and all-time, first sightings, co-reads) and what
the caller knows of the reader and the candidates (content similarity, categories, publication times).

Every feature is a number or NaN (unknown); NaN is what LightGBM treats as missing, never an error.
A candidate's features never depend on the other candidates beside it: the site's list of ten, a training
pool of a hundred and a served pool of a few hundred give an article the same row at the same moment
(features relative to the list's mean, tried, made the served score depend on the pool's make-up and cost
a third of the served hit rate).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from recsys.signals.coreads import CoReadTable
from recsys.signals.logstate import LogState
from recsys.signals.popularity import CHANNELS, Popularity, shrunk_ctr

_READS, _REACTIONS, _IMPRESSIONS, _CLICKS = (CHANNELS.index(c) for c in ("reads", "reactions", "impressions", "clicks"))
HOUR = 3600.0

FEATURES = (
    "popularity",  # recsys popularity (24 h half-life), the click-propensity formula
    "clicks_24h",  # log(1 + decayed clicks), 24 h half-life
    "impressions_24h",  # log(1 + decayed impressions)
    "ctr_24h",  # decayed clicks / impressions, shrunk to the prior
    "clicks_2h",  # log(1 + decayed clicks), 2 h half-life: what is rising now
    "ctr_2h",
    "ctr_all",  # all-time clicks / impressions, shrunk
    "engaged_24h",  # log(1 + decayed views + weighted reactions)
    "age_hours",  # log(1 + hours since published, or since the logs first saw it); NaN if unknown
    "content_max",  # best cosine to the reader's interests; NaN without a known history
    "content_mean",  # mean cosine to the reader's last reads
    "coread",  # "readers also read": association with the reader's last reads
    "category_share",  # share of the reader's known reads in the candidate's category; NaN if unknown
    "in_history",  # the reader already read it
    "history_length",  # log(1 + reads known)
    "clicks_15m",  # log(1 + decayed clicks), 15 min half-life: what readers click this quarter hour
    "rising",  # clicks_15m - clicks_2h: accelerating (> 0) or fading
    "impressions_2h",  # log(1 + decayed impressions), 2 h half-life: what the site is showing lately
    "impressions_15m",  # ... 15 min half-life: what it shows right now (a served box competes with it)
    "shown_to_reader",  # log(1 + times this reader was shown it before); NaN when the reader is not known
    "hours_since_shown",  # log(1 + hours since this reader was last shown it); NaN: never shown, or not known
)
_CLICKS_15M, _RISING = FEATURES.index("clicks_15m"), FEATURES.index("rising")
_SHOWN_2H, _SHOWN_15M = FEATURES.index("impressions_2h"), FEATURES.index("impressions_15m")
_SHOWN_TO_READER, _SINCE_SHOWN = FEATURES.index("shown_to_reader"), FEATURES.index("hours_since_shown")
# the columns that depend on the reader (the rest are the article's at the moment: ``article_features``)
READER_COLUMNS = tuple(
    FEATURES.index(f)
    for f in (
        "content_max", "content_mean", "coread", "category_share", "in_history", "history_length",
        "shown_to_reader", "hours_since_shown",
    )
)  # fmt: skip


@dataclass(frozen=True)
class ReaderContext:
    """What is known of the reader at the time: reads newest first, the categories of the known ones, and what
    they were shown before (article -> (times, last time): ``ReaderMemory.shown``; None when the reader is not
    known, e.g. a list asked for with a history and no user id)."""

    history: tuple[str, ...]
    category_counts: dict[str, int]
    known_reads: int
    shown: Mapping[str, tuple[int, float]] | None = None


NOBODY = ReaderContext((), {}, 0)  # a reader nothing is known of (the Ranking box: one list for everyone)


def content_columns(vectors: np.ndarray, interests: np.ndarray | None, recent: np.ndarray | None) -> np.ndarray:
    """The ``content`` input of candidate_features: (n, 2), each candidate's best cosine to the reader's
    interests and mean cosine to the last reads; NaN without a history."""
    out = np.full((vectors.shape[0], 2), np.nan)
    # many candidates against a few queries as (n x dim) @ (dim x q): OpenBLAS is slower over a few rows the other way
    if interests is not None and interests.size:
        out[:, 0] = (vectors @ interests.T).max(axis=1)
    if recent is not None and recent.size:
        out[:, 1] = (vectors @ recent.T).mean(axis=1)
    return out


def _log_counts(sums: np.ndarray, channel: int) -> np.ndarray:
    return np.log1p(np.maximum(sums[:, channel], 0.0))


def first_sightings(state: LogState, ids: Sequence[str]) -> np.ndarray:
    """When the logs first saw each id (epoch seconds; NaN: never)."""
    return np.fromiter(map(state.first_seen.get, ids, itertools.repeat(math.nan)), dtype=np.float64, count=len(ids))


def _sums(popularity: Popularity, rows: np.ndarray, at: float) -> np.ndarray:
    """Decayed sums of the given rows of ``popularity`` (-1: no events, zeros)."""
    out = np.zeros((rows.size, len(CHANNELS)))
    known = rows >= 0
    if known.any():
        out[known] = popularity.decayed(at, rows[known])
    return out


def article_features(
    ids: Sequence[str],
    state: LogState,
    at: float,
    published: np.ndarray,
    timed: bool = True,
    seen: np.ndarray | None = None,
) -> np.ndarray:
    """The feature rows (len(ids), len(FEATURES)) of what is known of each article at ``at`` whoever reads it
    (popularity, counts, CTRs, age); the reader's columns (``READER_COLUMNS``) NaN. The same for every request of
    one moment, so a service may compute them once per moment (recsys/lists/recommendation.py)."""
    n = len(ids)
    out = np.full((n, len(FEATURES)), np.nan)
    if n == 0:
        return out
    config = state.config
    # The views are folded together, so an article has the same row in each.
    index = state.day.index
    rows = np.fromiter(map(index.get, ids, itertools.repeat(-1)), dtype=np.int64, count=n)
    day = _sums(state.day, rows, at)
    hours = _sums(state.hours, rows, at)
    ever = _sums(state.ever, rows, at)
    out[:, 0] = state.day.score_decayed(day)
    out[:, 1] = _log_counts(day, _CLICKS)
    out[:, 2] = _log_counts(day, _IMPRESSIONS)
    out[:, 3] = shrunk_ctr(day, config)
    out[:, 4] = _log_counts(hours, _CLICKS)
    out[:, 5] = shrunk_ctr(hours, config)
    out[:, 6] = shrunk_ctr(ever, config)
    out[:, 7] = np.log1p(np.maximum(day[:, _READS] + config.reaction_gain * day[:, _REACTIONS], 0.0))
    if timed:
        if seen is None:
            seen = first_sightings(state, ids)
        born = np.where(np.isfinite(published), published, seen)
        out[:, 8] = np.log1p(np.maximum(at - born, 0.0) / HOUR)
    quarter = _sums(state.minutes, rows, at)
    out[:, _CLICKS_15M] = _log_counts(quarter, _CLICKS)
    out[:, _RISING] = out[:, _CLICKS_15M] - out[:, 4]
    out[:, _SHOWN_2H] = _log_counts(hours, _IMPRESSIONS)
    out[:, _SHOWN_15M] = _log_counts(quarter, _IMPRESSIONS)
    return out


def candidate_features(
    ids: Sequence[str],
    state: LogState,
    at: float,
    reader: ReaderContext,
    content: np.ndarray,
    categories: Sequence[str],
    published: np.ndarray,
    coreads: CoReadTable | None = None,
    timed: bool = True,
    seen: np.ndarray | None = None,
    articles: np.ndarray | None = None,
) -> np.ndarray:
    """The feature matrix (len(ids), len(FEATURES)) for one list of candidates at time ``at``.

    ``content`` is (n, 2): best and mean cosine to the reader's reads (NaN where unknown);
    ``published`` epoch seconds or NaN; ``coreads`` a stored table to use instead of the state's
    live counts (the service); ``timed`` False when the log has no times (ages are then unknown);
    ``seen`` the ids' first sightings in ``state`` (NaN: never seen) when the caller has looked them up already;
    ``articles`` their ``article_features`` when the caller has them (the reader's columns are added).
    """
    n = len(ids)
    out = article_features(ids, state, at, published, timed, seen) if articles is None else articles.copy()
    if n == 0:
        return out
    out[:, 9:11] = content
    history = reader.history
    if coreads is not None:
        out[:, 11] = coreads.score(history, ids)
    else:
        out[:, 11] = state.coreads.score(history, ids, at)
    if reader.known_reads:
        total = float(reader.known_reads)
        out[:, 12] = [reader.category_counts.get(c, 0) / total if c else np.nan for c in categories]
    read = set(history)
    out[:, 13] = [float(a in read) for a in ids]
    out[:, 14] = math.log1p(len(history))
    if reader.shown is not None:
        out[:, _SHOWN_TO_READER], out[:, _SINCE_SHOWN] = shown_columns(reader.shown, ids, at)
    return out


def shown_columns(shown: Mapping[str, tuple[int, float]], ids: Sequence[str], at: float) -> tuple[np.ndarray, ...]:
    """``shown_to_reader`` (0 when never shown) and ``hours_since_shown`` (NaN when never shown) of ``ids``."""
    times = np.zeros(len(ids))
    since = np.full(len(ids), np.nan)
    if shown:
        for i, article in enumerate(ids):
            entry = shown.get(article)
            if entry is not None:
                times[i] = entry[0]
                since[i] = max(at - entry[1], 0.0) / HOUR
    return np.log1p(times), np.log1p(since)
