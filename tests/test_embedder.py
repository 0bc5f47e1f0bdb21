"""The embedder: precision choice, callers' order kept under length sorting, bf16 vectors as good as fp32."""

import numpy as np
import pytest

from recsys.config import EmbedderConfig
from recsys.embedder import make_embedder, resolve_precision
from recsys.types import RecsysError


def test_precision_is_checked_and_auto_is_fp32_off_the_cpu():
    assert resolve_precision("fp32", "cpu") == "fp32" and resolve_precision("bf16", "cpu") == "bf16"
    assert resolve_precision("auto", "cuda") == "fp32"
    assert resolve_precision("auto", "cpu") in ("fp32", "bf16", "int8")
    assert resolve_precision("int8", "cpu") == "int8" and resolve_precision("onnx", "cpu") == "onnx"
    with pytest.raises(RecsysError, match="auto, fp32, bf16"):
        resolve_precision("fp16", "cpu")


TEXTS = [
    "Storm floods the coast",
    "Parliament votes on the budget after a long night of debate " * 6,
    "Striker scores twice",
    "A recipe: flour, sugar, butter and eggs, baked for forty minutes until golden " * 12,
    "Election count continues",
]


@pytest.mark.model
def test_vectors_come_back_in_the_callers_order_and_bf16_matches_fp32():
    fp32 = make_embedder(EmbedderConfig(precision="fp32"))
    together = fp32.encode(TEXTS)
    alone = np.stack([fp32.encode([t])[0] for t in TEXTS])
    np.testing.assert_allclose(together, alone, atol=1e-4)  # longest-first batching, callers' order back
    assert np.allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    bf16 = make_embedder(EmbedderConfig(precision="bf16")).encode(TEXTS)
    assert bf16.dtype == np.float32
    assert (bf16 * together).sum(axis=1).min() >= 0.999
