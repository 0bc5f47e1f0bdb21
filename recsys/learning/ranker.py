"""The learned ranker: LightGBM models over the features of recsys/learning/features.py, stored as text in the index.

``recsys train`` fits two (LambdaRank, one group per list, so each learns to order candidates) with a split by
time and early stopping on the later part: the click model on the site's own lists (``score``: re-ordering a
list, what per-impression AUC measures) and the box model on what a box could have shown at each logged moment
(``score_box``: what the boxes serve). It writes ``<index>/ranker.json``: the feature names, what they were
fitted on, the figures reached, and both models in LightGBM's own text format. Nothing is pickled; loading
needs lightgbm and numpy, never torch. A site with too little logged data gets no model file and keeps the
hand-set blend of recsys/config.py ``[recommend]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

from recsys.archive.layout import RANKER_FILE, load_trained, write_json_atomic
from recsys.learning.features import FEATURES
from recsys.types import IndexStateError

RANKER_FORMAT = 1

# LambdaRank with modest trees; early stopping on the later part of the fitting period decides the size.
DEFAULT_PARAMS: dict[str, Any] = {
    "objective": "lambdarank",
    "metric": "ndcg",
    "eval_at": [5],
    "learning_rate": 0.1,
    "num_leaves": 15,
    "min_data_in_leaf": 100,
    "feature_fraction": 0.8,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "verbose": -1,
    "seed": 0,
    "deterministic": True,
    "num_threads": 2,
}
MAX_ROUNDS = 2000
EARLY_STOPPING = 100


def group_sizes(groups: np.ndarray) -> np.ndarray:
    """Sizes of the runs of equal group numbers (rows of one impression are contiguous)."""
    if groups.size == 0:
        return np.zeros(0, dtype=np.int64)
    return np.diff(np.flatnonzero(np.r_[True, groups[1:] != groups[:-1], True]))


# What a model is fitted on: features, labels, groups, and optionally each row's place in its list (0: unknown).
Part = tuple[np.ndarray, ...] | tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]


@dataclass
class LearnedRanker:
    """A fitted model and what is known about it."""

    model_text: str
    features: tuple[str, ...] = FEATURES
    meta: dict[str, Any] = field(default_factory=dict)
    box_text: str | None = None  # the box model (None: boxes use the click model)
    # the Ranking model: fitted on the Ranking box's own task (recsys/learning/clock.py), None when not fitted
    ranking_text: str | None = None
    _booster: Any = field(default=None, repr=False, compare=False)
    _box: Any = field(default=None, repr=False, compare=False)
    _ranking: Any = field(default=None, repr=False, compare=False)
    _id: str = field(default="", repr=False, compare=False)

    @property
    def model_id(self) -> str:
        """A short fingerprint of the models (what the served-list log records as the model behind a list)."""
        if not self._id:
            ranking = f"\x00{self.ranking_text}" if self.ranking_text is not None else ""  # older ids stay as they were
            text = f"{self.model_text}\x00{self.box_text or ''}{ranking}".encode("utf-8", "surrogatepass")
            self._id = xxhash.xxh3_64_hexdigest(text)[:12]
        return self._id

    def _loaded(self, slot: str, text: str) -> Any:
        """The LightGBM booster of ``text``, parsed on first use and kept in ``slot`` (loading needs no torch)."""
        booster = getattr(self, slot)
        if booster is None:
            import lightgbm

            booster = lightgbm.Booster(model_str=text)
            setattr(self, slot, booster)
        return booster

    @property
    def booster(self) -> Any:
        return self._loaded("_booster", self.model_text)

    def score(self, features: np.ndarray) -> np.ndarray:
        """Click scores of feature rows, given that the reader sees them (higher = more likely clicked;
        comparable within one list): how the site's own lists are re-ordered, what in-view AUC measures."""
        return _predict(self.booster, features)

    def score_box(self, features: np.ndarray) -> np.ndarray:
        """Scores for a box chosen from the whole catalogue: the box model's, fitted on what a box could have
        shown at each logged moment (recsys/learning/pools.py); without one, the click score. The click model
        alone picks badly from a catalogue: it learned to compare articles a reader was already shown."""
        if self.box_text is None:
            return self.score(features)
        return _predict(self._loaded("_box", self.box_text), features)

    def score_ranking(self, features: np.ndarray) -> np.ndarray:
        """Scores of the Ranking box's leaders with no reader known: the Ranking model's, fitted on which of the
        clock's leaders readers clicked next (recsys/learning/clock.py); without one, the box score."""
        if self.ranking_text is None:
            return self.score_box(features)
        return _predict(self._loaded("_ranking", self.ranking_text), features)

    def importance(self) -> dict[str, float]:
        """Each feature's share of the total split gain."""
        gains = np.asarray(self.booster.feature_importance("gain"), dtype=np.float64)
        total = float(gains.sum()) or 1.0
        return {name: float(g) / total for name, g in zip(self.features, gains, strict=True)}

    @classmethod
    def fit(
        cls,
        train: Part,
        valid: Part | None,
        params: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
        rounds: int | None = None,
    ) -> LearnedRanker:
        """Fit on ``train`` (features, labels, groups[, positions]), stopping early on ``valid``; or, for a
        refit on everything once validated, exactly ``rounds`` rounds with no ``valid``.

        With positions (the places readers saw the rows at: served lists record them; 0 is unknown), LightGBM's
        position-debiased LambdaMART learns how much each place is looked at apart from what is there, so a
        model trained on what it served does not learn that "first" means "good"."""
        import lightgbm

        settings = {**DEFAULT_PARAMS, **(params or {})}
        x, y, g, *rest = train
        position = rest[0] if rest else None
        train_set = lightgbm.Dataset(
            x, y, group=group_sizes(g), feature_name=list(FEATURES), free_raw_data=True, position=position
        )
        booster = _boost(lightgbm, settings, train_set, valid, rounds)
        text = booster.model_to_string(num_iteration=booster.best_iteration or None)
        used = int(booster.best_iteration or booster.current_iteration())
        info = {**(meta or {}), "rounds": used, "params": settings}
        return cls(text, FEATURES, info)

    def with_box(self, box_text: str | None) -> LearnedRanker:
        """This click model with a box model (``fit``'s ``model_text`` on pool groups); the Ranking model kept."""
        return LearnedRanker(self.model_text, self.features, self.meta, box_text, self.ranking_text)

    def with_ranking(self, ranking_text: str | None) -> LearnedRanker:
        """These models with a Ranking model (``fit``'s ``model_text`` on the Ranking's leaders)."""
        return LearnedRanker(self.model_text, self.features, self.meta, self.box_text, ranking_text)

    # -- storage -------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        data = {"format": RANKER_FORMAT, "features": list(self.features), "meta": self.meta, "model": self.model_text}
        if self.box_text is not None:
            data["box_model"] = self.box_text
        if self.ranking_text is not None:
            data["ranking_model"] = self.ranking_text
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LearnedRanker:
        if data.get("format") != RANKER_FORMAT:
            raise IndexStateError(f"ranker format {data.get('format')} is not {RANKER_FORMAT}; re-run `recsys train`")
        features = tuple(data.get("features", ()))
        if features != FEATURES:
            raise IndexStateError(
                "the stored ranker was fitted on other features than this recsys computes; re-run `recsys train`"
            )
        box, ranking = data.get("box_model"), data.get("ranking_model")
        for name, text in (("box_model", box), ("ranking_model", ranking)):
            if text is not None and not isinstance(text, str):
                raise IndexStateError(f"ranker.json: {name} must be LightGBM model text; re-run `recsys train`")
        return cls(str(data["model"]), features, dict(data.get("meta", {})), box, ranking)

    def save(self, root: str | Path) -> Path:
        """Write ``<root>/ranker.json`` atomically (a reader sees the old model or the new one, never half)."""
        return write_json_atomic(Path(root) / RANKER_FILE, self.to_json())

    @classmethod
    def load(cls, root: str | Path) -> LearnedRanker | None:
        """The index's ranker, or None when ``recsys train`` has not stored one."""
        return load_trained(root, RANKER_FILE, cls.from_json)


def _boost(
    lightgbm: Any,
    settings: dict[str, Any],
    train_set: Any,
    valid: Part | None,
    rounds: int | None,
) -> Any:
    """``lightgbm.train``: early-stopped on ``valid`` (features, labels, groups[, positions]), or ``rounds``
    rounds flat."""
    if valid is None:
        return lightgbm.train(settings, train_set, max(1, rounds or 1))
    position = valid[3] if len(valid) > 3 else None
    valid_set = lightgbm.Dataset(
        valid[0], valid[1], group=group_sizes(valid[2]), reference=train_set, position=position
    )
    return lightgbm.train(
        settings,
        train_set,
        MAX_ROUNDS,
        valid_sets=[valid_set],
        callbacks=[lightgbm.early_stopping(EARLY_STOPPING, verbose=False)],
    )


def _predict(booster: Any, features: np.ndarray) -> np.ndarray:
    if features.shape[0] == 0:
        return np.zeros(0)
    # one thread: a list is a few hundred rows, where OpenMP start-up costs more than it saves
    scores = booster.predict(features, num_threads=1)
    return np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
