"""``recsys serve``: the HTTP service (FastAPI on uvicorn)."""

from __future__ import annotations

import typer

from recsys.cli.common import EventsOption, IndexOption, app_state


def serve(
    ctx: typer.Context,
    index: str = IndexOption,
    events: str = EventsOption,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8000, "--port", min=1, max=65535),
    workers: int = typer.Option(1, "--workers", min=1, help="Worker processes."),
    access_log: bool = typer.Option(True, "--access-log/--no-access-log", help="Log every request to stderr."),
) -> None:
    """Serve Related, Ranking, Recommendation, pages and events over HTTP (OpenAPI at /docs, demo page at /)."""
    run_server(index, app_state(ctx).config_path, host, port, workers, access_log, events)


def run_server(
    index: str,
    config_path: str | None,
    host: str,
    port: int,
    workers: int = 1,
    access_log: bool = True,
    events: str | None = None,
) -> None:
    import os

    import uvicorn

    from recsys.archive.layout import IndexLayout
    from recsys.config import load_settings
    from recsys.server import uvicorn_options

    IndexLayout(index).current()  # fail now, with the how-to-fix message, if there is no index
    os.environ["RECSYS_SERVE_INDEX"] = index
    if config_path:
        os.environ["RECSYS_CONFIG"] = config_path
    if events is not None:
        os.environ["RECSYS_EVENTS__URL"] = events  # every worker process reads it
    options = uvicorn_options(load_settings().http)  # bounded connections and logs (recsys/server.py)
    typer.echo(f"recsys serving {index} on http://{host}:{port}/  (API docs: http://{host}:{port}/docs)", err=True)
    # log_level "info" prints uvicorn's start-up lines and, with access_log, one line per request:
    # 127.0.0.1:51234 - "GET /related/a1 HTTP/1.1" 200
    uvicorn.run(
        "recsys.http:app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
        access_log=access_log,
        **options,
    )
