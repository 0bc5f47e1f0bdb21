"""``recsys related``, ``recsys demo`` and ``recsys config show``."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import typer

from recsys.archive.indexer import Indexer
from recsys.cli.common import IndexOption, JsonOption, app_state, docs_progress, offline, print_hits, print_json
from recsys.config import to_toml
from recsys.ingest.articles import read_articles
from recsys.service import Recommender
from recsys.signals.store import open_event_store

config_app = typer.Typer(rich_markup_mode=None, help="Inspect settings.", no_args_is_help=True)

# Sample articles the demo shows Related for: a re-published story, a story with a follow-up, a plain one.
DEMO_SHOWCASE = ("s-ecb-rates-hold", "s-storm-ciaran-coast", "s-ai-chip-export")


DEMO_PAGE = ("s-storm-ciaran-coast", "u1")  # an article page, and a sample reader of football and politics


def sample_path(name: str = "sample_articles.jsonl") -> Path:
    """A bundled sample file (written for recsys; see recsys/data/README.md)."""
    return Path(str(resources.files("recsys.data").joinpath(name)))


def related(
    ctx: typer.Context,
    article_id: str = typer.Argument(..., metavar="ID", help="An indexed article id."),
    k: int = typer.Option(None, "-k", min=0, max=100, help="How many (default from config)."),
    index: str = IndexOption,
    category: list[str] = typer.Option(None, "--category", help="Only these categories (repeatable)."),
    language: list[str] = typer.Option(None, "--language", help="Only these languages (repeatable)."),
    since: str = typer.Option(None, "--since", help="Published at or after (ISO 8601)."),
    until: str = typer.Option(None, "--until", help="Published at or before (ISO 8601)."),
    exclude: list[str] = typer.Option(None, "--exclude", help="Ids never to show (repeatable)."),
    max_age_days: float = typer.Option(None, "--max-age-days", help="Only articles younger than this."),
    now: str = typer.Option(None, "--now", help="Pretend the query runs at this time (ISO 8601)."),
    as_json: bool = JsonOption,
) -> None:
    """Articles about the same story or topic as ID."""
    with Recommender.open(index, offline(app_state(ctx).settings)) as rec:
        hits = rec.related(
            article_id,
            k,
            category=category or None,
            language=language or None,
            published_after=since,
            published_before=until,
            exclude=exclude or (),
            max_age_days=max_age_days,
            now=now,
        )
        title = "" if as_json else f"Related to {article_id}: {rec.article(article_id).title}"
    print_hits(hits, as_json, title)


def demo(
    ctx: typer.Context,
    index: str = typer.Option("index/demo", "--index", "-i", help="Where to build the demo index."),
    k: int = typer.Option(5, "-k", help="Hits per list."),
    as_json: bool = JsonOption,
    serve: bool = typer.Option(False, "--serve", help="Then serve the demo article page on http://127.0.0.1:PORT/."),
    port: int = typer.Option(8000, "--port", min=1, max=65535),
) -> None:
    """Index the bundled sample and its reader events; print Related lists and one full page."""
    settings = app_state(ctx).settings
    sample = sample_path()
    with docs_progress(not as_json) as bar:
        report = Indexer(index, settings).build([sample], progress=bar)
    events = open_event_store(index).ingest([sample_path("sample_events.jsonl")])
    newest = max(a.published_at for a in read_articles([sample]).articles if a.published_at)
    output: dict[str, object] = {}
    with Recommender.open(index, offline(settings)) as rec:
        if not as_json:
            typer.echo(
                f"Indexed {report.articles} sample articles into {index} (embedded {report.embedded}) and "
                f"{events.read:,} reader events; reading the page as of {newest}.\n"
            )
        for article_id in DEMO_SHOWCASE:
            hits = rec.related(article_id, k, now=newest)
            output[article_id] = [h.to_dict() for h in hits]
            if not as_json:
                print_hits(hits, False, f"Related to {article_id}: {rec.article(article_id).title}")
                typer.echo("")
        article_id, reader = DEMO_PAGE
        page = rec.page(article_id, user_id=reader, k_related=k, k_ranking=k, k_recommend=k, now=newest)
        output["page"] = page.to_dict()
        if not as_json:
            typer.echo(f"=== The page of {article_id}, as reader {reader} (football and budget reads) sees it ===")
            print_hits(page.related, False, "Related")
            print_hits(page.ranking, False, "Ranking")
            print_hits(page.recommendation, False, "Recommendation")
    if as_json:
        print_json(output)
    else:
        typer.echo(f"\nTry: recsys page {article_id} --user {reader} --index {index} --now {newest}")
    if serve:
        from recsys.cli.serve import run_server

        run_server(index, app_state(ctx).config_path, "127.0.0.1", port)


@config_app.command("show")
def show(ctx: typer.Context, as_json: bool = JsonOption) -> None:
    """Print every setting with its effective value (defaults < TOML file < RECSYS_* variables)."""
    settings = app_state(ctx).settings
    if as_json:
        print_json(settings.to_dict())
    else:
        typer.echo(to_toml(settings), nl=False)
