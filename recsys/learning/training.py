"""From logged impressions to a training set: every impression's candidates, their features as of just
before it, and whether each was clicked.

Impressions are replayed in time order (rows without a time in file order, with ages unknown). The
impressions of one second are featurised before any of them is learned from, so no row ever sees its
own click or a later one. What is learned after each second: its impressions and clicks (popularity,
CTR), the articles it mentions (first sightings), and its readers' reads (co-reads).
"""

from __future__ import annotations

import itertools
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from recsys.config import PopularityConfig, RecommendConfig
from recsys.evaluation.metrics import mean_auc_by_group
from recsys.learning.features import FEATURES, ReaderContext, candidate_features
from recsys.learning.pools import POOL_CONTENT, POOL_RANDOM, ArticleLookup, ContentMatch, draw_seen, pool_candidates
from recsys.learning.ranker import LearnedRanker, Part
from recsys.signals.coreads import CoReads, CoReadTable
from recsys.signals.logstate import LogState
from recsys.signals.records import Impression, impression_events


@dataclass
class Dataset:
    """One row per (impression, candidate): features, label, impression number and time."""

    features: np.ndarray
    labels: np.ndarray
    groups: np.ndarray  # impression number (0..), rows of one impression are contiguous
    times: np.ndarray  # the impression's time (file order when the log has none)
    timed: bool
    impressions: int
    shown: np.ndarray | None = None  # rows of the lists the site showed; False: a served-pool group; None: all
    owners: np.ndarray | None = None  # per group, the logged impression it comes from (a pool group shares it)
    positions: np.ndarray | None = None  # per row, the place the reader saw it at (0: unknown, or a pool's extra)

    def take(self, mask_of_groups: np.ndarray) -> Dataset:
        """The rows of the impressions whose numbers are True in ``mask_of_groups``."""
        rows = mask_of_groups[self.groups]
        return Dataset(
            self.features[rows],
            self.labels[rows],
            self.groups[rows],
            self.times[rows],
            self.timed,
            int(mask_of_groups.sum()),
            None if self.shown is None else self.shown[rows],
            None,
            None if self.positions is None else self.positions[rows],
        )

    def pool_groups(self) -> np.ndarray:
        """Per group: True for a served-pool group (what a box could have shown), False for a site's list."""
        pools = np.zeros(self.impressions, dtype=bool)
        if self.shown is not None:
            pools[self.groups[~self.shown]] = True
        return pools

    def by_impression(self, per_impression: np.ndarray) -> np.ndarray:
        """A per-group array from one value per logged impression: the groups of one impression (its list and
        its pool group) always land on the same side of a split, so no group reveals another's label."""
        owners = self.owners if self.owners is not None else np.arange(self.impressions)
        return per_impression[owners]

    def in_view(self) -> Dataset:
        """Only the rows the site showed (what in-view AUC is measured on)."""
        if self.shown is None:
            return self
        rows = self.shown
        positions = None if self.positions is None else self.positions[rows]
        return Dataset(
            self.features[rows],
            self.labels[rows],
            self.groups[rows],
            self.times[rows],
            self.timed,
            self.impressions,
            positions=positions,
        )


def is_timed(impressions: Sequence[Impression]) -> bool:
    return bool(impressions) and all(math.isfinite(i.ts) for i in impressions)


def in_time_order(impressions: Sequence[Impression]) -> tuple[list[Impression], bool]:
    """Impressions sorted by time; a log without times keeps file order, one second apart (ages unknown)."""
    if is_timed(impressions):
        return sorted(impressions, key=lambda i: (i.ts, i.impression_id)), True
    return [
        Impression(i.impression_id, i.user_id, float(n), i.history, i.candidates, i.clicked)
        for n, i in enumerate(impressions)
    ], False


def reader_context(
    history: Sequence[str],
    lookup: ArticleLookup,
    recent: Sequence[str] = (),
    shown: Mapping[str, tuple[int, float]] | None = None,
) -> ReaderContext:
    """A reader from a history given oldest first (the MIND order) and ``recent`` reads newest first (what the
    logs saw them read since, before the history in the result, as a served list takes a user's recorded reads
    before a history passed in): reads newest first, category counts, and what they were ``shown`` before."""
    newest_first = tuple(dict.fromkeys([*recent, *reversed(history)]))
    categories = Counter(lookup.category(h) for h in newest_first if h in lookup.rows and lookup.category(h))
    return ReaderContext(newest_first, dict(categories), sum(categories.values()), shown)


