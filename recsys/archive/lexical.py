"""A lexical view of each article: its strongest TF-IDF terms, for the dense + lexical hybrid Related.

Dense vectors capture what an article is about but blur names, numbers and rare terms ("Ciarán", "ECB",
"Sellafield"); shared rare words are what TF-IDF is good at. Each article keeps its ``TERMS`` heaviest
terms (hashed into ``BUCKETS`` ids, weights ``(1 + log tf) * idf``, unit length, float16) in two arrays
row-aligned with the vectors, so the lexical cosine of a source and a few hundred candidates is one vectorised
comparison of (candidates x TERMS x TERMS) ids, well under a millisecond.

Document frequencies are counted as articles are added (``df.npy`` in each version, carried forward), so
an ``index add`` tokenises only the new texts; an article's weights use the frequencies known when it
was added (removals are not subtracted: the figures drift slowly and only ever toward "more common").
Tokens are lower-cased letter runs of two or more, stemmed by the Snowball stemmer of the article's language
(PyStemmer, the stemmer bm25s uses: "elections" and "election", "valget" and "valg" are one term); a short
English stop list is dropped for English and unknown text, and any language's function words end up with a low idf
anyway. An article in a language Snowball has no stemmer for keeps its words as they are.
"""

from __future__ import annotations

import hashlib
import math
import re
import threading
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

TERMS = 128  # 64 kept too few on long articles (BBC precision@10 0.927 vs 0.932 with 128)
WEIGHT_DTYPE = np.float16  # 128 x (4 + 2) bytes per article
BUCKETS = 1 << 20
TERMS_FILE = "lex_terms.npy"
WEIGHTS_FILE = "lex_weights.npy"
DF_FILE = "lex_df.npy"
_TOKEN = re.compile(r"[^\W\d_]{2,}")
_STOP = frozenset(
    """a about after all also an and are as at be been but by can could did do does for from had has have he
    her his how i if in into is it its just more most new not of on one or our out over said says she so
    some than that the their them then there these they this those to up was we were what when which who
    will with would you your""".split()
)


# ISO 639-1 code -> Snowball algorithm (PyStemmer's names)
SNOWBALL = {
    "ar": "arabic", "ca": "catalan", "cs": "czech", "da": "danish", "de": "german", "el": "greek", "en": "english",
    "es": "spanish", "et": "estonian", "eu": "basque", "fa": "persian", "fi": "finnish", "fr": "french",
    "ga": "irish", "hi": "hindi", "hu": "hungarian", "hy": "armenian", "id": "indonesian", "it": "italian",
    "lt": "lithuanian", "nb": "norwegian", "ne": "nepali", "nl": "dutch", "nn": "norwegian", "no": "norwegian",
    "pl": "polish", "pt": "portuguese", "ro": "romanian", "ru": "russian", "sr": "serbian", "sv": "swedish",
    "ta": "tamil", "tr": "turkish", "yi": "yiddish",
}  # fmt: skip
_STEMMERS = threading.local()  # a PyStemmer object is not safe to share between threads


def _stemmer(language: str) -> Any:
    found = getattr(_STEMMERS, "by_language", None)
    if found is None:
        found = _STEMMERS.by_language = {}
    code = language.lower().split("-")[0].split("_")[0]
    if code not in found:
        algorithm = SNOWBALL.get(code)
        found[code] = None
        if algorithm is not None:
            import Stemmer

            if algorithm in Stemmer.algorithms():
                found[code] = Stemmer.Stemmer(algorithm)
    return found[code]


def tokens(text: str, language: str = "") -> list[str]:
    """The lexical terms of a text in ``language`` (an ISO code; "" unknown, stemmed as English)."""
    words = [m.lower() for m in _TOKEN.findall(text)]
    if language.lower().startswith("en") or not language:
        words = [w for w in words if w not in _STOP]
    stemmer = _stemmer(language or "en")
    return stemmer.stemWords(words) if stemmer is not None else words


def term_id(token: str) -> int:
    """A stable bucket for a token (the same in every process, unlike ``hash``)."""
    return int.from_bytes(hashlib.blake2b(token.encode("utf-8"), digest_size=4).digest(), "little") % BUCKETS


def term_counts(texts: Sequence[str], languages: Sequence[str] | None = None) -> list[Counter[int]]:
    """Term counts per text (``languages``: each text's language, "" unknown)."""
    languages = languages if languages is not None else [""] * len(texts)
    return [Counter(term_id(t) for t in tokens(text, lang)) for text, lang in zip(texts, languages, strict=True)]


def add_frequencies(df: np.ndarray, counts: Sequence[Counter[int]]) -> None:
    """Count each document's terms once in ``df`` (in place)."""
    for found in counts:
        if found:
            np.add.at(df, np.fromiter(found.keys(), dtype=np.int64, count=len(found)), 1)


def weigh(counts: Sequence[Counter[int]], df: np.ndarray, documents: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``TERMS`` heaviest terms of each document: ids (-1 padded) and unit-length weights."""
    ids = np.full((len(counts), TERMS), -1, dtype=np.int32)
    weights = np.zeros((len(counts), TERMS), dtype=WEIGHT_DTYPE)
    for i, found in enumerate(counts):
        if not found:
            continue
        terms = np.fromiter(found.keys(), dtype=np.int64, count=len(found))
        tf = 1.0 + np.log(np.fromiter(found.values(), dtype=np.float64, count=len(found)))
        idf = np.log((documents + 1.0) / (df[terms] + 1.0)) + 1.0
        value = tf * idf
        top = np.argsort(-value, kind="stable")[:TERMS]
        norm = math.sqrt(float((value[top] ** 2).sum())) or 1.0
        ids[i, : top.size] = terms[top]
        weights[i, : top.size] = value[top] / norm
    return ids, weights


_SCRATCH = threading.local()


def similarity(source_ids: np.ndarray, source_weights: np.ndarray, ids: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Lexical cosine (over the kept terms) of one source against rows of candidates.

    The source's weights are written into a per-thread table indexed by term id, every candidate term is
    looked up in it (one gather of candidates x TERMS), and the table is cleared again: a few tens of
    microseconds for a hundred candidates.
    """
    if ids.shape[0] == 0:
        return np.zeros(0)
    table = getattr(_SCRATCH, "table", None)
    if table is None:
        table = _SCRATCH.table = np.zeros(BUCKETS + 1, dtype=np.float32)  # the last slot answers id -1
    keep = source_ids[source_ids >= 0]
    table[keep] = source_weights[source_ids >= 0]
    try:
        looked_up = np.take(table, ids)  # -1 reads the last slot, which stays 0
    finally:
        table[keep] = 0.0
    return np.einsum("ij,ij->i", looked_up, np.asarray(weights, dtype=np.float32)).astype(np.float64)
