"""The HTTP service for sites not written in Python: the Recommender's calls as JSON endpoints.

``recsys serve`` runs this on uvicorn; OpenAPI lives at ``/docs``. Threat model (README, "HTTP
service"): any client may send anything. Bodies are capped while they stream (chunked too), every
validation answer is plain ASCII-safe JSON, write endpoints may require a key, untrusted clients are
rate-limited and count as one reader each, and events for ids that are not indexed are held in a
bounded table. Every answer comes from one
``Recommender``, which follows the index's ``CURRENT`` pointer: an ``index add`` or ``build`` run
while the service is up is picked up on a later request, and until the new version is fully loaded
requests keep being answered from the old one. Nothing here takes a file path from a request, so no
endpoint can reach outside the index directory. torch is imported only if ``/related-to-text`` is
called.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from fastapi import Body, FastAPI, HTTPException, Query, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from swagger_ui_bundle import swagger_ui_path

from recsys.archive.ann import limit_compute_threads
from recsys.config import DEFAULT_INDEX_DIR, Settings, load_settings
from recsys.embedder import Embedder
from recsys.feedback.report import GROUPINGS, online_report
from recsys.guards import (
    LIST_ROUTES,
    BodyLimit,
    RateLimiter,
    cache_headers,
    client_source,
    has_key,
    list_etag,
    printable,
    too_many,
)
from recsys.http_rules import rules_router
from recsys.monitoring import Monitor, route_of
from recsys.service import Recommender
from recsys.signals.store.base import EventsUnavailable
from recsys.types import Hit, RecsysError, UnknownArticle

MAX_K = 100
MAX_EVENTS = 1000  # per POST /events
MAX_BODY_BYTES = 1_000_000
MAX_HISTORY = 200

K = Annotated[int | None, Query(ge=0, le=MAX_K, description="How many (default from config).")]
IdList = Annotated[str | None, Query(max_length=20_000, description="Comma-separated article ids.")]
Reader = Annotated[str | None, Query(max_length=256, description="The reader the list is for.")]


class PageOut(BaseModel):
    article_id: str
    related: list[Hit]
    ranking: list[Hit]
    recommendation: list[Hit]


class EventIn(BaseModel):
    """One event, the same schema as event files."""

    article_id: str = Field(min_length=1, max_length=512)
    type: str = Field(pattern="^(view|click|impression|reaction)$")
    reaction: str | None = Field(default=None, max_length=64)
    user_id: str | None = Field(default=None, max_length=256)
    ts: str | float | None = Field(default=None, description="ISO 8601 or epoch seconds; default: now.")
    count: int = Field(default=1, ge=1, le=1_000_000, description="At most [http] max_event_count.")
    event_id: str | None = Field(default=None, max_length=256)
    list_id: str | None = Field(default=None, max_length=64, description="A click: the served list it came from.")
    position: int | None = Field(default=None, ge=1, le=1000, description="A click: its 1-based place in that list.")


class EventsIn(BaseModel):
    events: list[EventIn] = Field(min_length=1, max_length=MAX_EVENTS)


class DraftIn(BaseModel):
    title: str = Field(min_length=1, max_length=1000)
    body: str = Field(default="", max_length=100_000)
    k: int | None = Field(default=None, ge=0, le=MAX_K)


def _hits(hits: list[Hit]) -> list[dict[str, Any]]:
    return [h.to_dict() for h in hits]


def _ids(value: str | None) -> list[str]:
    found = [item.strip() for item in (value or "").split(",") if item.strip()]
    if len(found) > MAX_HISTORY:
        raise HTTPException(422, f"at most {MAX_HISTORY} ids in a list; got {len(found)}")
    return found


def static_dir() -> Path:
    return Path(str(resources.files("recsys").joinpath("web")))


def create_app(
    index: str | Path = DEFAULT_INDEX_DIR, settings: Settings | None = None, embedder: Embedder | None = None
) -> FastAPI:
    """The service for one index directory (opened now, so a missing index fails at start-up).

    ``embedder`` serves /related-to-text; by default the index's own model is loaded on first use.
    """
    settings = settings if settings is not None else load_settings()
    limit_compute_threads(settings.http.compute_threads)
    rec = Recommender.open(index, settings, embedder)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        try:  # a clean stop writes what waits: buffered events and the served lists not yet logged
            rec.flush()
        except Exception as exc:  # stopping must not fail on bookkeeping
            logging.getLogger(__name__).error("on shutdown, not everything was written: %s", exc)

    app = FastAPI(
        title="recsys",
        summary="Related, Ranking and Recommendation lists for news sites.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # served below from installed files (the default loads Swagger UI from a CDN: blank offline)
        redoc_url=None,
    )
    app.state.recommender = rec
    monitor = Monitor(rec)
    app.state.monitor = monitor
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)

    @app.middleware("http")
    async def measured(request: Request, call_next: Any) -> Any:
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            monitor.observe(route_of(request.scope), status, time.perf_counter() - started)

    http = settings.http
    origins = [o.strip() for o in http.cors_origins.split(",") if o.strip()]
    if origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST"], allow_headers=["Content-Type"]
        )

    @app.middleware("http")
    async def cached(request: Request, call_next: Any) -> Any:
        if request.method != "GET" or not request.url.path.startswith(LIST_ROUTES):
            return await call_next(request)
        personal = any(name in request.query_params for name in ("user_id", "history"))
        tag = list_etag(rec.state_tag(), str(request.url.path), str(request.url.query), http.cache_seconds)
        headers = cache_headers(tag, http.cache_seconds, personal)
        if tag and tag in (t.strip() for t in request.headers.get("if-none-match", "").split(",")):
            return Response(status_code=304, headers=headers)  # the list the client holds is still this one
        response = await call_next(request)
        if response.status_code == 200:
            response.headers.update(headers)
        return response

    limiter = RateLimiter(http.events_per_minute, max(http.events_burst, 1))
    drafts = RateLimiter(http.drafts_per_minute, max(http.drafts_burst, 1))
    draft_slots = threading.BoundedSemaphore(max(1, http.draft_concurrency))

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        detail = [
            {"loc": printable(list(e.get("loc", ()))), "msg": printable(e.get("msg", "")), "type": e.get("type")}
            for e in exc.errors()[:20]
        ]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Any:
        if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
            # FastAPI's answer to a body it cannot decode (e.g. starting with a \xff byte): a validation error
            return JSONResponse({"detail": "the body is not UTF-8 JSON"}, status_code=422)
        return await http_exception_handler(request, exc)

    @app.exception_handler(UnknownArticle)
    async def unknown(_: Request, exc: UnknownArticle) -> JSONResponse:
        return JSONResponse({"detail": str(exc), "article_id": exc.article_id}, status_code=404)

    @app.exception_handler(EventsUnavailable)
    async def events_down(_: Request, exc: EventsUnavailable) -> JSONResponse:
        return JSONResponse({"detail": printable(str(exc))}, status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(RecsysError)
    async def bad_request(_: Request, exc: RecsysError) -> JSONResponse:
        return JSONResponse({"detail": printable(str(exc))}, status_code=422)

    app.include_router(rules_router(rec.layout.root, lambda request: has_key(request, http), bool(http.write_key)))
    app.mount("/docs-assets", StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> Response:
        """Swagger UI from the installed swagger-ui-bundle package (works offline)."""
        assets = "/docs-assets"
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title="recsys API",
            swagger_js_url=f"{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{assets}/swagger-ui.css",
            swagger_favicon_url=f"{assets}/favicon-32x32.png",
        )

    @app.get("/health")
    def health() -> dict[str, Any]:
        """Index version, article count, and the time of the newest stored event ("events": "unavailable"
        while the events store cannot be reached: lists are still served from the popularity folded so far).
        "status" is "degraded" while a newer version was refused (damaged: ``refused_version`` and ``reason``;
        the version named in ``index_version`` keeps serving) or a trained file is ignored (``ignored_files``)."""
        try:
            last = rec.last_event_time()
            events = "ok"
        except EventsUnavailable:
            last, events = None, "unavailable"
        problems = rec.problems()
        return {
            "status": "degraded" if problems else "ok",
            **{key: printable(value) for key, value in problems.items()},
            "events": events,
            "index_version": rec.version,
            "articles": len(rec),
            "last_event_time": None if last is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(last)),
        }

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        """The service's figures in the Prometheus text format (recsys/monitoring.py)."""
        body, content_type = monitor.exposition()
        return Response(body, media_type=content_type)

    @app.get("/articles/{article_id:path}")
    def article(article_id: str) -> dict[str, Any]:
        """One article with its text and all-time reaction counts."""
        found = rec.article(article_id)
        data = {k: v for k, v in found.__dict__.items() if k not in ("row", "content_hash")}
        data["reactions"] = rec.reaction_counts(article_id)
        data["reaction_names"] = list(settings.popularity.reaction_weights)
        return data

    def reader_of(request: Request, user_id: str | None) -> str:
        """Who a list is for: the reader id given, else an untrusted client's pseudonym (a site's back end with
        the write key and no id asks outside any experiment)."""
        return user_id or ("" if has_key(request, http) else client_source(request))

    @app.get("/related/{article_id:path}", response_model=list[Hit])
    def related(
        request: Request,
        article_id: str,
        k: K = None,
        category: IdList = None,
        language: IdList = None,
        since: str | None = None,
        until: str | None = None,
        exclude: IdList = None,
        max_age_days: Annotated[float | None, Query(gt=0, allow_inf_nan=False)] = None,
        user_id: Reader = None,
    ) -> list[dict[str, Any]]:
        """Articles about the same story or topic (``user_id``: who it is for, their experiment variant)."""
        return _hits(
            rec.related(
                article_id,
                k,
                category=_ids(category) or None,
                language=_ids(language) or None,
                published_after=since,
                published_before=until,
                exclude=_ids(exclude),
                max_age_days=max_age_days,
                reader=reader_of(request, user_id),
            )
        )

    @app.get("/ranking", response_model=list[Hit])
    def ranking(
        request: Request,
        k: K = None,
        category: IdList = None,
        window_hours: Annotated[float | None, Query(gt=0, le=24 * 365, allow_inf_nan=False)] = None,
        exclude: IdList = None,
        user_id: Reader = None,
    ) -> list[dict[str, Any]]:
        """Popular now, from views, clicks and reactions (``user_id``: who it is for, their experiment variant)."""
        found = rec.ranking(
            k,
            category=_ids(category) or None,
            window_hours=window_hours,
            exclude=_ids(exclude),
            reader=reader_of(request, user_id),
        )
        return _hits(found)

    @app.get("/recommend", response_model=list[Hit])
    def recommend(
        history: IdList = None,
        user_id: Annotated[str | None, Query(max_length=256)] = None,
        k: K = None,
        exclude: IdList = None,
    ) -> list[dict[str, Any]]:
        """For a reader: from ``history`` (ids, oldest first) and/or a ``user_id``'s stored reads."""
        return _hits(rec.recommend(_ids(history), user_id=user_id, k=k, exclude=_ids(exclude)))

    @app.get("/page/{article_id:path}", response_model=PageOut)
    def page(
        article_id: str,
        history: IdList = None,
        user_id: Annotated[str | None, Query(max_length=256)] = None,
        k_related: K = None,
        k_ranking: K = None,
        k_recommend: K = None,
    ) -> dict[str, Any]:
        """The three lists of one page view, with no article in two of them."""
        result = rec.page(
            article_id,
            _ids(history),
            user_id=user_id,
            k_related=k_related,
            k_ranking=k_ranking,
            k_recommend=k_recommend,
        )
        return result.to_dict()

    @app.post("/events")
    def events(request: Request, batch: Annotated[EventsIn, Body()]) -> Any:
        """Record a batch of views, clicks, impressions or reactions; all or nothing.

        With ``[http] write_key`` set, the key is required (header ``X-Recsys-Key``). Without the key, a
        client counts as one reader in Ranking whatever user ids it sends, and is rate-limited.
        """
        trusted = has_key(request, http)
        if http.write_key and not trusted:
            return JSONResponse({"detail": "this service needs its write key in the X-Recsys-Key header"}, 401)
        if not trusted:
            if len(batch.events) > limiter.burst:
                raise HTTPException(429, f"at most {int(limiter.burst)} events per request from this client")
            wait = limiter.take(client_source(request), len(batch.events))
            if wait > 0:
                return too_many(wait, "too many events from this client")
        for number, event in enumerate(batch.events):
            if event.count > http.max_event_count:
                raise HTTPException(422, f"bad event: event {number}: count must be at most {http.max_event_count}")
        now = time.time()
        records = [{**e.model_dump(), "ts": now if e.ts is None else e.ts} for e in batch.events]
        try:
            result = rec.record_events(
                records, source="" if trusted else client_source(request), hold_unindexed=True, durable=True
            )
        except ValueError as exc:
            monitor.count_events("invalid", len(records))
            raise HTTPException(422, printable(f"bad event: {exc}")) from None
        for outcome, n in (
            ("stored", result.accepted),
            ("duplicate", result.duplicates),
            ("held", result.held),
            ("refused", result.refused),
        ):
            monitor.count_events(outcome, n)
        return {
            "accepted": result.accepted,
            "duplicates": result.duplicates,
            "held_unindexed": result.held,
            "refused_unindexed": result.refused,
            "attributed": result.attributed,
        }

    @app.post("/related-to-text", response_model=list[Hit])
    def related_to_text(request: Request, draft: DraftIn) -> Any:
        """Related for an unpublished draft (loads the embedding model on first use). Without the write key a
        client may embed ``[http] drafts_burst`` drafts at once, refilled at ``drafts_per_minute``; at most
        ``draft_concurrency`` drafts are embedded at a time (429 with Retry-After beyond)."""
        if not has_key(request, http):
            wait = drafts.take(client_source(request), 1)
            if wait > 0:
                return too_many(wait, "too many drafts from this client")
        if not draft_slots.acquire(timeout=0.5):
            return too_many(1.0, "the model is busy with other drafts")
        try:
            return _hits(rec.related_to_text(draft.title, draft.body, draft.k))
        finally:
            draft_slots.release()

    web = static_dir()
    app.mount("/static", StaticFiles(directory=web), name="static")

    @app.get("/", include_in_schema=False)
    def demo_page() -> FileResponse:
        return FileResponse(web / "index.html")

    @app.get("/dashboard", include_in_schema=False)
    def dashboard() -> FileResponse:
        """Plots of CTR per box and per variant over time (recsys/web/dashboard.js, from /report/online)."""
        return FileResponse(web / "dashboard.html")

    @app.get("/report/online")
    def report_online(
        since_days: Annotated[float, Query(gt=0, le=3650, allow_inf_nan=False)] = 7.0,
        by: Annotated[list[str] | None, Query(max_length=4)] = None,
    ) -> dict[str, Any]:
        """``recsys report online`` as JSON: lists, clicks and CTR (95% interval) per box, variant, day or hour."""
        groups = tuple(by or ["box"])
        if set(groups) - set(GROUPINGS):
            raise HTTPException(422, f"by: choose from {', '.join(GROUPINGS)}")
        now = time.time()
        rec.served_log.flush()  # what was served until now counts
        return online_report(rec.events_store, now - since_days * 86_400.0, now, groups).to_dict()

    return app


def app_from_environment() -> FastAPI:
    """uvicorn factory for ``recsys serve`` (the index comes from RECSYS_SERVE_INDEX, config as usual)."""
    import os

    app = create_app(os.environ.get("RECSYS_SERVE_INDEX", DEFAULT_INDEX_DIR))
    app.state.recommender.warm()  # the events folded and the models loaded before the first request
    # What is loaded now lives as long as the process: frozen, the cyclic collector no longer walks it on its
    # full passes (with a few hundred thousand events those passes were the slowest requests' extra ms).
    gc.freeze()
    return app
