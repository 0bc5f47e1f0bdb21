"""The HTTP service for sites not written in Python: the Recommender's calls as JSON endpoints.

``recsys serve`` runs this on uvicorn; OpenAPI lives at ``/docs``. Every answer comes from one
``Recommender``, which follows the index's ``CURRENT`` pointer: an ``index add`` or ``build`` run
while the service is up is picked up on a later request, and until the new version is fully loaded
requests keep being answered from the old one. Nothing here takes a file path from a request, so no
endpoint can reach outside the index directory. torch is imported only if ``/related-to-text`` is
called.
"""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from fastapi import Body, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from recsys.config import DEFAULT_INDEX_DIR, Settings, load_settings
from recsys.embedder import Embedder
from recsys.service import Recommender
from recsys.types import Hit, RecsysError, UnknownArticle

MAX_K = 100
MAX_EVENTS = 1000  # per POST /events
MAX_BODY_BYTES = 1_000_000
MAX_HISTORY = 200

K = Annotated[int | None, Query(ge=0, le=MAX_K, description="How many (default from config).")]
IdList = Annotated[str | None, Query(max_length=20_000, description="Comma-separated article ids.")]


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
    count: int = Field(default=1, ge=1, le=1_000_000)
    event_id: str | None = Field(default=None, max_length=256)


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
    rec = Recommender.open(index, settings, embedder)
    app = FastAPI(
        title="recsys",
        summary="Related, Ranking and Recommendation lists for news sites.",
        version="0.1.0",
    )
    app.state.recommender = rec

    @app.middleware("http")
    async def bound_body(request: Request, call_next: Any) -> Any:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            return JSONResponse({"detail": f"request body over {MAX_BODY_BYTES} bytes"}, status_code=413)
        return await call_next(request)

    @app.exception_handler(UnknownArticle)
    async def unknown(_: Request, exc: UnknownArticle) -> JSONResponse:
        return JSONResponse({"detail": str(exc), "article_id": exc.article_id}, status_code=404)

    @app.exception_handler(RecsysError)
    async def bad_request(_: Request, exc: RecsysError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.get("/health")
    def health() -> dict[str, Any]:
        """Index version, article count, and the time of the newest stored event."""
        last = rec._events.last_event_time()
        return {
            "status": "ok",
            "index_version": rec.version,
            "articles": len(rec),
            "last_event_time": None if last is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(last)),
        }

    @app.get("/articles/{article_id:path}")
    def article(article_id: str) -> dict[str, Any]:
        """One article with its text and all-time reaction counts."""
        found = rec.article(article_id)
        data = {k: v for k, v in found.__dict__.items() if k not in ("row", "content_hash")}
        data["reactions"] = rec.reaction_counts(article_id)
        data["reaction_names"] = list(settings.popularity.reaction_weights)
        return data

    @app.get("/related/{article_id:path}", response_model=list[Hit])
    def related(
        article_id: str,
        k: K = None,
        category: IdList = None,
        language: IdList = None,
        since: str | None = None,
        until: str | None = None,
        exclude: IdList = None,
        max_age_days: Annotated[float | None, Query(gt=0)] = None,
    ) -> list[dict[str, Any]]:
        """Articles about the same story or topic."""
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
            )
        )

    @app.get("/ranking", response_model=list[Hit])
    def ranking(
        k: K = None,
        category: IdList = None,
        window_hours: Annotated[float | None, Query(gt=0, le=24 * 365)] = None,
        exclude: IdList = None,
    ) -> list[dict[str, Any]]:
        """Popular now, from views, clicks and reactions."""
        return _hits(rec.ranking(k, category=_ids(category) or None, window_hours=window_hours, exclude=_ids(exclude)))

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
    def events(batch: Annotated[EventsIn, Body()]) -> dict[str, Any]:
        """Record a batch of views, clicks, impressions or reactions (buffered; see the README's durability note)."""
        now = time.time()
        records = [{**e.model_dump(), "ts": now if e.ts is None else e.ts} for e in batch.events]
        try:
            accepted = rec.record_events(records)
        except ValueError as exc:
            raise HTTPException(422, f"bad event: {exc}") from None
        rec.flush()
        return {"accepted": accepted}

    @app.post("/related-to-text", response_model=list[Hit])
    def related_to_text(draft: DraftIn) -> list[dict[str, Any]]:
        """Related for an unpublished draft (loads the embedding model on first use)."""
        return _hits(rec.related_to_text(draft.title, draft.body, draft.k))

    web = static_dir()
    app.mount("/static", StaticFiles(directory=web), name="static")

    @app.get("/", include_in_schema=False)
    def demo_page() -> FileResponse:
        return FileResponse(web / "index.html")

    return app


def app_from_environment() -> FastAPI:
    """uvicorn factory for ``recsys serve`` (the index comes from RECSYS_SERVE_INDEX, config as usual)."""
    import os

    return create_app(os.environ.get("RECSYS_SERVE_INDEX", DEFAULT_INDEX_DIR))
