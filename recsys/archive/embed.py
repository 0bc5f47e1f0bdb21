"""The embedding step of an index job: vectors for the articles its plan says need one.

Only texts that changed are embedded (``JobPlan.to_embed``); an article coming back from a takedown with its
text unchanged gets its parked vector back instead. The embedder is loaded only when something is embedded.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from recsys.archive.plan import JobPlan
from recsys.embedder import Embedder, text_of
from recsys.types import Article, RecsysError

ProgressStart = Callable[[int], Callable[[int], None]]  # total -> advance(n)


@dataclass
class Embedded:
    """The vectors a job writes, by article id, and what embedding them cost."""

    vectors: dict[str, np.ndarray]
    count: int  # texts embedded (parked vectors re-used are not counted)
    seconds: float
    dimension: int | None  # None when nothing was embedded


def embed_texts(
    embedder: Embedder, articles: list[Article], max_chars: int, progress: ProgressStart | None
) -> np.ndarray:
    """float32 [len(articles), dim] for the embedded text of each article, in order."""
    if not articles:
        return np.empty((0, 0), dtype=np.float32)
    texts = [text_of(a, max_chars) for a in articles]
    advance = progress(len(texts)) if progress is not None else None
    vectors = embedder.encode(texts, progress=advance)
    if vectors.shape != (len(texts), vectors.shape[1]) or vectors.dtype != np.float32:
        raise RecsysError(f"embedder returned {vectors.shape} {vectors.dtype} for {len(texts)} texts")
    return vectors


def embed_plan(
    plan: JobPlan, embedder: Callable[[], Embedder], max_chars: int, progress: ProgressStart | None
) -> Embedded:
    """Vectors for every article of ``plan.to_embed``: fresh ones from ``embedder()`` (called only when a
    text needs embedding), parked ones decoded. The seconds are the embedding's own, after the model has loaded
    (a small add's docs/s is not the model's load time)."""
    fresh = [a for a in plan.to_embed if a.id not in plan.reuse]
    vectors: dict[str, np.ndarray] = {}
    dimension = None
    model = embedder() if fresh else None
    if model is not None:
        model.dimension  # noqa: B018 - loads the model now, outside the timed part
    started = time.perf_counter()
    if model is not None:
        embedded = embed_texts(model, fresh, max_chars, progress)
        vectors = {a.id: embedded[i] for i, a in enumerate(fresh)}
        dimension = int(embedded.shape[1])
    for article_id, encoded in plan.reuse.items():
        vectors[article_id] = np.frombuffer(base64.b64decode(encoded), dtype=np.float32)
    return Embedded(vectors, len(fresh), time.perf_counter() - started, dimension)