def reader_at(state: LogState, impression: Impression, lookup: ArticleLookup) -> ReaderContext:
    """The impression's reader as a served list would know them at its time: the history on the row after what
    the logs saw them read until then, and what the logs showed them until then (``ReaderMemory``)."""
    reader, at = impression.user_id, impression.ts
    return reader_context(impression.history, lookup, state.readers.reads(reader, at), state.readers.shown(reader, at))


def learn(state: LogState, batch: Sequence[Impression]) -> None:
    """Fold one second of impressions into the state (after they were scored)."""
    state.fold(
        (e.article_id, e.type, e.reaction, e.ts, e.count, e.reader) for i in batch for _, e in impression_events(i)
    )
    for impression in batch:
        state.saw(impression.candidates, impression.ts)
        state.saw(impression.history, impression.ts)
        n = len(impression.history)
        reads = [(h, impression.ts - (n - k)) for k, h in enumerate(impression.history)]
        reads += [
            (c, impression.ts) for c, clicked in zip(impression.candidates, impression.clicked, strict=True) if clicked
        ]
        state.coreads.add_reads(impression.user_id, reads)


def build_dataset(
    impressions: Sequence[Impression],
    lookup: ArticleLookup,
    popularity: PopularityConfig,
    recommend: RecommendConfig,
    keep: Callable[[Impression], bool] | None = None,
    pools: bool = False,
    seed: int = 0,
) -> tuple[Dataset, LogState]:
    """Replay the impressions (see module docstring) and featurise every candidate of each kept one;
    also returns the state at the end of the log (for the co-read table)."""
    ordered, timed = in_time_order(impressions)
    state = LogState(popularity)
    content = ContentMatch(lookup, recommend)
    draws = random.Random(seed)  # the random part of the pools: seeded, so a training run is repeatable
    blocks: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    groups: list[np.ndarray] = []
    shown: list[np.ndarray] = []
    placed: list[np.ndarray] = []
    owners: list[int] = []
    times: list[float] = []
    number = 0
    logged = 0
    for _, group in itertools.groupby(ordered, key=lambda i: i.ts):
        batch = list(group)
        for impression in batch:
            if keep is not None and not keep(impression):
                continue
            reader = reader_at(state, impression, lookup)
            lists = [(impression.candidates, impression.clicked, True)]  # the list the site showed
            seen_at = dict(zip(impression.candidates, impression.positions, strict=False))
            if pools and any(impression.clicked):
                # The served task as a second group: the site's list among what a box could have shown then,
                # labelled by the clicks (the shown but unclicked compete too, as they do in a served box).
                exclude = {*impression.candidates, *reader.history}
                nearest = content.nearest(reader.history, POOL_CONTENT)
                drawn = draw_seen(state, draws, POOL_RANDOM, exclude)
                found = pool_candidates(state, impression, exclude, nearest, drawn, reader.history)
                extra = [a for a in found if a in lookup.rows]
                if extra:
                    # shuffled: the site's list first would let any tie in a score (one coarse tree, an
                    # unseen article) fall to the shown, clicked ones, and early stopping would reward that
                    rows = [*zip(impression.candidates, impression.clicked, strict=True), *((a, False) for a in extra)]
                    draws.shuffle(rows)
                    lists.append((tuple(a for a, _ in rows), tuple(c for _, c in rows), False))
            for candidates, clicked, site in lists:
                published = np.array([lookup.published.get(c, np.nan) for c in candidates], dtype=np.float64)
                blocks.append(
                    candidate_features(
                        candidates,
                        state,
                        impression.ts,
                        reader,
                        content(reader.history, candidates),
                        [lookup.category(c) for c in candidates],
                        published,
                        timed=timed,
                    )
                )
                labels.append(np.asarray(clicked, dtype=np.int8))
                shown.append(np.full(len(candidates), site))
                placed.append(np.array([seen_at.get(c, 0) if site else 0 for c in candidates], dtype=np.int64))
                groups.append(np.full(len(candidates), number, dtype=np.int64))
                owners.append(logged)
                times.append(impression.ts)
                number += 1
            logged += 1
        learn(state, batch)
    if not blocks:
        empty = np.zeros((0, len(FEATURES)))
        return Dataset(empty, np.zeros(0, np.int8), np.zeros(0, np.int64), np.zeros(0), timed, 0), state
    group_array = np.concatenate(groups)
    dataset = Dataset(
        np.vstack(blocks),
        np.concatenate(labels),
        group_array,
        np.asarray(times)[group_array],
        timed,
        number,
        np.concatenate(shown) if pools else None,
        np.asarray(owners, dtype=np.int64),
        np.concatenate(placed),
    )
    return dataset, state


