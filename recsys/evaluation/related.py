"""Related-list quality against a label: does the list stay on the article's topic, and at what cost?

Every system answers the same queries in one run, so the table compares like with like:

- ``random``: k live articles at random (the floor);
- ``lexical``: TF-IDF cosine over title, abstract and body (what "more like this" search plugins do);
- ``dense kNN``: plain nearest neighbours of the article's vector (the model alone);
- ``recsys``: ``Recommender.related`` as configured (dedup, neighbourhood feedback, freshness, MMR).

Per list: precision@k and nDCG@k of same-label hits, the duplicate rate (same-story pairs inside the
list), intra-list diversity (1 - mean pairwise cosine), the median age gap to the source where both
have dates; over all lists, catalogue coverage.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from recsys.archive.ann import exact_search
from recsys.archive.store import NO_TIME
from recsys.config import RelatedConfig
from recsys.evaluation.metrics import (
    catalogue_coverage,
    duplicate_rate,
    intra_list_similarity,
    ndcg_binary_at_k,
    precision_at_k,
)
from recsys.service import Recommender

DAY = 86_400.0
RelatedFn = Callable[[int, str], list[int]]  # (row, article id) -> rows, best first


@dataclass
class SystemScore:
    """Mean metrics of one system over the evaluated articles."""

    system: str
    precision: float
    ndcg: float
    duplicate_rate: float
    diversity: float
    coverage: float
    median_age_gap_days: float | None
    mean_length: float
    ms_per_query: float
    per_query_precision: list[float] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, float | str | None]:
        return {k: v for k, v in self.__dict__.items() if k != "per_query_precision"}


@dataclass
class RelatedReport:
    """The systems' scores on one labelled article set."""

    label: str
    k: int
    queries: int
    articles: int
    labels: int
    dated: int
    scores: list[SystemScore]

    def score(self, system: str) -> SystemScore:
        return next(s for s in self.scores if s.system == system)

    def to_dict(self) -> dict[str, object]:
        return {
            **{k: v for k, v in self.__dict__.items() if k != "scores"},
            "systems": [s.to_dict() for s in self.scores],
        }


def random_system(live: np.ndarray, k: int, seed: int = 0) -> RelatedFn:
    rng = np.random.default_rng(seed)

    def answer(row: int, _: str) -> list[int]:
        picks = rng.choice(live, min(k + 1, live.size), replace=False)
        return [int(r) for r in picks if r != row][:k]

    return answer


