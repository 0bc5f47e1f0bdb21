"""One suite every ANN backend passes; the exact numpy backend doubles as ground truth."""

from typing import ClassVar

import numpy as np
import pytest

from recsys.archive.ann import (
    BACKENDS,
    ANNIndex,
    ExactIndex,
    FaissIVFIndex,
    HalfScan,
    exact_search,
    make_index,
    top_k,
)


def clustered(n: int, dim: int = 32, clusters: int = 20, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    x = centres[rng.integers(0, clusters, n)] + 0.3 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


class BackendSuite:
    kind: str
    tuning: ClassVar[dict] = {}

    def make(self, dim: int = 32) -> ANNIndex:
        return make_index(self.kind, dim, **self.tuning)

    def filled(self, n: int = 2000) -> tuple[ANNIndex, np.ndarray, np.ndarray]:
        vectors = clustered(n)
        ids = np.arange(1000, 1000 + n, dtype=np.int64)
        index = self.make()
        index.add(vectors, ids)
        return index, vectors, ids

    def test_each_vector_finds_itself_first(self):
        index, vectors, ids = self.filled()
        scores, found = index.search(vectors[:50], 5)
        assert found.shape == (50, 5) and scores.dtype == np.float32
        assert (found[:, 0] == ids[:50]).all()
        assert np.allclose(scores[:, 0], 1.0, atol=1e-4)
        assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first

    def test_recall_at_10_against_exact(self):
        index, vectors, ids = self.filled()
        queries = clustered(100, seed=99)
        _, truth = exact_search(vectors, queries, 10)
        _, found = index.search(queries, 10)
        recall = np.mean([len(set(ids[t]) & set(f)) / 10 for t, f in zip(truth, found, strict=True)])
        assert recall >= 0.95

    def test_remove_then_add(self):
        index, vectors, ids = self.filled(500)
        index.remove(ids[:10])
        index.remove(np.array([999_999]))  # unknown ids are ignored
        assert len(index) == 490
        _, found = index.search(vectors[:10], 3)
        assert not np.isin(found, ids[:10]).any()
        index.add(vectors[:2], np.array([5, 6]))
        _, found = index.search(vectors[:2], 1)
        assert found[:, 0].tolist() == [5, 6]

    def test_save_load_round_trip(self, tmp_path):
        index, vectors, ids = self.filled(500)
        index.remove(ids[:3])
        before = index.search(vectors[:20], 5)
        index.save(tmp_path / "ann")
        loaded = ANNIndex.load(tmp_path / "ann")
        assert type(loaded) is type(index) and len(loaded) == 497
        after = loaded.search(vectors[:20], 5)
        assert np.array_equal(before[1], after[1]) and np.allclose(before[0], after[0])

    def test_fewer_vectors_than_k_pads(self):
        index = self.make()
        assert index.search(clustered(1), 3)[1].tolist() == [[-1, -1, -1]]
        index.add(clustered(2), np.array([1, 2]))
        scores, found = index.search(clustered(1), 4)
        assert sorted(found[0, :2].tolist()) == [1, 2] and found[0, 2:].tolist() == [-1, -1]
        assert np.isneginf(scores[0, 2:]).all()

    def test_mismatched_ids_rejected(self):
        with pytest.raises(ValueError, match="ids"):
            self.make().add(clustered(3), np.array([1, 2]))


class TestExact(BackendSuite):
    kind = "exact"


class TestFaissFlat(BackendSuite):
    kind = "faiss-flat"


class TestFaissIVF(BackendSuite):
    kind = "faiss-ivf"
    tuning: ClassVar[dict] = {"lists_per_sqrt_n": 1.0, "nprobe": 16}


def test_every_backend_has_a_suite():
    suites = {cls.kind for cls in BackendSuite.__subclasses__()}
    assert suites == set(BACKENDS)


def test_top_k_orders_and_breaks_ties_by_position():
    scores = np.array([0.1, 0.9, 0.5, 0.9, 0.2])
    assert top_k(scores, 3).tolist() == [1, 3, 2]
    assert top_k(scores, 10).tolist() == [1, 3, 2, 4, 0]


def test_exact_search_over_a_subset():
    vectors = np.eye(4, dtype=np.float32)
    scores, ids = exact_search(vectors, vectors[0], 2, rows=np.array([1, 2, 0]))
    assert ids[0].tolist() == [0, 1] and scores[0, 0] == 1.0


@pytest.mark.parametrize("share, k", [(0.9, 10), (0.6, 300), (0.2, 10)])
def test_exact_search_over_most_rows_masks_the_rest_and_answers_as_a_copy_would(share, k):
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(400, 16)).astype(np.float32)
    rows = np.sort(rng.choice(400, int(share * 400), replace=False))
    queries = rng.normal(size=(3, 16)).astype(np.float32)
    scores, ids = exact_search(vectors, queries, k, rows)
    sims = queries @ vectors[rows].T
    for q in range(3):
        expected = rows[np.argsort(-sims[q], kind="stable")[:k]]
        found = ids[q][ids[q] >= 0]
        assert found.tolist() == expected.tolist() and set(found) <= set(rows.tolist())
        np.testing.assert_allclose(scores[q, : found.size], sims[q][np.argsort(-sims[q], kind="stable")[:k]], rtol=1e-5)
        assert np.all(np.isneginf(scores[q, found.size :]))  # fewer wanted rows than k: the rest is padding


