"""Index build throughput against bare SentenceTransformer.encode, and the quality gate every faster technique must
pass, judged by the lists readers see rather than by a cosine.

Two real corpora: BBC (2,225 long articles, every text past the model's 256 word pieces) and MIND-sample news
(2,000 headlines + abstracts, AG-News-like short texts). For each, in one run: bare fp32
``SentenceTransformer.encode`` on the very texts recsys embeds (the baseline, batch 32; timed before and after
the builds, the mean is the baseline so drift on a noisy machine is shared), then ``recsys index build`` with each
technique, then ``recsys index add`` of the same files (nothing to embed).

Techniques: torch fp32 (texts longest first over the whole job), torch bf16 (only where the CPU computes it), ONNX
Runtime fp32, ONNX Runtime dynamic int8 (per-channel weights, 7-bit on CPUs without VNNI, each layer's feed-forward
output kept in fp32), int8 reading at most 128 word pieces (all-MiniLM-L6-v2 was trained on 128-piece
inputs), and, where ``openvino`` (and ``nncf``) are installed, OpenVINO fp32 and OpenVINO static int8 calibrated
on 300 of the archive's own texts (NNCF, transformer preset, the feed-forward outputs kept in fp32): benchmark
rows only, the engine does not depend on OpenVINO (on this AVX2 CPU without VNNI it was no faster than ONNX
Runtime; see the README). The gate, against the torch fp32 build of the same run: Related precision@10 within
0.005 (label: BBC topic folder, MIND subcategory) and the top-10 lists overlapping at least 0.9 on average.
``[embedder] precision = "auto"`` is the fastest technique that passed here.

    python benchmarks/build_throughput.py      # prints the tables, writes results/build_throughput.json
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from _common import save, shared, table

from recsys.archive.indexer import Indexer
from recsys.config import Settings
from recsys.embedder import _load_sentence_transformer, make_embedder, native_bf16, resolve_precision, text_of
from recsys.embedder_onnx import OnnxEmbedder, converted_model
from recsys.evaluation.related import evaluate_related, recsys_system, store_labels
from recsys.ingest.articles import read_articles
from recsys.service import Recommender

CORPORA = [
    ("BBC (long articles)", ("bbc", "bbc"), "category"),
    ("MIND-sample (short)", ("mind-sample", "news.tsv"), "subcategory"),
]
GATE_P10 = 0.005
GATE_OVERLAP = 0.9
K = 10


def techniques() -> list[tuple[str, dict]]:
    found = [("torch fp32", {"precision": "fp32"})]
    if native_bf16():
        found.append(("torch bf16", {"precision": "bf16"}))
    found += [
        ("onnx fp32", {"precision": "onnx"}),
        ("onnx int8", {"precision": "int8"}),
        ("onnx int8, 128 word pieces", {"precision": "int8", "max_tokens": 128}),
    ]
    return found


class OpenVinoSession:
    """An OpenVINO compiled model behind the two calls OnnxEmbedder makes of an ONNX Runtime session."""

    def __init__(self, compiled: Any) -> None:
        self.request = compiled.create_infer_request()
        self.outputs = compiled.outputs

    def get_outputs(self) -> list[Any]:
        return [SimpleNamespace(shape=[None, self.outputs[0].get_partial_shape()[-1].get_length()])]

    def run(self, _: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.request.infer(feeds)
        return [self.request.get_output_tensor(0).data.copy()]


def openvino_embedder(settings: Settings, texts: list[str], int8: bool) -> OnnxEmbedder | None:
    """The ONNX embedder run by OpenVINO (fp32, or static int8 calibrated on 300 of ``texts``); None without it."""
    try:
        import openvino
    except ImportError:
        return None
    embedder = make_embedder(settings.replace("embedder", precision="onnx").embedder)
    assert isinstance(embedder, OnnxEmbedder)
    model = openvino.Core().read_model(str(converted_model(embedder.path, "onnx")))
    if int8:
        try:
            import nncf
        except ImportError:
            return None
        batches = [feeds for _, feeds in embedder.batches(texts[:: max(1, len(texts) // 300)][:300])]
        ffn = [
            op.get_friendly_name()
            for op in model.get_ops()
            if op.get_type_name() == "MatMul"
            and op.get_friendly_name().endswith("/output/dense/MatMul")
            and "/attention/" not in op.get_friendly_name()
        ]
        model = nncf.quantize(
            model,
            nncf.Dataset(batches),
            model_type=nncf.ModelType.TRANSFORMER,
            subset_size=len(batches),
            ignored_scope=nncf.IgnoredScope(names=ffn),
        )
    compiled = openvino.Core().compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY"})
    embedder.__dict__["session"] = OpenVinoSession(compiled)  # in place of the cached ONNX Runtime session
    return embedder


def lists_and_precision(root: Path, label: str) -> tuple[dict[str, list[str]], float, float]:
    """Each labelled article's Related top-10, and precision@10 / nDCG@10 of Related as configured."""
    with Recommender.open(root, Settings().replace("feedback", log_rate=0.0)) as rec:
        labels = store_labels(rec, label)
        report = evaluate_related(rec, labels, k=K, systems={"recsys": recsys_system(rec, K)})
        ours = report.score("recsys")
        lists = {a: [h.id for h in rec.related(a, K)] for a in labels}
    return lists, ours.precision, ours.ndcg


