import numpy as np
import pytest

from recsys.evaluation.metrics import intra_list_similarity, precision_at_k, recall_at_k


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
