"""The last few rankers: every model ``recsys train`` replaces is kept under ``<index>/models/`` so a bad one can
be rolled back in one step (``recsys model list`` / ``recsys model rollback``), and the guard that decides
whether a newly trained model replaces the one serving.

The guard (``better_or_equal``): the current model and the new one are both scored on the new training's
held-back impressions that came after everything the current model learned from (neither has seen them), and
the new one is promoted only if its mean per-impression AUC there is at least the current one's. Too few such
impressions, or a current model with an older feature set, and the new one is promoted.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recsys.archive.layout import MODELS_DIR, RANKER_FILE
from recsys.evaluation.metrics import mean_auc_by_group
from recsys.learning.ranker import LearnedRanker
from recsys.types import RecsysError

KEEP = 5  # earlier models kept


@dataclass(frozen=True)
class StoredModel:
    model_id: str
    path: Path
    saved_at: float
    fitted_on: str
    held_out_auc: float | None
    current: bool


def _describe(path: Path, current: bool) -> StoredModel | None:
    try:
        ranker = LearnedRanker.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError, RecsysError):
        return None
    held = ranker.meta.get("held_out", {}).get("auc", {}).get("recsys (learned)")
    return StoredModel(
        ranker.model_id,
        path,
        path.stat().st_mtime,
        str(ranker.meta.get("fitted_on", "")),
        None if held is None else float(held),
        current,
    )


def list_models(root: str | Path) -> list[StoredModel]:
    """The serving model first, then the kept ones newest first (unreadable files are left out)."""
    root = Path(root)
    found = []
    current = _describe(root / RANKER_FILE, True) if (root / RANKER_FILE).is_file() else None
    if current is not None:
        found.append(current)
    kept = sorted((root / MODELS_DIR).glob("ranker-*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    found += [m for m in (_describe(p, False) for p in kept) if m is not None]
    return found


def keep_current(root: str | Path) -> Path | None:
    """Copy the serving ranker.json into models/ (before it is replaced), keeping the last ``KEEP``."""
    root = Path(root)
    source = root / RANKER_FILE
    if not source.is_file():
        return None
    folder = root / MODELS_DIR
    folder.mkdir(exist_ok=True)
    described = _describe(source, True)
    name = f"ranker-{time.strftime('%Y%m%dT%H%M%S', time.gmtime(source.stat().st_mtime))}"
    target = folder / f"{name}-{described.model_id if described else 'unreadable'}.json"
    shutil.copy2(source, target)
    for old in sorted(folder.glob("ranker-*.json"), key=lambda p: p.stat().st_mtime, reverse=True)[KEEP:]:
        old.unlink(missing_ok=True)
    return target


def rollback(root: str | Path, model_id: str | None = None) -> StoredModel:
    """Serve a kept model again (the newest kept one, or the one with ``model_id``); the one serving is kept."""
    models = list_models(root)
    kept = [m for m in models if not m.current]
    chosen = next((m for m in kept if model_id is None or m.model_id == model_id), None)
    if chosen is None:
        have = ", ".join(m.model_id for m in kept) or "none"
        raise RecsysError(f"no kept model {model_id or ''} to roll back to (kept: {have}); see `recsys model list`")
    root = Path(root)
    keep_current(root)
    tmp = root / f".{RANKER_FILE}.{os.getpid()}.tmp"
    shutil.copy2(chosen.path, tmp)
    os.replace(tmp, root / RANKER_FILE)  # a serving process sees the old file or this one, never half
    return chosen


MIN_FAIR_IMPRESSIONS = 50  # held-back impressions neither model learned from, needed to compare them


def better_or_equal(
    new: LearnedRanker, current: LearnedRanker | None, held: tuple[np.ndarray, ...] | None
) -> tuple[bool, dict[str, float]]:
    """Whether ``new`` should replace ``current``, and both models' AUC on the held-back rows ``held``
    (features, labels, groups, times). Only impressions after everything the current model learned from
    count (a model refitted yesterday has seen yesterday: scoring it there would flatter it); too few of
    those, and the new model is promoted."""
    if current is None or held is None or not held[1].size:
        return True, {}
    features, labels, groups, times = held
    seen = current.meta.get("trained_until")
    if isinstance(seen, int | float):
        fresh = times > float(seen)
        features, labels, groups = features[fresh], labels[fresh], groups[fresh]
    if np.unique(groups).size < MIN_FAIR_IMPRESSIONS or tuple(current.features) != tuple(new.features):
        return True, {}  # nothing fair to compare on, or an older feature set that cannot score today's rows
    figures = {
        "new": mean_auc_by_group(new.score(features), labels, groups)[0],
        "current": mean_auc_by_group(current.score(features), labels, groups)[0],
        "impressions": float(np.unique(groups).size),
    }
    return bool(figures["new"] >= figures["current"]), figures