def coreads_from_reads(reads_by_reader: Mapping[str, Sequence[tuple[float, str]]]) -> CoReadTable:
    """The co-read table from every reader's reads (a site that logs views but no impressions has no
    impressions to replay, and still has readers who read several articles)."""
    coreads = CoReads()
    ordered = sorted(
        (ts, reader, article) for reader, reads in reads_by_reader.items() for ts, article in reads if math.isfinite(ts)
    )
    for ts, reader, article in ordered:
        coreads.add_reads(reader, [(article, ts)])
    last = ordered[-1][0] if ordered else float("nan")
    return CoReadTable(coreads.table(last) if ordered else {}, last)


# -- fitting ---------------------------------------------------------------------------------------

MIN_IMPRESSIONS = 500  # impressions with a click and a non-click needed to fit; fewer keep the hand-set blend
MIN_TEST_IMPRESSIONS = 100
VALID_SHARE = 0.2  # the later part of the fitting period that early stopping watches
FOLDS = 5  # cross-validation by impression when the log has no times


@dataclass
class TrainingResult:
    """What ``train`` made: the model (None when there was too little data), the co-read table and the figures."""

    ranker: LearnedRanker | None
    coreads: CoReadTable
    report: dict[str, Any]
    # held-back in-view rows: features, labels, groups, impression times (the retraining guard scores on them)
    held: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
    # the models fitted before the held-back days (``ranker`` is their refit on every day): what a choice judged
    # on the held-back days (the Ranking box's order, recsys/learning/clock.py) must be judged with
    validated: LearnedRanker | None = None
    fitted_before: float = -math.inf  # ``validated`` learned from impressions before this time only


def _informative(dataset: Dataset) -> np.ndarray:
    """Per impression: True when it has both a click and a non-click (the only ones AUC and LambdaRank use)."""
    clicks = np.bincount(dataset.groups, weights=dataset.labels, minlength=dataset.impressions)
    sizes = np.bincount(dataset.groups, minlength=dataset.impressions)
    return (clicks > 0) & (clicks < sizes)


def _parts(dataset: Dataset, mask: np.ndarray) -> Part:
    """Features, labels, groups and (where any is known) the places the reader saw each row at."""
    part = dataset.take(mask)
    known = part.positions is not None and bool((part.positions > 0).any())
    return part.features, part.labels, part.groups, part.positions if known else None


def _scores_table(dataset: Dataset, model: np.ndarray | None) -> dict[str, float]:
    """Mean per-impression AUC of the model and of each feature alone, on ``dataset``."""
    table: dict[str, float] = {}
    if model is not None:
        table["recsys (learned)"] = mean_auc_by_group(model, dataset.labels, dataset.groups)[0]
    for i, name in enumerate(FEATURES):
        column = np.nan_to_num(dataset.features[:, i], nan=-1e12)
        table[name] = mean_auc_by_group(column, dataset.labels, dataset.groups)[0]
    return table


