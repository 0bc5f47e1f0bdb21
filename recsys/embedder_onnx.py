"""Embedding with ONNX Runtime: the local sentence-transformers model converted once on this machine, in fp32
(``precision = "onnx"``) or with int8 weights (``"int8"``: dynamic quantization of the weight MatMuls, per output
channel, except each layer's feed-forward output, which stays fp32 (``sensitive_matmuls``); on CPUs without VNNI
the weights keep 7 bits, as ONNX Runtime advises, so the int8 products cannot saturate).

The conversion reads only local files (no hub): the model's transformer is exported with ``torch.onnx.export``
with its mean pooling inside the graph, and quantized with ``onnxruntime.quantization.quantize_dynamic``. Both
files go to ``$RECSYS_CACHE/onnx/<model>-<key>/`` (default ``~/.cache/recsys``), keyed by the model's own files
and the library versions, written to a temporary name and renamed, so a killed conversion leaves nothing half
made; the next job converts again. Embedding then needs neither torch nor sentence-transformers: the fast
tokenizer (``tokenizers``, the model's ``tokenizer.json``) runs in Rust threads, every text is tokenized first and
the batches are cut by token count (texts of one length together pad little), and ONNX Runtime runs the graph on
every core. Only mean-pooling models are converted (all-MiniLM-L6-v2 is one); another model is refused with the
setting that works.

What the int8 vectors cost readers is judged by the lists, not by a cosine: ``benchmarks/build_throughput.py``
prints Related precision@10 and the overlap of the top-10 lists with the fp32 ones beside the docs/s.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import platform
import threading
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from recsys.config import EmbedderConfig
from recsys.types import RecsysError

CACHE_ENV = "RECSYS_CACHE"
ONNX_PRECISIONS = ("onnx", "int8")
TOKENS_PER_BATCH = 8_192  # a batch holds at most this many tokens (and at most [embedder] batch_size texts)


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "recsys") / "onnx"


def has_vnni() -> bool:
    """True on an x86 CPU with VNNI (int8 dot products in hardware; Linux's /proc/cpuinfo)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_vnni" in flags or " avx_vnni" in flags or " amx_int8" in flags


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def check_convertible(model: Path) -> None:
    """A Transformer + mean Pooling (+ Normalize) sentence-transformers model, or RecsysError saying what to set."""
    modules = _json(model / "modules.json") or []
    kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules if isinstance(m, dict)]
    pooling = next((m.get("path") for m in modules if str(m.get("type", "")).endswith("Pooling")), None)
    config = _json(model / str(pooling) / "config.json") if pooling else None
    mean = (
        isinstance(config, dict)
        and config.get("pooling_mode_mean_tokens")
        and not any(
            config.get(k)
            for k in ("pooling_mode_cls_token", "pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens")
        )
    )
    if kinds[:2] != ["Transformer", "Pooling"] or set(kinds[2:]) - {"Normalize"} or not mean:
        raise RecsysError(
            f"{model}: only mean-pooling sentence-transformers models are converted to ONNX (this one has "
            f'{" + ".join(kinds) or "no modules.json"}); set [embedder] precision = "fp32"'
        )
    if not (model / "tokenizer.json").is_file():
        raise RecsysError(f'{model}: no tokenizer.json (a fast tokenizer); set [embedder] precision = "fp32"')


