"""All tunable defaults of recsys, in one place.

Settings are frozen dataclasses grouped by concern. They load from (later wins):

1. the defaults below;
2. a TOML file: ``--config FILE``, else ``$RECSYS_CONFIG``, else ``./recsys.toml`` if it exists;
3. environment variables ``RECSYS_<SECTION>__<KEY>``, e.g. ``RECSYS_RELATED__MMR_LAMBDA=0.8``.

``recsys config show`` prints the merged result as TOML.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recsys.types import ConfigError

DEFAULT_MODEL = "all-MiniLM-L6-v2"
DEFAULT_INDEX_DIR = "index"
CONFIG_ENV = "RECSYS_CONFIG"
ENV_PREFIX = "RECSYS_"


@dataclass(frozen=True)
class EmbedderConfig:
    """How article text becomes a vector."""

    # A model name (looked up in ./models/NAME, then the packaged all-MiniLM-L6-v2) or a path to
    # any sentence-transformers model directory. Never fetched from a hub.
    model: str = DEFAULT_MODEL
    device: str = "cpu"  # "cuda" on a GPU machine with a CUDA build of torch
    # "fp32" or "bf16" (torch), "onnx" (ONNX Runtime, fp32) or "int8" (ONNX Runtime, int8 weights; converted locally
    # once, recsys/embedder_onnx.py). "auto": the fastest that passed the list-quality gate of
    # benchmarks/build_throughput.py on this kind of CPU: bf16 where the CPU computes it natively, else int8 where
    # ONNX Runtime is installed, else fp32 (fp32 on a GPU). Vectors of any two of them give the same lists to within
    # the gate (p@10 within 0.005, top-10 overlap >= 0.9), so an index may mix them.
    precision: str = "auto"
    batch_size: int = 32
    # Word pieces the model reads of each text; 0: the model's own maximum (all-MiniLM-L6-v2: 256). Used by the ONNX
    # precisions; all-MiniLM-L6-v2 was trained on 128-piece inputs, so 128 halves the work on long bodies.
    max_tokens: int = 0
    # Characters of title + abstract + body kept before tokenising. MiniLM reads 256 word pieces
    # (~1,000 characters of English); keeping 2,000 characters never cuts what the model would
    # have read, and spares the tokenizer whole long bodies.
    max_chars: int = 2000


@dataclass(frozen=True)
class InputConfig:
    """How article files' columns map to recsys's fields (AG News' ``label,title,description`` is
    {category = "label", body = "description"}); ``--map`` and ``--id-from`` on build/add set the same."""

    columns: dict[str, Any] = field(default_factory=dict)  # field -> the input's column, e.g. {body = "text"}
    id_from: str = ""  # "url": the article's url is its id; "hash": a hash of its title and text; "": the id column


@dataclass(frozen=True)
class IndexConfig:
    """How vectors are searched."""

    # "auto": exact up to exact_max live articles, faiss-ivf above. Or "exact", "faiss-flat", "faiss-ivf".
    backend: str = "auto"
    # Exact (brute-force inner product) search up to this many vectors; an IVF index above it.
    # Exact search on 50k x 384 float32 takes a few ms; above that IVF keeps queries flat.
    exact_max: int = 50_000
    # In an archive above exact_max, a segment is searched exactly only up to this many rows (the small
    # segments frequent adds write); larger ones get their own IVF. Exact scans cost memory bandwidth:
    # ~1.5 KB per row per query.
    segment_exact_max: int = 8_192
    # IVF lists = ivf_lists_per_sqrt_n * sqrt(n). Each IVF build measures recall@10 against exact
    # search on a sample of its own articles and takes the smallest nprobe (a power of two) that
    # reaches ivf_target_recall; set ivf_nprobe to fix it instead (see benchmarks/ann_recall.py).
    ivf_lists_per_sqrt_n: float = 4.0
    ivf_target_recall: float = 0.95
    ivf_nprobe: int | None = None
    ivf_tune_queries: int = 500
    # A segment with more than this share of its rows deleted is rewritten without them (recsys/archive/segment.py).
    compact_dead_fraction: float = 0.2
    # Merge policy: merge_factor adjacent segments of one size level are folded into one; segments up to
    # merge_floor live rows all count as the smallest level (so an add of a few articles stays cheap and
    # there are at most merge_factor - 1 segments per level).
    merge_factor: int = 8
    merge_floor: int = 1_000
    # Old versions kept on disk after a swap, so readers that still hold them keep working.
    keep_versions: int = 3


@dataclass(frozen=True)
class RelatedConfig:
    """What the Related list does. The formula is in recsys/lists/scoring.py and the README."""

    k: int = 10
    # Nearest neighbours fetched before filtering, dedup and MMR: max(candidates, k * overfetch).
    candidates: int = 100
    overfetch: int = 10
    min_similarity: float = 0.2
    # Cosine at or above which two articles are copies of one story (syndicated / re-published).
    duplicate_similarity: float = 0.92
    # Topic = the article's vector + neighbourhood_weight * mean of its `neighbourhood` nearest
    # candidates (pseudo-relevance feedback). 0 turns it off.
    neighbourhood: int = 5
    neighbourhood_weight: float = 1.0
    # Freshness: score += freshness_weight * 0.5 ** (age_days / half_life_days).
    freshness_weight: float = 0.1
    half_life_days: float = 14.0
    max_age_days: float | None = None  # drop candidates older than this (None: no window)
    # Among equally related articles, readers' favourites first: score += popularity_weight * squash(p).
    popularity_weight: float = 0.05
    # Dense + lexical hybrid: score += lexical_weight * TF-IDF cosine of the two articles' 128 strongest terms,
    # and the neighbourhood is chosen by cosine + lexical_weight * lexical. 0.5-1.0 beat the dense + BM25
    # hybrid on both BBC (long articles) and MIND (headlines + abstracts); 0.7 sits between their optima.
    lexical_weight: float = 0.7
    # "Readers also read": score += coread_weight * co-read association (recsys/signals/coreads.py; needs recsys train).
    coread_weight: float = 0.2
    # MMR trade-off: 1.0 = pure relevance, 0.0 = pure novelty.
    mmr_lambda: float = 0.85
    # A later (earlier) article within followup_days and at least story_similarity is called a
    # follow-up (earlier coverage) in the hit's reason; below that it is "same topic".
    followup_days: float = 30.0
    story_similarity: float = 0.55
    # page() shows no Related article less similar than this cosine (the box stays short, its slots go to
    # Recommendation): "auto" is the floor `recsys index build` / `optimize` calibrates on this archive (the
    # cosine below which nearest pairs rarely share a section; recsys/archive/calibrate.py), "off" none, or a number.
    # related() applies it only when asked (`floor=`), so its lists stay as they are.
    floor: str = "auto"

    def __post_init__(self) -> None:
        if self.floor not in ("auto", "off"):
            try:
                float(self.floor)
            except ValueError:
                raise ConfigError(f'[related] floor = {self.floor!r}: use "auto", "off" or a cosine') from None


def _default_reactions() -> dict[str, float]:
    return {"veryGood": 2.0, "good": 1.0, "interesting": 1.0, "funny": 1.0, "sad": 0.5, "angry": -0.5}


@dataclass(frozen=True)
class PopularityConfig:
    """Popularity from events. The formula is in recsys/signals/popularity.py and the README."""

    half_life_hours: float = 24.0
    # Each reaction name's weight (the site's own set; negative allowed). A name outside it is refused from
    # clients without the write key (HTTP 422) and weighs unknown_reaction_weight from trusted sources
    # (files, key holders): 0 by default, so a misspelt or invented name moves nothing.
    reaction_weights: dict[str, float] = field(default_factory=_default_reactions)
    unknown_reaction_weight: float = 0.0
    reaction_gain: float = 1.0  # weighted reactions count this many reads each
    # Click-through rate shrunk toward ctr_prior with the weight of ctr_prior_strength impressions.
    # The prior is MIND's overall CTR (3.98%); 10 pseudo-impressions scored best in the MIND replay
    # (benchmarks/popularity_replay.py). ctr_weight 2: doubling the CTR is worth 4x the reads.
    ctr_prior: float = 0.04
    ctr_prior_strength: float = 10.0
    ctr_weight: float = 2.0
    # The Ranking box's clock: it lists articles with activity in window_hours, ordered by popularity at
    # ranking_half_life_hours, and quotes its figures over the window. `recsys train` stores the clock that
    # caught the most of the held-back days' next clicks (clock.json in the index), which wins over these.
    window_hours: float = 24.0
    ranking_half_life_hours: float = 24.0
    # Popularity p enters other lists' scores as p / (|p| + squash_scale), in (-1, 1).
    squash_scale: float = 10.0
    # Ranking counts readers, not requests: one reader's events of one kind on one article count once per
    # this many hours (a reload storm or a script is one reader). Events without a reader count at most
    # anonymous_count_cap each (trusted aggregated feeds; public HTTP clients always count as one reader).
    distinct_reader_hours: float = 24.0
    anonymous_count_cap: int = 10_000
    # The Ranking box orders by engagement (distinct readers' views, clicks, weighted reactions); the CTR may
    # move an article by at most ranking_ctr_cap in log-engagement (x e^0.5 = 1.65), so a heavily shown
    # article is not ranked below one read once. Click prediction (Related/Recommendation) uses the full term.
    ranking_ctr_cap: float = 0.5
    # How stale "now" may be: new events are folded in at most this often.
    refresh_seconds: float = 1.0
    # record_view / record_reaction buffer: written to SQLite when this many are waiting or this
    # many seconds have passed since the oldest, and on close(). A crash loses at most that buffer.
    flush_events: int = 256
    flush_seconds: float = 1.0


@dataclass(frozen=True)
class EventsConfig:
    """What an event may be. Anything outside these bounds is a bad record (``file:line: reason`` / HTTP 422)."""

    max_future_seconds: float = 600.0  # clock skew tolerated; a later ts is refused
    earliest_year: int = 2000  # older ts are refused (typos like 0001-01-01 and epoch 0)
    max_count: int = 1_000_000  # largest `count` of one record in a file
    # Events posted over HTTP for ids that are not indexed (yet) wait in a table of at most this many rows;
    # they join the counted events when a version with the article is published. Beyond it they are refused.
    max_unindexed_events: int = 100_000
    # Where events live: empty for events.sqlite in the index folder, or postgresql://user@host:5432/db (one
    # database for every host and process; `--events URL` / RECSYS_EVENTS__URL set it too).
    url: str = ""
    # PostgreSQL: connections kept per process, and how a dropped connection is retried before a write is
    # refused (HTTP 503) or a read falls back (lists keep the last folded popularity).
    pool_size: int = 4
    connect_timeout: float = 3.0
    retries: int = 3
    retry_seconds: float = 0.25


@dataclass(frozen=True)
class HttpConfig:
    """The HTTP service's limits for untrusted clients (see the README's threat model)."""

    # When set, POST /events needs the header `X-Recsys-Key: <write_key>` (or `Authorization: Bearer ...`).
    # Holders of the key are trusted: their user ids count as readers and no rate limit applies.
    write_key: str = ""
    # Events one client (IP address) may post: a bucket of events_burst refilled at events_per_minute.
    events_per_minute: float = 600.0
    events_burst: int = 1000
    max_event_count: int = 100  # largest `count` of one event in a request
    # Threads one request's numpy/FAISS work may use (0: the libraries' default, every core). Requests already
    # run in parallel, and several serving processes on one host oversubscribe the cores otherwise: two
    # processes on 2 cores served 0.59x the requests of one with the default (benchmarks/multi_host.py).
    compute_threads: int = 1
    # Connections (recsys serve): a request must arrive whole (headers and body) within request_timeout
    # seconds of the connection opening or of the previous answer, an idle keep-alive connection closes
    # after keep_alive seconds, and at most max_connections are open at once (0: the process's file
    # descriptor limit less a reserve). Past the cap the longest-waiting idle connection is closed to make
    # room, or, when every connection is busy, the new one is answered 503 and closed.
    request_timeout: float = 10.0
    keep_alive: int = 5
    max_connections: int = 0
    # POST /related-to-text embeds the draft with the model: per client (without the write key) a bucket
    # of drafts_burst refilled at drafts_per_minute, and at most draft_concurrency embeddings at once in
    # a process (429 with Retry-After beyond), so drafts cannot starve the lists.
    drafts_per_minute: float = 30.0
    drafts_burst: int = 10
    draft_concurrency: int = 2
    # Origins whose page JavaScript may call the service from another domain (CORS), comma-separated, e.g.
    # "https://www.example.com, https://m.example.com"; "*" any; empty: none (same-origin pages only).
    cors_origins: str = ""
    # List GETs answer `Cache-Control: max-age=cache_seconds` (private when the list is for a reader) and an ETag
    # of the index version, the rules, the model and the cache_seconds slot of time: a CDN or browser may keep a
    # list that long, and a revalidation in the same slot is a 304. 0: `no-store`.
    cache_seconds: float = 30.0


@dataclass(frozen=True)
class RecommendConfig:
    """The Recommendation list: a multi-interest profile of what the reader read."""

    k: int = 8
    history_limit: int = 50  # most recent reads used
    history_half_life_reads: float = 10.0  # a read this many reads ago counts half as much
    min_interest_share: float = 0.1  # interests this heavy are sure of a slot in the list
    interest_similarity: float = 0.45  # a read joins an interest whose centroid is at least this close
    max_interests: int = 4
    candidates_per_interest: int = 60
    min_similarity: float = 0.2
    popularity_weight: float = 0.1
    freshness_weight: float = 0.1
    half_life_days: float = 3.0
    mmr_lambda: float = 0.75


@dataclass(frozen=True)
class ExploreConfig:
    """Exploration in Recommendation: a new article has no clicks to be learned from until it is shown, so with
    probability ``share`` x k a list gives its last slot to one of the new candidates (shown fewer than
    ``max_impressions`` times, first seen or published within ``max_age_hours``), chosen by Thompson sampling on
    its click-through (Beta(1 + clicks, 1 + impressions - clicks)). The expected share of slots is ``share``;
    0 turns it off. Its reason says "new"."""

    share: float = 0.01
    max_impressions: int = 200
    max_age_hours: float = 12.0


@dataclass(frozen=True)
class FeedbackConfig:
    """The served-list log: every list served is recorded (one row: its id, time, reader, box, the article being
    read, variant, model and ids in order) so clicks can name the list and position they came from."""

    log_rate: float = 1.0  # share of served lists recorded (a click on a list not recorded is unattributed)
    retention_days: float = 30.0  # recorded lists older than this are deleted
    max_rows: int = 5_000_000  # and never more than this many (the oldest go first), about 1.5 GB in SQLite
    flush_seconds: float = 1.0  # lists are written in batches by a background thread at most this far apart
    batch: int = 500  # ... or as soon as this many wait
    queue_limit: int = 50_000  # lists waiting beyond this are dropped (counted), never a request held up
    remembered: int = 100_000  # recent lists kept in memory to attribute clicks at once (for /metrics)


@dataclass(frozen=True)
class ExperimentConfig:
    """An online experiment between variants of the lists (recsys/feedback/experiment.py). ``mode`` "ab" gives
    each reader one variant by a hash of reader id and ``name`` (``share`` per variant, any positive numbers);
    "interleave" merges the first two variants' lists by team draft for every reader and credits each click to
    the variant that placed it. A variant's ``overrides`` are settings, e.g. {"related.freshness_weight" = 5.0}.
    No ``name``: no experiment."""

    name: str = ""
    mode: str = "ab"
    variants: dict[str, Any] = field(default_factory=dict)  # name -> {"share": n, "overrides": {...}}


@dataclass(frozen=True)
class Settings:
    """Everything configurable, by section."""

    embedder: EmbedderConfig = field(default_factory=EmbedderConfig)
    input: InputConfig = field(default_factory=InputConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    related: RelatedConfig = field(default_factory=RelatedConfig)
    popularity: PopularityConfig = field(default_factory=PopularityConfig)
    recommend: RecommendConfig = field(default_factory=RecommendConfig)
    events: EventsConfig = field(default_factory=EventsConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    feedback: FeedbackConfig = field(default_factory=FeedbackConfig)
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    explore: ExploreConfig = field(default_factory=ExploreConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)

    def replace(self, section: str, **values: Any) -> Settings:
        """A copy with some keys of one section changed (values are checked like TOML ones)."""
        current = getattr(self, section)
        return dataclasses.replace(self, **{section: _apply(section, current, values)})


def _coerce(section: str, key: str, value: Any, annotation: str) -> Any:
    """Convert a TOML/env value to the field's declared type, or say what is expected."""
    where = f"[{section}] {key}"
    optional = "None" in annotation
    if annotation == "str" and isinstance(value, str):
        return value  # strings may be empty (e.g. [http] write_key = "" means no key)
    if value is None or (isinstance(value, str) and value.lower() in ("none", "")):
        if optional:
            return None
        raise ConfigError(f"{where} cannot be empty; expected {annotation}")
    try:
        if annotation.startswith("int"):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if annotation.startswith("float"):
            return float(value)
        if annotation.startswith("bool"):
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if annotation.startswith("dict[str, Any]"):  # nested tables, checked by their owner
            if not isinstance(value, dict):
                raise ValueError
            return {str(k): v for k, v in value.items()}
        if annotation.startswith("dict"):
            if not isinstance(value, dict):
                raise ValueError
            return {str(k): float(v) for k, v in value.items()}
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where} = {value!r} is not a valid {annotation}") from None


