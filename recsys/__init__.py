"""recsys: related-article, ranking and recommendation lists for news sites.

``from recsys import Recommender`` is the query path: it needs numpy (and faiss for large
indexes) but never torch or sentence-transformers.
"""

from recsys.archive.ann import limit_compute_threads
from recsys.config import Settings, load_settings
from recsys.service import Recommender
from recsys.types import Article, Hit, RecsysError, UnknownArticle

__all__ = [
    "Article",
    "Hit",
    "Recommender",
    "RecsysError",
    "Settings",
    "UnknownArticle",
    "limit_compute_threads",
    "load_settings",
]
__version__ = "0.1.0"
