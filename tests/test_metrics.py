import numpy as np
import pytest

from recsys.evaluation.metrics import (
    auc,
    catalogue_coverage,
    duplicate_rate,
    intra_list_similarity,
    mrr,
    ndcg_at_k,
    ndcg_binary_at_k,
    precision_at_k,
    recall_at_k,
)


def test_precision_counts_short_lists_gaps_as_misses():
    assert precision_at_k([True, False, True, True], 4) == 0.75
    assert precision_at_k([True, True], 4) == 0.5
    assert precision_at_k([True] * 12, 10) == 1.0
    with pytest.raises(ValueError):
        precision_at_k([], 0)


def test_recall():
    assert recall_at_k(["a", "b", "c"], {"c", "z"}, 2) == 0.0
    assert recall_at_k(["a", "b", "c"], {"c", "z"}, 3) == 0.5
    assert recall_at_k(["a"], set(), 1) == 0.0


def test_intra_list_similarity_by_hand():
    v = np.array([[1, 0], [1, 0], [0, 1]], dtype=np.float32)
    # pairs: (0,1)=1, (0,2)=0, (1,2)=0 -> mean 1/3
    assert intra_list_similarity(v) == pytest.approx(1 / 3)
    assert intra_list_similarity(v[:1]) == 0.0


def test_auc_by_hand_with_ties():
    # positives score 0.9 and 0.5; negatives 0.5 and 0.1: pairs (0.9>0.5, 0.9>0.1, 0.5=0.5 -> 1/2, 0.5>0.1)
    assert auc([1, 1, 0, 0], [0.9, 0.5, 0.5, 0.1]) == pytest.approx(3.5 / 4)
    assert auc([1, 0], [0.0, 1.0]) == 0.0
    assert auc([1, 1], [0.3, 0.2]) is None


def test_mrr_and_ndcg_by_hand():
    labels, scores = [0, 1, 0, 1], [0.9, 0.8, 0.7, 0.1]
    # clicked items at ranks 2 and 4
    assert mrr(labels, scores) == pytest.approx((1 / 2 + 1 / 4) / 2)
    dcg = 1 / np.log2(3) + 1 / np.log2(5)
    ideal = 1 + 1 / np.log2(3)
    assert ndcg_at_k(labels, scores, 4) == pytest.approx(dcg / ideal)
    assert ndcg_at_k(labels, scores, 1) == 0.0
    assert ndcg_at_k([0, 0], [1, 2], 2) == 0.0


def test_ndcg_binary_by_hand():
    # hits at ranks 1 and 3 of k=3, with 2 relevant items in all: ideal = 1 + 1/log2(3)
    assert ndcg_binary_at_k([True, False, True], 3, 2) == pytest.approx((1 + 0.5) / (1 + 1 / np.log2(3)))
    assert ndcg_binary_at_k([True, True], 5, 2) == pytest.approx(1.0)
    assert ndcg_binary_at_k([False], 1, 0) == 0.0


def test_duplicate_rate_and_coverage():
    v = np.array([[1, 0], [1, 0], [0, 1]], dtype=np.float32)
    assert duplicate_rate(v, [0, 0, 0], 0.92) == pytest.approx(1 / 3)
    assert duplicate_rate(v, [0, 5, 5], 0.99) == pytest.approx(2 / 3)  # (0,1) by vector, (1,2) by story
    assert catalogue_coverage([["a", "b"], ["b", "c"]], 10) == pytest.approx(0.3)