def _apply(section: str, current: Any, values: dict[str, Any]) -> Any:
    fields = {f.name: f for f in dataclasses.fields(current)}
    changes = {}
    for key, value in values.items():
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"unknown setting [{section}] {key}; known keys: {known}")
        changes[key] = _coerce(section, key, value, str(fields[key].type))
    return dataclasses.replace(current, **changes)


def load_settings(path: str | Path | None = None, env: dict[str, str] | None = None) -> Settings:
    """Defaults, overridden by a TOML file, overridden by RECSYS_SECTION__KEY variables."""
    env = dict(os.environ) if env is None else env
    settings = Settings()
    sections = {f.name for f in dataclasses.fields(Settings)}
    if path is None:
        path = env.get(CONFIG_ENV) or ("recsys.toml" if Path("recsys.toml").is_file() else None)
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {path} not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        for section, values in data.items():
            if section not in sections or not isinstance(values, dict):
                raise ConfigError(f"{path}: unknown section [{section}]; known: {', '.join(sorted(sections))}")
            settings = settings.replace(section, **values)
    for name, value in sorted(env.items()):
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX) :].lower().partition("__")
        if section not in sections:
            raise ConfigError(f"{name}: unknown section {section!r}; known: {', '.join(sorted(sections))}")
        settings = settings.replace(section, **{key: value})
    return settings


def to_toml(settings: Settings) -> str:
    """Render settings as TOML that load_settings reads back unchanged."""
    lines: list[str] = []
    for section, values in settings.to_dict().items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            if value is None:
                lines.append(f"# {key} = (unset)")
            elif isinstance(value, dict):
                inner = ", ".join(f"{k} = {v!r}" for k, v in value.items())
                lines.append(f"{key} = {{ {inner} }}")
            elif isinstance(value, bool):
                lines.append(f"{key} = {'true' if value else 'false'}")
            elif isinstance(value, str):
                lines.append(f'{key} = "{value}"')
            else:
                lines.append(f"{key} = {value}")
        lines.append("")
    return "\n".join(lines)
