"""How candidates become a list: the scoring formula, same-story grouping, MMR, and reasons.

Related score of candidate c for source article s (weights in ``[related]``)::

    topic(s)  = normalise(v(s) + neighbourhood_weight * mean(v of the neighbourhood nearest candidates))
    score(c)  = cos(topic(s), c) + freshness_weight * 0.5 ** (age_days(c) / half_life_days)

``topic(s)`` is pseudo-relevance feedback: the article's vector pulled towards its closest
neighbours, so the list follows what the article is about rather than one odd paragraph. On BBC
it lifts same-topic precision@10 from 0.916 to 0.926 (benchmarks/related_quality.py).

``age_days`` counts from the query time (``now``) to c's publication; an undated article gets no
freshness bonus. With the defaults (weight 0.1, half-life 14 days) last week's article gains
about 0.07 over an archive piece, so the old one wins only when it is clearly more similar.

Then, in score order:

1. Candidates with cos >= ``duplicate_similarity`` to the source, or the source's canonical URL,
   are copies of the story being read and are dropped.
2. Candidates are grouped into stories the same way (pairwise cos >= ``duplicate_similarity`` or
   one canonical URL); each story keeps its best-scoring member, which with freshness in the
   score is the most similar, most recent version.
3. Maximal marginal relevance picks the final k: at each step the candidate maximising
   ``mmr_lambda * score - (1 - mmr_lambda) * max cos(candidate, already picked)``.

Everything here works on numpy arrays; nothing touches storage.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence

import numpy as np

from recsys.archive.store import NO_TIME
from recsys.config import RelatedConfig

DAY = 86_400.0
_WORD = re.compile(r"[^\W\d_][\w'\-]{3,}")
_NAME_WORD = re.compile(r"[^\W\d_][\w'’\-]*")
_POSSESSIVE = re.compile(r"['’]s$")
HEADLINES_REMEMBERED = 20_000  # headlines whose words and names are remembered (the same hits recur across lists)
NAME_PATTERNS_REMEMBERED = 4_096  # compiled whole-word patterns of names (a few KB each)
SAME_MOMENT_DAYS = 0.5 / 24  # published within half an hour of each other: neither follows the other
# Generic words that say nothing about a story, even when two headlines share them. Rare words are
# judged by the archive itself (``common`` in shared_terms), which also covers other languages.
_STOP = frozenset(
    """about above after again against ahead also among another anyone anything around away back because
    become becomes been before begin being best better between big both bring brings call came can't
    come comes coming could days does doing done down during each early even ever every fact find
    first from full further gets give given gives going gone good great have having help here high
    home into itself just keep know known last late later least left less life like likely little
    long look looks made make makes many more most much must need needs never news next nothing
    now once only open other over part past people place plan plans play read real really right
    said same says should show shows side since some something still such sure take takes taken
    than that their them then there these they thing things think this those though three through
    time times today told took top turn under until very want wants watch ways week weeks well
    went were what when where which while whole will with without work works world would year years
    young your""".split()
)


def freshness(published: np.ndarray, now: float, half_life_days: float) -> np.ndarray:
    """0.5 ** (age / half-life) per article, in (0, 1]; 0 for undated; future dates count as now."""
    published = np.asarray(published, dtype=np.int64)
    dated = published != NO_TIME
    age_days = np.maximum(0.0, (now - published.astype(np.float64)) / DAY)
    return np.where(dated, np.exp2(-age_days / max(half_life_days, 1e-9)), 0.0)


def expand_query(query: np.ndarray, neighbours: np.ndarray, weight: float) -> np.ndarray:
    """The query moved towards the mean of its nearest neighbours (rows best first), unit length."""
    if weight <= 0 or neighbours.shape[0] == 0:
        return query
    expanded = query + weight * neighbours.mean(axis=0)
    norm = float(np.linalg.norm(expanded))
    return expanded / norm if norm > 0 else query


def related_scores(
    similarity: np.ndarray, fresh: np.ndarray, config: RelatedConfig, lexical: np.ndarray | None = None
) -> np.ndarray:
    """The Related formula (see module docstring); ``similarity`` is cos(topic(s), c), ``lexical`` the
    TF-IDF cosine of the two texts' strongest terms (recsys/archive/lexical.py)."""
    scores = similarity.astype(np.float64) + config.freshness_weight * fresh
    if lexical is not None and config.lexical_weight:
        scores = scores + config.lexical_weight * lexical
    return scores