def overlap(a: dict[str, list[str]], b: dict[str, list[str]]) -> float:
    shared_ids = [x for x in a if x in b]
    return sum(len(set(a[x]) & set(b[x])) / K for x in shared_ids) / max(len(shared_ids), 1)


def run_corpus(name: str, source: Path, label: str, tmp: Path) -> tuple[list[dict], dict]:
    base = Settings()
    texts = [text_of(a, base.embedder.max_chars) for a in read_articles([source]).articles]
    bare = _load_sentence_transformer(str(make_embedder(base.embedder).path.resolve()), "cpu", "fp32")
    bare.encode(texts[:64], batch_size=32)

    def encode_bare() -> float:
        started = time.perf_counter()
        bare.encode(texts, batch_size=base.embedder.batch_size, normalize_embeddings=True)
        return time.perf_counter() - started

    first = encode_bare()
    built = []
    chosen: list[tuple[str, dict, Any]] = [(t, v, None) for t, v in techniques()]
    for technique, int8 in (("openvino fp32", False), ("openvino static int8", True)):
        chosen.append((technique, {"precision": "onnx"}, lambda s, int8=int8: openvino_embedder(s, texts, int8)))
    for technique, values, special in chosen:
        settings = base.replace("embedder", **values)
        embedder = make_embedder(settings.embedder) if special is None else special(settings)
        if embedder is None:
            print(f"{technique}: skipped (pip install openvino nncf to measure it)")
            continue
        embedder.encode(texts[:64])  # load (and convert, the first time) outside the timing
        root = tmp / technique.replace(" ", "-").replace(",", "")
        started = time.perf_counter()
        Indexer(root, settings, embedder).build([source])
        seconds = time.perf_counter() - started
        built.append((technique, settings, embedder, root, seconds))
    second = encode_bare()
    started = time.perf_counter()
    Indexer(built[0][3], built[0][1], built[0][2]).add([source])
    again = time.perf_counter() - started
    baseline = (first + second) / 2
    n = len(texts)

    reference, ref_p, _ = lists_and_precision(built[0][3], label)
    empty = {"p10": None, "p10_vs_fp32": None, "top10_overlap": None, "passes": None}
    rows = [{"corpus": name, "technique": "bare encode, fp32 (baseline)", "docs_per_s": n / baseline}]
    rows[0]["x_baseline"] = 1.0
    rows[0].update(empty)
    for technique, _, _, root, seconds in built:
        lists, p10, _ = (reference, ref_p, None) if root == built[0][3] else lists_and_precision(root, label)
        agree = overlap(lists, reference)
        rows.append(
            {
                "corpus": name,
                "technique": technique,
                "docs_per_s": n / seconds,
                "x_baseline": baseline / seconds,
                "p10": p10,
                "p10_vs_fp32": p10 - ref_p,
                "top10_overlap": agree,
                "passes": abs(p10 - ref_p) <= GATE_P10 and agree >= GATE_OVERLAP,
            }
        )
    rows.append({"corpus": name, "technique": "index add, same files", "docs_per_s": None})
    rows[-1]["x_baseline"] = baseline / again
    rows[-1].update(empty)
    return rows, {"corpus": name, "docs": n, "baseline_seconds": [first, second]}


def main() -> None:
    rows: list[dict] = []
    runs: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for number, (name, parts, label) in enumerate(CORPORA):
            folder = Path(tmp) / str(number)
            folder.mkdir()
            found, run = run_corpus(name, shared(*parts), label, folder)
            rows += found
            runs.append(run)
    print(
        table(
            rows, ["corpus", "technique", "docs_per_s", "x_baseline", "p10", "p10_vs_fp32", "top10_overlap", "passes"]
        )
    )
    auto = resolve_precision("auto", "cpu")
    print(f'\n[embedder] precision = "auto" is {auto!r} on this CPU')
    path = save(
        "build_throughput",
        {"rows": rows, "runs": runs, "auto": auto, "gate": {"p10": GATE_P10, "overlap": GATE_OVERLAP}},
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