def train(
    impressions: Sequence[Impression],
    lookup: ArticleLookup,
    popularity: PopularityConfig,
    recommend: RecommendConfig,
    test_days: float = 2.0,
    seed: int = 0,
    pools: bool = True,
    refit: bool = True,
) -> TrainingResult:
    """Fit the ranker on logged impressions, split by time (see README, "Learning from readers").

    With ``pools`` (timed logs only) each clicked impression also gives a pool group: the site's list among
    what a served box could have shown then (recsys/learning/pools.py, from the logs up to then), labelled by
    the clicks. Two models come out: the click model, fitted on the site's lists (it re-orders a list; in-view
    AUC is measured on it), and the box model, fitted on the pool groups (what the boxes serve; the pool hit
    rate is measured on it).

    Timed logs: the last ``test_days`` (or the last quarter, for a short log) are held back and only
    reported on; the rest is fitted, early-stopping on its last ``VALID_SHARE``. With ``refit``, the models
    stored are then fitted again on every day with the validated rounds (the held-back days are the freshest
    news there is); the report keeps the held-back figures of the validated fit. Logs without times:
    ``FOLDS``-fold cross-validation by impression for the figures, then one model on all of it.
    """
    # A pool is what was hot at a moment: a log without times has no moments (file order is not time), so
    # it is fitted on its lists alone.
    timed_pools = pools and is_timed(impressions)
    dataset, state = build_dataset(impressions, lookup, popularity, recommend, pools=timed_pools, seed=seed)
    last = float(dataset.times.max()) if dataset.impressions else 0.0
    coreads = CoReadTable(state.coreads.table(last), last if dataset.timed else float("nan"))
    useful = _informative(dataset) if dataset.impressions else np.zeros(0, dtype=bool)
    pooled = dataset.pool_groups()
    listed = useful & ~pooled  # the site's own lists with a click and a non-click
    shown_rows = dataset.shown if dataset.shown is not None else np.ones(dataset.labels.size, dtype=bool)
    report: dict[str, Any] = {
        "impressions": int(np.unique(dataset.groups[shown_rows]).size),  # logged ones (pool groups aside)
        "pool_groups": int(np.unique(dataset.groups[~shown_rows]).size),
        "rows": int(shown_rows.sum()),
        "clicks": int(dataset.labels[shown_rows].sum()),
        "informative_impressions": int(listed.sum()),
        "timed": dataset.timed,
        "features": list(FEATURES),
        "coread_articles": len(coreads.neighbours),
    }
    if listed.sum() < MIN_IMPRESSIONS:
        report["model"] = (
            f"not fitted: {int(listed.sum())} impressions with a click and a non-click, fewer than {MIN_IMPRESSIONS}; "
            "Recommendation keeps the hand-set blend ([recommend] in the config)"
        )
        return TrainingResult(None, coreads, report)
    impression_times = np.full(dataset.impressions, np.nan)
    impression_times[dataset.groups] = dataset.times
    rng = np.random.default_rng(seed)
    held_rows = None
    seen_until: float | None = None  # no times: unknown
    if dataset.timed:
        span_days = (impression_times.max() - impression_times.min()) / 86_400.0
        if span_days >= 2 * test_days:
            cut = impression_times.max() - test_days * 86_400.0
            report["split"] = f"fitted before {_iso(cut)}, tested on the last {test_days:g} days"
        else:
            cut = float(np.quantile(impression_times, 0.75))
            report["split"] = f"log spans {span_days:.1f} days: fitted on the first 75%, tested on the rest"
        test = impression_times >= cut
        fit = ~test
        valid_cut = float(np.quantile(impression_times[fit], 1 - VALID_SHARE))
        valid = fit & (impression_times >= valid_cut)
        if (test & useful).sum() < MIN_TEST_IMPRESSIONS:
            test = np.zeros_like(test)
        # Two models (recsys/learning/ranker.py): the click model learns from the site's lists (what readers chose
        # among what they were shown; it re-orders a list, what in-view AUC measures), the box model from the
        # pools (what readers clicked among what a box could have shown then; what the boxes serve).
        ranker = LearnedRanker.fit(
            _parts(dataset, fit & ~valid & useful & ~pooled), _parts(dataset, valid & useful & ~pooled)
        )
        if pooled[fit & ~valid & useful].any() and pooled[valid & useful].any():
            box = LearnedRanker.fit(
                _parts(dataset, fit & ~valid & useful & pooled), _parts(dataset, valid & useful & pooled)
            )
            report["box_model"] = {"rounds": box.meta["rounds"], "importance": box.importance()}
            ranker.meta["box_model"] = {"rounds": box.meta["rounds"]}
            ranker = ranker.with_box(box.model_text)
        held = dataset.take(test & useful)
        shown = held.in_view()
        held_rows = (shown.features, shown.labels, shown.groups, shown.times) if held.impressions else None
        report["held_out"] = {
            "impressions": held.impressions,
            "auc": _scores_table(shown, ranker.score(shown.features)) if held.impressions else {},
        }
        boxes = dataset.take(test & useful & pooled)
        if boxes.impressions:
            report["held_out"]["pool_hit@10"] = pool_hit_rate(boxes, ranker.score_box(boxes.features), 10)
            report["held_out"]["pool_hit@10 (click model)"] = pool_hit_rate(boxes, ranker.score(boxes.features), 10)
        seen_until = cut
        validated = ranker
        if refit and test.any():
            ranker = _refit(ranker, dataset, useful, pooled, report)
            seen_until = last
    else:
        logged = int(dataset.owners.max()) + 1 if dataset.owners is not None and dataset.owners.size else 0
        fold = dataset.by_impression(rng.permutation(logged) % FOLDS)
        predictions = np.zeros(dataset.labels.size)
        for k in range(FOLDS):
            inner = dataset.by_impression(rng.random(logged) < VALID_SHARE)
            rest = (fold != k) & useful
            model = LearnedRanker.fit(_parts(dataset, rest & ~inner), _parts(dataset, rest & inner))
            rows = fold[dataset.groups] == k
            predictions[rows] = model.score(dataset.features[rows])
        report["split"] = f"no times in the log: {FOLDS}-fold cross-validation by impression (file order replay)"
        whole = dataset.take(useful)
        predicted = predictions[useful[dataset.groups]]
        if whole.shown is not None:
            predicted = predicted[whole.shown]
        report["held_out"] = {
            "impressions": whole.impressions,
            "auc": _scores_table(whole.in_view(), predicted),
        }
        inner = dataset.by_impression(rng.random(logged) < VALID_SHARE)
        ranker = LearnedRanker.fit(_parts(dataset, useful & ~inner), _parts(dataset, useful & inner))
    ranker.meta.update(
        {
            "fitted_on": report["split"],
            "impressions": dataset.impressions,
            "held_out": report["held_out"],
            # the newest impression the stored model learned from (the refit learns from every day)
            "trained_until": seen_until,
        }
    )
    report["importance"] = ranker.importance()
    report["rounds"] = ranker.meta["rounds"]
    report["model"] = "fitted"
    if not dataset.timed:
        return TrainingResult(ranker, coreads, report)
    return TrainingResult(ranker, coreads, report, held_rows, validated, cut)


