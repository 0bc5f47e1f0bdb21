"""``recsys index build|add|remove|restore|optimize|pull|verify|info``."""

from __future__ import annotations

import time
from enum import Enum, StrEnum

import typer

from recsys.archive import replica
from recsys.archive.indexer import BuildReport, Indexer
from recsys.archive.verify import verify_index
from recsys.cli.common import (
    EXIT_FAILED,
    EXIT_SKIPPED,
    IndexOption,
    JsonOption,
    OnError,
    app_state,
    docs_progress,
    offline,
    print_json,
)
from recsys.config import Settings
from recsys.ingest.text import FORMATS
from recsys.service import Recommender
from recsys.types import RecsysError

index_app = typer.Typer(rich_markup_mode=None, help="Build and update an index.", no_args_is_help=True)

InputFormat = StrEnum("InputFormat", {name: name for name in FORMATS})  # type: ignore[misc]


FormatOption = typer.Option(None, "--format", "-f", help="Input format (default: from the file extension).")
OnErrorOption = typer.Option(
    OnError.skip,
    "--on-error",
    help="skip: report bad records, index the rest, exit 3. fail: write nothing if any is bad (exit 1).",
)
ProgressOption = typer.Option(True, "--progress/--no-progress", help="Show the embedding progress bar.")
MapOption = typer.Option(
    None,
    "--map",
    help="Input columns to fields, e.g. title=headline,body=description,category=label ([input] columns).",
)
IdFromOption = typer.Option(None, "--id-from", help="Derive ids: url (the url is the id) or hash (of title and text).")


def _input_settings(ctx: typer.Context, mapping: str | None, id_from: str | None) -> Settings:
    """The command's settings with --map / --id-from over [input]."""
    settings = app_state(ctx).settings
    if mapping:
        pairs = [p.split("=", 1) for p in mapping.split(",") if p.strip()]
        if any(len(p) != 2 or not p[0].strip() or not p[1].strip() for p in pairs):
            raise RecsysError(f"--map takes field=column pairs, e.g. body=description; got {mapping!r}")
        settings = settings.replace("input", columns={f.strip(): c.strip() for f, c in pairs})
    if id_from is not None:
        settings = settings.replace("input", id_from=id_from)
    return settings


def _value(choice: Enum | None) -> str | None:
    return None if choice is None else str(choice.value)


def _job(
    settings: Settings,
    job: str,
    articles: list[str],
    index: str,
    fmt: InputFormat | None,
    on_error: OnError,
    progress: bool,
    as_json: bool,
) -> None:
    """Run Indexer.build or Indexer.add with a progress bar, then report."""
    run = getattr(Indexer(index, settings), job)
    with docs_progress(progress) as bar:
        report = run(articles, fmt=_value(fmt), on_error=on_error.value, progress=bar)
    _finish(report, as_json)


def _finish(report: BuildReport, as_json: bool) -> None:
    for problem in report.problems:
        typer.echo(str(problem), err=True)
    for warning in report.warnings:
        typer.echo(warning, err=True)
    if as_json:
        print_json(report.to_dict())
    else:
        rate = f", {report.docs_per_second:,.1f} docs/s" if report.embedded else ""
        blocked = f", refused {report.blocked} taken down" if report.blocked else ""
        typer.echo(
            f"version {report.version}: {report.articles} articles "
            f"(added {report.added}, updated {report.updated}, unchanged {report.unchanged}, "
            f"removed {report.removed}{blocked}; embedded {report.embedded}{rate}) in {report.seconds:.2f}s"
        )
    if report.problems:
        typer.echo(f"{len(report.problems)} bad record(s) skipped (exit code {EXIT_SKIPPED})", err=True)
        raise typer.Exit(EXIT_SKIPPED)


@index_app.command()
def build(
    ctx: typer.Context,
    articles: list[str] = typer.Argument(..., help="JSONL, CSV or MIND news.tsv files, or folders of .txt files."),
    index: str = IndexOption,
    fmt: InputFormat = FormatOption,
    on_error: OnError = OnErrorOption,
    progress: bool = ProgressOption,
    mapping: str = MapOption,
    id_from: str = IdFromOption,
    as_json: bool = JsonOption,
) -> None:
    """Build an index holding exactly these articles (unchanged texts re-use their vectors)."""
    _job(_input_settings(ctx, mapping, id_from), "build", articles, index, fmt, on_error, progress, as_json)


@index_app.command()
def add(
    ctx: typer.Context,
    articles: list[str] = typer.Argument(..., help="Files with new or changed articles."),
    index: str = IndexOption,
    fmt: InputFormat = FormatOption,
    on_error: OnError = OnErrorOption,
    progress: bool = ProgressOption,
    mapping: str = MapOption,
    id_from: str = IdFromOption,
    as_json: bool = JsonOption,
) -> None:
    """Add new articles and re-embed changed ones; unchanged ones cost nothing."""
    _job(_input_settings(ctx, mapping, id_from), "add", articles, index, fmt, on_error, progress, as_json)


