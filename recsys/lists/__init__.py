"""The three list pipelines (Related, Ranking, Recommendation) and what they share.

``base`` (the context a list is built in, filters, candidates), ``related``, ``ranking`` (the Ranking box),
``recommendation`` and ``learned`` (the learned ranker applied to a list), ``scoring`` (the Related scoring
formula: similarity, freshness, popularity, reasons).

May import: ``recsys.types``, ``recsys.config``, ``recsys.ingest``, ``recsys.archive``, ``recsys.signals``
and ``recsys.learning``. The service composes the lists; nothing here imports it.
"""

from recsys.lists.base import ListContext
from recsys.lists.ranking import RankingList
from recsys.lists.recommendation import RecommendationList
from recsys.lists.related import RelatedList

__all__ = ["ListContext", "RankingList", "RecommendationList", "RelatedList"]
