"""The ONNX Runtime embedder: converted locally once (atomically, cached by the model's files), vectors close to
the torch fp32 ones, texts back in the callers' order whatever the batching, and models it cannot convert refused
with the setting that works. Lists-level quality is judged in benchmarks/build_throughput.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from recsys.config import EmbedderConfig
from recsys.embedder import make_embedder, resolve_model
from recsys.embedder_onnx import OnnxEmbedder, check_convertible, converted_model
from recsys.types import RecsysError

pytestmark = pytest.mark.model
TEXTS = [
    "North Korea denies selling artillery shells to Russia",
    "Oil prices rise as supply worries grow; traders expect OPEC to cut output again next month",
    "Football: the home side won 3-1 in the derby",
    "ECB holds interest rates steady " * 40,  # long: truncated at the model's maximum
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import os

    root = tmp_path_factory.mktemp("recsys-cache")
    old = os.environ.get("RECSYS_CACHE")
    os.environ["RECSYS_CACHE"] = str(root)
    yield root
    if old is None:
        os.environ.pop("RECSYS_CACHE", None)
    else:
        os.environ["RECSYS_CACHE"] = old


def test_int8_is_converted_once_and_close_to_fp32(cache):
    model = resolve_model("all-MiniLM-L6-v2")
    path = converted_model(model, "int8")
    stamp = path.stat().st_mtime_ns
    assert converted_model(model, "int8") == path and path.stat().st_mtime_ns == stamp  # reused, not redone
    assert not list(path.parent.glob(".*.tmp"))  # written under a temporary name, then renamed
    fast = make_embedder(EmbedderConfig(precision="int8"))
    assert isinstance(fast, OnnxEmbedder)
    slow = make_embedder(EmbedderConfig(precision="fp32")).encode(TEXTS)
    vectors = fast.encode(TEXTS)
    assert vectors.shape == (4, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert (vectors * slow).sum(1).min() > 0.97
    onnx32 = make_embedder(EmbedderConfig(precision="onnx")).encode(TEXTS)
    assert (onnx32 * slow).sum(1).min() > 0.9999  # the conversion itself loses nothing


def test_order_is_kept_whatever_the_batches(cache):
    embedder = make_embedder(EmbedderConfig(precision="onnx", batch_size=2))
    together = embedder.encode(TEXTS)
    alone = np.vstack([embedder.encode([t]) for t in TEXTS])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    progress: list[int] = []
    embedder.encode(TEXTS, progress=progress.append)
    assert sum(progress) == len(TEXTS)


def test_fewer_word_pieces_read_less_of_long_texts(cache):
    short = make_embedder(EmbedderConfig(precision="onnx", max_tokens=16))
    full = make_embedder(EmbedderConfig(precision="onnx"))
    assert short.max_tokens == 16 and full.max_tokens == 256
    a, b = short.encode(TEXTS), full.encode(TEXTS)
    assert float(a[0] @ b[0]) > 0.999  # a headline fits in 16 pieces either way
    assert float(a[3] @ b[3]) < 0.9999 or float(a[1] @ b[1]) < 0.9999  # a long text is cut


def test_a_model_it_cannot_convert_is_refused_with_the_setting_that_works(tmp_path):
    model = tmp_path / "cls-model"
    (model / "1_Pooling").mkdir(parents=True)
    (model / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            ]
        )
    )
    (model / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    with pytest.raises(RecsysError, match='precision = "fp32"'):
        check_convertible(model)


def test_auto_falls_back_to_torch_for_a_model_onnx_cannot_take(tmp_path):
    from recsys.embedder import SentenceTransformerEmbedder, resolve_precision

    if resolve_precision("auto", "cpu") != "int8":
        pytest.skip("auto is not int8 on this CPU (bf16 natively, or ONNX Runtime missing)")
    model = tmp_path / "cls-model"
    (model / "1_Pooling").mkdir(parents=True)
    (model / "modules.json").write_text(json.dumps([{"type": "sentence_transformers.models.Transformer"}]))
    assert isinstance(make_embedder(EmbedderConfig(model=str(model))), SentenceTransformerEmbedder)
    with pytest.raises(RecsysError):
        make_embedder(EmbedderConfig(model=str(model), precision="int8"))
