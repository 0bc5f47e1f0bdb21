"""What every command shares: settings, output helpers, the progress bar."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from recsys.config import DEFAULT_INDEX_DIR, Settings, load_settings
from recsys.types import Hit

# Exit codes of every command (README, "Exit codes").
EXIT_OK = 0
EXIT_FAILED = 1  # nothing was done: an error, a refused input with --on-error fail, an unexpected crash
EXIT_USAGE = 2  # bad command line (unknown option, bad value)
EXIT_SKIPPED = 3  # done, but some input records were bad: each is reported as file:line: reason

err = Console(stderr=True)
IndexOption = typer.Option(DEFAULT_INDEX_DIR, "--index", "-i", help="Index directory.")
JsonOption = typer.Option(False, "--json", help="Print JSON instead of a table.")
EventsOption = typer.Option(
    None,
    "--events",
    help="Events store: postgresql://user@host:5432/db shared by many hosts "
    "(default: [events] url, else events.sqlite in the index folder).",
)


class OnError(StrEnum):
    """What a job does with bad records."""

    skip = "skip"
    fail = "fail"


@dataclass
class State:
    config_path: str | None = None
    events_url: str | None = None  # --events, over the config file and the environment
    _settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config_path)
            if self.events_url is not None:
                self._settings = self._settings.replace("events", url=self.events_url)
        return self._settings


def app_state(ctx: typer.Context) -> State:
    root = ctx.find_root()
    if not isinstance(root.obj, State):
        root.obj = State()
    return root.obj


def settings_of(ctx: typer.Context, events: str | None = None) -> Settings:
    """The command's settings, with ``--events URL`` applied when given."""
    state = app_state(ctx)
    if events is not None and events != state.events_url:
        state.events_url = events
        state._settings = None
    return state.settings


def offline(settings: Settings) -> Settings:
    """Settings for a command that asks for lists on an operator's behalf (a query, an evaluation, training):
    nothing it prints is served to a reader, so the served-list log records none of it."""
    return settings.replace("feedback", log_rate=0.0)


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


ORDER_NOTE = "   #  score  (# is the order served: relevance balanced with variety, so the scores need not fall)"


def print_hits(hits: list[Hit], as_json: bool, title: str = "") -> None:
    if as_json:
        print_json([h.to_dict() for h in hits])
        return
    if title:
        typer.echo(title)
    if not hits:
        why = getattr(hits, "why", "")
        typer.echo(f"  (no results: {why})" if why else "  (no results)")
        return
    typer.echo(ORDER_NOTE)
    for rank, hit in enumerate(hits, start=1):
        date = (hit.published_at or "")[:10]
        typer.echo(f"  {rank:2d}. {hit.score:6.3f}  {hit.title}")
        typer.echo(f"      {hit.id}  {date}  {hit.reason}")


PROGRESS_SECONDS = 5.0  # a plain progress line at most this often when stderr is not a terminal


def plain_progress(start: Callable[[], float] = time.perf_counter) -> Callable[[int], Callable[[int], None]]:
    """Progress for logs and CI (no TTY: a bar would print nothing until done): one line every
    ``PROGRESS_SECONDS`` and one at the end, e.g. "embedding: 1,200/8,000 (15%), 210.3 docs/s, ~32 s left"."""

    def begin(total: int) -> Callable[[int], None]:
        started = start()
        done, shown = 0, started

        def advance(n: int) -> None:
            nonlocal done, shown
            done += n
            now = start()
            if now - shown < PROGRESS_SECONDS and done < total:
                return
            shown = now
            rate = done / max(now - started, 1e-9)
            left = (total - done) / rate if rate > 0 else 0.0
            share = 100.0 * done / max(total, 1)
            print(
                f"embedding: {done:,}/{total:,} ({share:.0f}%), {rate:,.1f} docs/s, ~{left:,.0f} s left",
                file=sys.stderr,
                flush=True,
            )

        return advance

    return begin


@contextmanager
def docs_progress(enabled: bool = True) -> Iterator[Callable[[int], Callable[[int], None]] | None]:
    """A progress bar factory for embedding: ``start(total)`` returns ``advance(n)`` (plain lines without a TTY)."""
    if not enabled:
        yield None
        return
    if not err.is_terminal:
        yield plain_progress()
        return
    progress = Progress(
        TextColumn("embedding"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} docs/s"),
        TimeRemainingColumn(),
        console=err,
        transient=False,
    )

    def start(total: int) -> Callable[[int], None]:
        task = progress.add_task("embed", total=total, rate="-")
        started = time.perf_counter()
        done = 0

        def advance(n: int) -> None:
            nonlocal done
            done += n
            rate = done / max(time.perf_counter() - started, 1e-9)
            progress.update(task, advance=n, rate=f"{rate:,.1f}")

        return advance

    with progress:
        yield start