def _refit(
    validated: LearnedRanker, dataset: Dataset, useful: np.ndarray, pooled: np.ndarray, report: dict[str, Any]
) -> LearnedRanker:
    """The validated models' recipe (their rounds) fitted on every day."""
    ranker = LearnedRanker.fit(_parts(dataset, useful & ~pooled), None, rounds=int(validated.meta["rounds"]))
    if validated.box_text is not None:
        rounds = int(report["box_model"]["rounds"])
        ranker = ranker.with_box(LearnedRanker.fit(_parts(dataset, useful & pooled), None, rounds=rounds).model_text)
    ranker.meta.update({k: v for k, v in validated.meta.items() if k not in ("rounds", "params")})
    report["refit"] = (
        f"stored models refitted on all {int((useful & ~pooled).sum()):,} impressions with the validated "
        f"rounds; held-back figures are the validated fit's"
    )
    ranker.meta["refit"] = report["refit"]
    return ranker


def pool_hit_rate(dataset: Dataset, scores: np.ndarray, k: int) -> float:
    """Share of impressions whose top ``k`` by ``scores`` (over the whole pool) holds a clicked candidate."""
    hits = 0
    bounds = np.flatnonzero(np.diff(dataset.groups, prepend=-1, append=-1))
    for start, stop in itertools.pairwise(bounds.tolist()):
        top = np.argsort(-scores[start:stop], kind="stable")[:k]
        hits += bool(dataset.labels[start:stop][top].any())
    return round(hits / max(1, len(bounds) - 1), 4)


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