def test_the_fp16_first_pass_answers_exactly_what_the_float32_scan_does():
    rng = np.random.default_rng(5)
    base = rng.normal(size=(3000, 32)).astype(np.float32)
    # near-ties closer than fp16 can tell apart: the shortlist must grow for the float32 order to come out
    base[1000:1400] = base[0] + rng.normal(0, 0.05, size=(400, 32)).astype(np.float32)
    vectors = base / np.linalg.norm(base, axis=1, keepdims=True)
    scan = HalfScan(vectors)
    queries = np.vstack([vectors[0], rng.normal(size=(4, 32))]).astype(np.float32)
    no_floor = np.full(queries.shape[0], -np.inf, dtype=np.float32)
    scores, rows = scan.search(queries, 50, None, no_floor)
    truth_scores, truth = exact_search(vectors, queries, 50)
    np.testing.assert_array_equal(rows, truth)
    np.testing.assert_allclose(scores, truth_scores, rtol=1e-5)
    dead = np.zeros(3000, dtype=bool)
    dead[truth[:, :5].ravel()] = True  # the best five of each query deleted
    floor = np.asarray((truth_scores[:, 29] + truth_scores[:, 30]) / 2, dtype=np.float32)  # between two rows
    scores, rows = scan.search(queries, 50, dead, floor)
    alive = np.flatnonzero(~dead)
    _, expected = exact_search(vectors, queries, 50, alive)
    for q in range(queries.shape[0]):
        found = rows[q][rows[q] >= 0]
        wanted = expected[q][(expected[q] >= 0) & (vectors[np.maximum(expected[q], 0)] @ queries[q] >= floor[q])]
        assert found.tolist() == wanted.tolist() and not dead[found].any() and len(found) == 25
    assert scan.search(queries, 0, None, no_floor)[1].shape == (queries.shape[0], 0)  # nothing asked, nothing found


def test_exact_is_the_reference():
    assert isinstance(make_index("exact", 4), ExactIndex)


def test_ivf_tune_picks_the_smallest_nprobe_reaching_the_target():
    vectors = clustered(3000)
    ids = np.arange(3000, dtype=np.int64)
    index = FaissIVFIndex(32, lists_per_sqrt_n=2.0)
    index.add(vectors, ids)
    queries, query_ids = vectors[:200], ids[:200]
    _, truth = exact_search(vectors, queries, 11)
    recall = index.tune(queries, query_ids, truth, target=0.95)
    assert recall >= 0.95 and index.settings()["measured_recall_at_10"] == round(recall, 4)
    chosen = index.nprobe
    assert chosen & (chosen - 1) == 0  # a power of two
    if chosen > 1:  # half as many probes would miss the target
        index.nprobe = chosen // 2
        _, found = index.search(queries, 11)
        lower = np.mean(
            [len(set(t[1:]) & set(f[f != q][:10])) / 10 for t, f, q in zip(truth, found, query_ids, strict=True)]
        )
        assert lower < 0.95


def test_a_small_batch_searches_on_the_calling_thread_alone_and_other_threads_keep_their_setting():
    """A served list's search runs FAISS on its own thread (no OpenMP team spinning for one query); a batch keeps
    every core, the setting comes back after, and it is per thread: a concurrent request never sees it."""
    import threading

    import faiss

    from recsys.archive.ann import SMALL_QUERY_BATCH, calling_thread_only

    before = faiss.omp_get_max_threads()
    if before < 2:
        pytest.skip("one OpenMP thread on this machine: nothing to limit")
    inside, other = [], []
    with calling_thread_only(1):
        inside.append(faiss.omp_get_max_threads())
        worker = threading.Thread(target=lambda: other.append(faiss.omp_get_max_threads()))
        worker.start()
        worker.join()
    assert inside == [1] and faiss.omp_get_max_threads() == before
    assert other == [before]  # another thread's searches keep their team
    with calling_thread_only(SMALL_QUERY_BATCH + 1):
        assert faiss.omp_get_max_threads() == before
