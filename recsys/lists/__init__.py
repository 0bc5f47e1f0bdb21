"""The three list pipelines (Related, Ranking, Recommendation) and what they share (``base``)."""

from recsys.lists.base import ListContext
from recsys.lists.ranking import RankingList
from recsys.lists.recommendation import RecommendationList
from recsys.lists.related import RelatedList

__all__ = ["ListContext", "RankingList", "RecommendationList", "RelatedList"]
