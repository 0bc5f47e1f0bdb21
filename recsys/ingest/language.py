"""Which language an article is in, when its input does not say: py3langid (the maintained fork of langid.py: 97
languages, a naive Bayes model over byte n-grams that ships inside the package as a numpy file, no download, numpy
only). Chosen over lingua (accurate on short text but a model of hundreds of MB) and fastText's identifier (a
compiled extension and a separate model file): a news headline and its first lines are enough text for langid.

A guess below ``MIN_CONFIDENCE`` is left empty (unknown) rather than written down as a fact.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

MIN_CONFIDENCE = 0.5
SAMPLE_CHARS = 600  # of title + abstract + body: plenty for langid, and the cost stays per article, not per byte
_identifier: Any = None
_lock = threading.Lock()


def _get() -> Any:
    global _identifier
    if _identifier is None:
        with _lock:
            if _identifier is None:
                import py3langid.langid as langid

                model = Path(langid.__file__).parent / langid.MODEL_FILE  # the model inside the package
                _identifier = langid.LanguageIdentifier.from_modelpath(model, norm_probs=True)
    return _identifier


def detect_language(text: str) -> str:
    """An ISO 639-1 code such as "da", or "" when the text is too short or the guess is unsure."""
    sample = text.strip()[:SAMPLE_CHARS]
    if len(sample) < 12:
        return ""
    language, confidence = _get().classify(sample)
    return str(language) if confidence >= MIN_CONFIDENCE else ""