@index_app.command()
def remove(
    ctx: typer.Context,
    ids: list[str] = typer.Argument(..., help="Article ids to take down."),
    index: str = IndexOption,
    block_unindexed: bool = typer.Option(
        False, "--block-unindexed", help="Also take down ids that are not indexed, so they are refused if added."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Take articles down: they appear in no list from the next query on."""
    report = Indexer(index, app_state(ctx).settings).remove(ids, block_unindexed=block_unindexed)
    _finish(report, as_json)
    if report.not_indexed:
        shown = ", ".join(report.not_indexed[:10]) + (" ..." if len(report.not_indexed) > 10 else "")
        if block_unindexed:
            typer.echo(
                f"{len(report.not_indexed)} id(s) were not indexed and are now refused if added: {shown}", err=True
            )
        else:
            typer.echo(
                f"error: {len(report.not_indexed)} id(s) are not indexed: {shown}; check them, or pass "
                "--block-unindexed to refuse them in advance",
                err=True,
            )
            raise typer.Exit(EXIT_FAILED)
    typer.echo(
        "taken-down ids stay out of every list and every later add/build; undo with `recsys index restore`", err=True
    )


@index_app.command()
def restore(
    ctx: typer.Context,
    ids: list[str] = typer.Argument(..., help="Taken-down article ids to allow again."),
    index: str = IndexOption,
    as_json: bool = JsonOption,
) -> None:
    """Lift takedowns: the articles are back in the lists at once (their text and vector were kept)."""
    report = Indexer(index, app_state(ctx).settings).restore(ids)
    _finish(report, as_json)
    if report.not_indexed and not as_json:
        shown = ", ".join(report.not_indexed[:10])
        typer.echo(
            f"{len(report.not_indexed)} id(s) allowed again but not back (no stored text; re-add them): {shown}",
            err=True,
        )


@index_app.command()
def optimize(ctx: typer.Context, index: str = IndexOption, as_json: bool = JsonOption) -> None:
    """Merge every segment into one and recount the lexical statistics (a rewrite of the whole archive).

    Not needed for speed or size: add/remove keep the segment count bounded by merging small segments as
    they go. Use it after a large clean-up, or to make an index equal a fresh build of its articles."""
    _finish(Indexer(index, app_state(ctx).settings).optimize(), as_json)


@index_app.command()
def pull(
    ctx: typer.Context,
    source: str = typer.Argument(..., help="The index folder to follow (a shared mount, or a synced path)."),
    index: str = IndexOption,
    every: float = typer.Option(
        0.0, "--every", min=0.0, help="Keep following: pull again every this many seconds (0: pull once)."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Make this index a replica: copy what it lacks of SOURCE's live version, then swap CURRENT atomically."""
    keep = app_state(ctx).settings.index.keep_versions
    while True:
        try:
            report = replica.pull(source, index, keep)
        except RecsysError as exc:
            if not every:
                raise
            typer.echo(f"error: {exc} (retrying in {every:g} s)", err=True)  # a follower keeps following
            time.sleep(every)
            continue
        if as_json:
            print_json(report.to_dict())
        elif report.changed:
            typer.echo(
                f"version {report.version}: copied {report.files_copied} files ({report.bytes_copied:,} bytes), "
                f"{report.segments_copied} new segment(s), {report.segments_reused} already here, "
                f"in {report.seconds:.2f}s"
            )
        else:
            typer.echo(f"already at version {report.version}")
        if report.models_updated:
            typer.echo(f"updated {', '.join(report.models_updated)}")
        if not every:
            return
        time.sleep(every)


@index_app.command()
def verify(
    index: str = IndexOption,
    deep: bool = typer.Option(
        False,
        "--deep",
        help="Also check vector and weight values, term ids, SQLite's quick_check, each segment's open.",
    ),
    as_json: bool = JsonOption,
) -> None:
    """Read every file of the live version against its recorded size and checksum; exit 1 on any damage."""
    report = verify_index(index, deep=deep)
    if as_json:
        print_json(report.to_dict())
    else:
        for problem in report.problems:
            typer.echo(f"error: {problem}", err=True)
        for folder in report.without_checksums:
            typer.echo(
                f"note: {folder} was written before checksums were recorded (checked by size only; "
                "`recsys index optimize` rewrites it with them)",
                err=True,
            )
        verdict = "ok" if report.ok else f"{len(report.problems)} problem(s)"
        typer.echo(f"version {report.version}: {report.files} files, {report.bytes:,} bytes read: {verdict}")
    if not report.ok:
        if not as_json:
            typer.echo(
                "fix: re-pull the index (`recsys index pull`), rewrite it (`recsys index optimize`, or "
                "`recsys index build ARTICLES`), or point CURRENT back at the previous version in versions/",
                err=True,
            )
        raise typer.Exit(EXIT_FAILED)


@index_app.command()
def info(ctx: typer.Context, index: str = IndexOption, as_json: bool = JsonOption) -> None:
    """Model, dimension, article count, index type and settings, build time, size on disk."""
    with Recommender.open(index, offline(app_state(ctx).settings)) as rec:
        data = rec.info()
    if as_json:
        print_json(data)
        return
    ann = data["ann"]
    tuning = ", ".join(f"{k}={v}" for k, v in ann.items() if k not in ("kind", "dimension", "size", "segments"))
    lines = [
        ("index", data["index"]),
        ("version", data["version"]),
        ("model", f"{data['model']['name']} ({data['model']['dimension']}-d)"),
        ("articles", f"{data['articles']:,} ({data['rows'] - data['articles']:,} deleted rows awaiting a merge)"),
        ("segments", f"{data['segments']}"),
        ("takedowns", f"{data['takedowns']:,}"),
        ("ann", f"{ann['kind']}" + (f" ({tuning})" if tuning else "")),
        ("built", f"{data['created_at']} in {data['build_seconds']:.2f}s"),
        ("size", f"{data['size_bytes'] / 1e6:,.2f} MB"),
        ("libraries", ", ".join(f"{k} {v}" for k, v in data["library_versions"].items())),
    ]
    for key, value in lines:
        typer.echo(f"{key:>10}: {value}")