def _key(model: Path) -> str:
    """What the converted files depend on: the model's own files (names, sizes, times) and the libraries."""
    digest = hashlib.blake2b(digest_size=8)
    for path in sorted(p for p in model.rglob("*") if p.is_file()):
        st = path.stat()
        digest.update(f"{path.relative_to(model)}:{st.st_size}:{st.st_mtime_ns};".encode())
    for package in ("torch", "onnxruntime", "onnx", "transformers"):
        try:
            digest.update(f"{package}={metadata.version(package)};".encode())
        except metadata.PackageNotFoundError:
            digest.update(f"{package}=none;".encode())
    return digest.hexdigest()


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _export_fp32(model: Path, target: Path) -> None:
    """The transformer with mean pooling as one ONNX graph (inputs input_ids, attention_mask; output embedding)."""
    import torch
    from transformers import AutoModel

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    transformer = AutoModel.from_pretrained(str(model), local_files_only=True).eval()

    class MeanPooled(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            hidden = self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=torch.zeros_like(input_ids)
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

    sample = torch.ones((2, 8), dtype=torch.long)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with torch.no_grad():
        torch.onnx.export(
            MeanPooled(transformer),
            (sample, sample),
            str(tmp),
            input_names=["input_ids", "attention_mask"],
            output_names=["embedding"],
            dynamic_axes={"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}},
            opset_version=17,
            dynamo=False,
        )
    os.replace(tmp, target)


def sensitive_matmuls(model: Any) -> list[str]:
    """The MatMuls kept in fp32: each layer's feed-forward output (GELU activations have the widest range of the
    block; in int8 they cost the most: cosine to fp32 0.9927 -> 0.9961 when kept, MIND-sample texts) and the
    attention products (both inputs are activations: nothing to pre-quantize)."""
    names = [n.name for n in model.graph.node if n.op_type == "MatMul"]
    feed_forward_out = [n for n in names if n.endswith("/output/dense/MatMul") and "/attention/" not in n]
    attention = [n for n in names if n.endswith("self/MatMul") or n.endswith("self/MatMul_1")]
    return feed_forward_out + attention


def _quantize(source: Path, target: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    quantize_dynamic(
        str(source),
        str(tmp),
        weight_type=QuantType.QInt8,
        per_channel=True,
        reduce_range=not has_vnni(),
        op_types_to_quantize=["MatMul"],
        nodes_to_exclude=sensitive_matmuls(onnx.load(str(source), load_external_data=False)),
    )
    os.replace(tmp, target)


def converted_model(model: Path, precision: str) -> Path:
    """The ONNX file for ``model`` at ``precision`` ("onnx" or "int8"), converted on first use (see the module)."""
    check_convertible(model)
    folder = cache_root() / f"{model.name}-{_key(model)}"
    fp32, int8 = folder / "model-fp32.onnx", folder / f"model-int8{'' if has_vnni() else '-r7'}-ffn32.onnx"
    target = int8 if precision == "int8" else fp32
    if target.is_file():
        return target
    with _locked(folder):
        if not fp32.is_file():
            _export_fp32(model, fp32)
        if precision == "int8" and not int8.is_file():
            _quantize(fp32, int8)
    return target


class OnnxEmbedder:
    """The ``Embedder`` over ONNX Runtime (see the module docstring)."""

    def __init__(self, config: EmbedderConfig, path: Path) -> None:
        self.config = config
        self.name = config.model
        self.path = path
        self.precision = config.precision
        settings = _json(path / "sentence_bert_config.json") or {}
        own = int(settings.get("max_seq_length") or 512)
        self.max_tokens = min(own, config.max_tokens) if config.max_tokens > 0 else own
        prompts = (_json(path / "config_sentence_transformers.json") or {}).get("prompts") or {}
        self.prefix = next((str(prompts[n]) for n in ("document", "passage") if prompts.get(n)), "")
        self._lock = threading.Lock()

    @functools.cached_property
    def session(self) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = os.cpu_count() or 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        model = converted_model(self.path, self.precision)
        return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])

    @functools.cached_property
    def tokenizer(self) -> Any:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(self.path / "tokenizer.json"))
        tokenizer.enable_truncation(self.max_tokens)
        tokenizer.no_padding()
        return tokenizer

    @property
    def dimension(self) -> int:
        shape = self.session.get_outputs()[0].shape
        if isinstance(shape[-1], int):
            return int(shape[-1])
        return int(self.encode(["dimension"]).shape[1])

    def batches(self, texts: Sequence[str]) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
        """The model's inputs for ``texts``: tokenized at once, longest first, padded per batch to its longest and
        batched by token count (at most ``TOKENS_PER_BATCH`` tokens and ``batch_size`` texts), each with the
        positions of its texts in ``texts``."""
        encoded = self.tokenizer.encode_batch([self.prefix + t for t in texts])
        lengths = np.fromiter((len(e.ids) for e in encoded), dtype=np.int64, count=len(encoded))
        order = np.argsort(-lengths, kind="stable")
        start = 0
        limit = max(1, self.config.batch_size)
        while start < len(order):
            longest = int(lengths[order[start]])
            size = max(1, min(limit, TOKENS_PER_BATCH // max(longest, 1)))
            positions = order[start : start + size]
            ids = np.zeros((positions.size, longest), dtype=np.int64)
            mask = np.zeros_like(ids)
            for row, i in enumerate(positions.tolist()):
                n = int(lengths[i])
                ids[row, :n] = encoded[i].ids
                mask[row, :n] = 1
            yield positions, {"input_ids": ids, "attention_mask": mask}
            start += positions.size

    def encode(self, texts: Sequence[str], progress: Any = None) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        out: np.ndarray | None = None
        for positions, feeds in self.batches(texts):
            with self._lock:  # one run at a time uses every core already
                vectors = self.session.run(None, feeds)[0]
            if out is None:
                out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
            out[positions] = vectors
            if progress is not None:
                progress(int(positions.size))
        assert out is not None
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
        return out


def onnx_available() -> bool:
    """ONNX Runtime and the converter's libraries are installed (int8 needs onnx too)."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return platform.machine().lower() in ("x86_64", "amd64", "aarch64", "arm64")