def dedupe_stories(order: np.ndarray, sims: np.ndarray, stories: np.ndarray, threshold: float) -> np.ndarray:
    """Positions (taken in ``order``) that lead their story; later members of a story are dropped.

    ``sims`` is the candidates' pairwise cosine matrix (by position; the caller computes it once for this
    and MMR). Two candidates are one story when their cosine is >= threshold or they share a nonzero story
    key. Greedy in order: a candidate is kept unless an earlier kept one covers it. Computed from one
    "covers" matrix for all pairs; only candidates some earlier one covers are visited (usually a handful),
    each dropped when one of its coverers was kept.
    """
    order = np.asarray(order, dtype=np.int64)
    if order.size == 0:
        return order
    covers = (np.asarray(sims) >= threshold)[np.ix_(order, order)]
    keys = np.asarray(stories)[order]
    if keys.any():
        covers |= (keys[:, None] == keys[None, :]) & (keys[:, None] != 0)
    covers = np.triu(covers, 1)  # covers[i, j]: i comes before j and is the same story
    maybe = np.flatnonzero(covers.any(axis=0))
    if maybe.size == 0:
        return order
    dropped = np.zeros(order.size, dtype=bool)
    for j in maybe.tolist():  # ascending, so every earlier decision is final
        if (covers[:j, j] & ~dropped[:j]).any():
            dropped[j] = True
    return order[~dropped]


def mmr(scores: np.ndarray, sims: np.ndarray, k: int, lam: float) -> np.ndarray:
    """Maximal marginal relevance: k positions trading score against similarity (``sims``, the pairwise
    cosine matrix of the same positions) to those picked."""
    n = scores.shape[0]
    if n == 0 or k <= 0:
        return np.empty(0, dtype=np.int64)
    if lam >= 1.0:
        return np.argsort(-scores, kind="stable")[:k]
    relevance = lam * scores
    gain = relevance.copy()  # nothing picked yet: no redundancy
    redundancy = np.full(n, -np.inf)
    picked = np.empty(min(k, n), dtype=np.int64)
    for i in range(picked.size):
        best = int(np.argmax(gain))
        picked[i] = best
        np.maximum(redundancy, sims[best], out=redundancy)
        gain = relevance - (1.0 - lam) * redundancy
        gain[picked[: i + 1]] = -np.inf
    return picked


def keywords(text: str) -> list[str]:
    """Content words of a headline, in order, for human-readable reasons."""
    return list(_keywords(text))


@functools.lru_cache(maxsize=HEADLINES_REMEMBERED)
def _keywords(text: str) -> tuple[str, ...]:
    seen: dict[str, str] = {}
    for word in _WORD.findall(text):
        low = word.lower().strip("'-")
        if low not in _STOP and low not in seen:
            seen[low] = word
    return tuple(seen.values())


def shared_terms(
    source_title: str,
    source_tags: Sequence[str],
    title: str,
    tags: Sequence[str],
    common: Callable[[str], bool] | None = None,
) -> list[str]:
    """What two articles visibly share, for a reason: their common tags/entities, else headline words
    that are neither generic (a stop list) nor ``common`` in the archive (see VersionReader.is_common)."""
    return terms_shared_with(source_title, source_tags, common)(title, tags)


def names_in(title: str) -> list[str]:
    """The proper names of a headline, whole: maximal runs of capitalised words ("Kim Jong Un", "Marjorie Taylor
    Greene", "North Korea"), never a fragment of one. A lone capitalised first word is the sentence's start, not a
    name; a headline in Title Case has no telling capitals, so it has none."""
    return list(_names_in(title))