def lexical_system(rec: Recommender, rows: np.ndarray, k: int) -> RelatedFn:
    """TF-IDF (sublinear tf, English stop words) cosine over the articles' text."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    articles = rec.view.store.get_rows(rows)
    texts = [" ".join((articles[int(r)].title, articles[int(r)].abstract, articles[int(r)].body)) for r in rows]
    matrix = TfidfVectorizer(sublinear_tf=True, stop_words="english", min_df=1).fit_transform(texts)
    position = {int(r): i for i, r in enumerate(rows)}

    def answer(row: int, _: str) -> list[int]:
        i = position[row]
        sims = (matrix @ matrix[i].T).toarray().ravel()
        sims[i] = -np.inf
        best = np.argpartition(-sims, min(k, sims.size - 1))[: k + 1]
        best = best[np.argsort(-sims[best], kind="stable")]
        return [int(rows[j]) for j in best if j != i][:k]

    return answer


def dense_system(rec: Recommender, live: np.ndarray, k: int) -> RelatedFn:
    vectors = rec.view.vectors

    def answer(row: int, _: str) -> list[int]:
        _, found = exact_search(vectors, vectors[row], k + 1, live)
        return [int(r) for r in found[0] if r >= 0 and r != row][:k]

    return answer


def hybrid_system(rec: Recommender, live: np.ndarray, k: int, depth: int = 50, rrf_k: float = 60.0) -> RelatedFn:
    """Dense + lexical hybrid: reciprocal rank fusion of plain dense kNN and BM25 (bm25s; the article's own
    text as the query), each ``depth`` deep. The standard hybrid search baseline recsys must beat."""
    import bm25s

    articles = rec.view.store.get_rows(live)
    texts = [" ".join((articles[int(r)].title, articles[int(r)].abstract, articles[int(r)].body)) for r in live]
    tokens = bm25s.tokenize(texts, stopwords="en", show_progress=False)
    bm25 = bm25s.BM25()
    bm25.index(tokens, show_progress=False)
    vectors = rec.view.vectors
    position = {int(r): i for i, r in enumerate(live)}
    depth = min(depth, live.size)

    def answer(row: int, _: str) -> list[int]:
        fused: dict[int, float] = {}
        _, dense = exact_search(vectors, vectors[row], depth, live)
        for rank, found in enumerate(r for r in dense[0].tolist() if r >= 0):
            fused[found] = fused.get(found, 0.0) + 1.0 / (rrf_k + rank + 1)
        query = [[t for t in tokens.ids[position[row]]]]
        docs, _ = bm25.retrieve(
            bm25s.tokenization.Tokenized(ids=query, vocab=tokens.vocab), k=depth, show_progress=False, n_threads=1
        )
        for rank, doc in enumerate(docs[0].tolist()):
            found = int(live[doc])
            fused[found] = fused.get(found, 0.0) + 1.0 / (rrf_k + rank + 1)
        fused.pop(row, None)
        return [r for r, _ in sorted(fused.items(), key=lambda item: (-item[1], item[0]))][:k]

    return answer


def recsys_system(rec: Recommender, k: int) -> RelatedFn:
    store = rec.view.store

    def answer(_: int, article_id: str) -> list[int]:
        hits = rec.related(article_id, k)
        rows = store.rows_of(h.id for h in hits)
        return [rows[h.id] for h in hits]

    return answer


def evaluate_related(
    rec: Recommender,
    labels: Mapping[str, str],
    k: int = 10,
    sample: int | None = None,
    seed: int = 0,
    systems: Mapping[str, RelatedFn] | None = None,
    label_name: str = "label",
) -> RelatedReport:
    """Score each system on every labelled indexed article (or a seeded sample of them)."""
    view = rec.view
    live = np.flatnonzero(view.live)
    ids = view.store.ids_of(live)
    labelled = [(int(r), ids[int(r)]) for r in live if labels.get(ids[int(r)])]
    label_of = {r: labels[a] for r, a in labelled}
    sizes = Counter(label_of.values())
    queries = labelled
    if sample is not None and sample < len(labelled):
        picks = np.random.default_rng(seed).choice(len(labelled), size=sample, replace=False)
        queries = [labelled[i] for i in sorted(picks)]
    if systems is None:
        systems = default_systems(rec, k, seed)
    published = np.asarray(view.rows["published"])
    stories = np.asarray(view.rows["story"])
    threshold = RelatedConfig().duplicate_similarity  # fixed, so sweeping recsys's own threshold is measured fairly
    scores = []
    for name, answer in systems.items():
        precisions, ndcgs, dups, diversities, gaps, lengths, lists = [], [], [], [], [], [], []
        elapsed = 0.0
        for row, article_id in queries:
            started = time.perf_counter()
            found = answer(row, article_id)
            elapsed += time.perf_counter() - started
            own = label_of[row]
            relevant = [label_of.get(r) == own for r in found]
            precisions.append(precision_at_k(relevant, k))
            ndcgs.append(ndcg_binary_at_k(relevant, k, sizes[own] - 1))
            vectors = np.asarray(view.vectors[found], dtype=np.float32) if found else np.zeros((0, 1), np.float32)
            dups.append(duplicate_rate(vectors, stories[found].tolist(), threshold))
            diversities.append(1.0 - intra_list_similarity(vectors))
            if published[row] != NO_TIME:
                gaps += [
                    abs(float(published[r]) - float(published[row])) / DAY for r in found if published[r] != NO_TIME
                ]
            lengths.append(len(found))
            lists.append([str(r) for r in found])
        scores.append(
            SystemScore(
                system=name,
                precision=float(np.mean(precisions)),
                ndcg=float(np.mean(ndcgs)),
                duplicate_rate=float(np.mean(dups)),
                diversity=float(np.mean(diversities)),
                coverage=catalogue_coverage(lists, len(labelled)),
                median_age_gap_days=float(np.median(gaps)) if gaps else None,
                mean_length=float(np.mean(lengths)),
                ms_per_query=1000 * elapsed / max(1, len(queries)),
                per_query_precision=precisions,
            )
        )
    dated = int((published[live] != NO_TIME).sum())
    return RelatedReport(label_name, k, len(queries), len(labelled), len(sizes), dated, scores)


def default_systems(rec: Recommender, k: int, seed: int = 0) -> dict[str, RelatedFn]:
    live = np.flatnonzero(rec.view.live)
    return {
        "random": random_system(live, k, seed),
        "lexical (TF-IDF)": lexical_system(rec, live, k),
        "dense kNN": dense_system(rec, live, k),
        "dense + lexical hybrid": hybrid_system(rec, live, k),
        "recsys": recsys_system(rec, k),
    }


def store_labels(rec: Recommender, column: str) -> dict[str, str]:
    """Article id -> a stored metadata column (category, subcategory, language)."""
    return {article_id: value for _, article_id, value in rec.view.store.labels(column) if value}


def label_map(articles: Sequence[object], field_name: str) -> dict[str, str]:
    """Article id -> the value of a field (a schema field or an unknown field kept as metadata)."""
    found = {}
    for article in articles:
        value = getattr(article, field_name, None)
        if value is None:
            value = getattr(article, "extra", {}).get(field_name)
        if isinstance(value, list | tuple):
            value = value[0] if value else None
        if value not in (None, ""):
            found[article.id] = str(value)  # type: ignore[attr-defined]
    return found