@functools.lru_cache(maxsize=HEADLINES_REMEMBERED)
def _names_in(title: str) -> tuple[str, ...]:
    matches = list(_NAME_WORD.finditer(title))
    lower = sum(1 for m in matches if len(m.group()) > 3 and m.group()[0].islower())
    if lower == 0 and sum(1 for m in matches if m.group()[0].isupper()) >= 3:
        return ()  # Title Case (only short words such as "of" or "in" in lower case)
    names: list[str] = []
    run: list[tuple[int, str]] = []  # (word index, word) of the current run
    previous_end = -1

    def close() -> None:
        if len(run) >= 2 or (run and run[0][0] > 0 and run[0][1].lower() not in _STOP):
            names.append(" ".join(w for _, w in run))
        run.clear()

    for index, match in enumerate(matches):
        word = _POSSESSIVE.sub("", match.group()).strip("'-")
        adjacent = bool(run) and not title[previous_end : match.start()].strip()
        if word[:1].isupper() and len(word) > 1:
            if run and not adjacent:
                close()
            run.append((index, word))
        else:
            close()
        previous_end = match.end()
    close()
    return tuple(dict.fromkeys(names))


def _mentions(text: str, name: str) -> bool:
    return _whole_word(name).search(text) is not None


@functools.lru_cache(maxsize=NAME_PATTERNS_REMEMBERED)
def _whole_word(name: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![\w]){re.escape(name)}(?![\w])", flags=re.IGNORECASE)


def terms_shared_with(
    source_title: str, source_tags: Sequence[str], common: Callable[[str], bool] | None = None
) -> Callable[[str, Sequence[str]], list[str]]:
    """``shared_terms`` with the source's side worked out once, for the k hits of one list: the tags/entities both
    carry, else the proper names both headlines mention whole (a one-word name that is ``common`` in the archive
    says nothing), then shared ordinary words when there are two or more: "same topic: Removed" alone told
    readers nothing true."""
    source_tag_set = {s.lower() for s in source_tags}
    source_names = names_in(source_title)
    source_words = {w.lower() for w in keywords(source_title)}

    def shared(title: str, tags: Sequence[str]) -> list[str]:
        tag_overlap = [t for t in tags if t.lower() in source_tag_set]
        if tag_overlap:
            return tag_overlap[:3]
        found: dict[str, str] = {}
        candidate_names = _names_in(title)
        for name, other in [*((n, title) for n in source_names), *((n, source_title) for n in candidate_names)]:
            if name.lower() in found or not _mentions(other, name):
                continue
            if " " not in name and common is not None and common(name.lower()):
                continue
            found[name.lower()] = name
        names = [n for n in found.values() if not any(n != m and _mentions(m, n) for m in found.values())]
        # ordinary words both headlines use, never a piece of a name ("Jong" of "Kim Jong Un"); one alone is no
        # topic ("removed"), two are ("storm", "coast")
        in_names = {w.lower() for n in [*source_names, *candidate_names] for w in n.split()}
        words = [
            w
            for w in _keywords(title)
            if w.lower() in source_words
            and w.lower() not in in_names
            and w.lower() not in found
            and not (common is not None and common(w.lower()))
        ]
        return (names + (words if len(words) >= 2 or names else []))[:3]

    return shared


def is_name(label: str) -> bool:
    """A section or tag a reader can read: not a bare code such as "118"."""
    return any(ch.isalpha() for ch in label)


def days_phrase(days: float) -> str:
    if days < 1:
        hours = max(1, round(days * 24))
        return f"{hours} hour{'s' if hours != 1 else ''}"
    whole = round(days)
    return f"{whole} day{'s' if whole != 1 else ''}"


def related_reason(
    similarity: float,
    gap_days: float | None,
    terms: Sequence[str],
    shared_category: str,
    config: RelatedConfig,
    coread: bool = False,
) -> str:
    """A short explanation: follow-up / earlier coverage of the same story, readers' co-reads, else what is shared."""
    if gap_days is not None and abs(gap_days) <= config.followup_days and similarity >= config.story_similarity:
        if abs(gap_days) < SAME_MOMENT_DAYS:
            return "same story, published at the same time"
        if gap_days >= 0:
            return f"follow-up from {days_phrase(gap_days)} later"
        return f"earlier coverage, {days_phrase(-gap_days)} before"
    if coread:
        return "readers of this also read"
    if terms:
        return "same topic: " + ", ".join(terms)
    if shared_category and is_name(shared_category):  # a section code ("118") is no reason
        return f"same topic: {shared_category}"
    return "similar content"
