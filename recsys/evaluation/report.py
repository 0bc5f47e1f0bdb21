"""Evaluation run folders: report.md for people, metrics.json for programs, PNG plots for both.

A run folder is ``--out DIR`` or a new ``runs/<UTC time>-<kind>/``. Settings can be swept with
``--sweep section.key=v1,v2,...``; each value re-runs the configured system and the sweep becomes a
metric-vs-value table and plot.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recsys.archive.layout import library_versions
from recsys.config import Settings
from recsys.types import ConfigError

RUNS_DIR = Path("runs")


@dataclass(frozen=True)
class Sweep:
    """One setting and the values to try, e.g. ``recommend.popularity_weight=0,0.1,0.3``."""

    section: str
    key: str
    values: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.section}.{self.key}"

    def settings(self, base: Settings) -> list[tuple[str, Settings]]:
        return [(value, base.replace(self.section, **{self.key: value})) for value in self.values]


def parse_sweep(text: str, base: Settings) -> Sweep:
    """``section.key=v1,v2`` (or ``key=...`` when one section has that key) into a checked Sweep."""
    name, sep, values = text.partition("=")
    if not sep or not values.strip():
        raise ConfigError(f"--sweep {text!r}: expected NAME=V1,V2,... e.g. related.mmr_lambda=0.5,0.85,1.0")
    sections = base.to_dict()
    if "." in name:
        section, key = name.split(".", 1)
    else:
        owners = [s for s, keys in sections.items() if name in keys]
        if len(owners) != 1:
            where = f"in {', '.join(owners)}" if owners else "in no section"
            raise ConfigError(f"--sweep {name!r} is {where}; write it as section.{name}")
        section, key = owners[0], name
    parsed = Sweep(section, key, tuple(v.strip() for v in values.split(",") if v.strip()))
    parsed.settings(base)  # checks the section, the key and every value's type now, not mid-run
    return parsed


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else str(value)


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def text_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    widths = {c: max(len(c), *(len(_cell(r.get(c))) for r in rows)) for c in columns}
    lines = ["  ".join(c.rjust(widths[c]) for c in columns)]
    lines += ["  ".join(_cell(r.get(c)).rjust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines)


@dataclass
class Run:
    """Collects a run's sections, metrics and plots, then writes them into one folder."""

    kind: str
    out: Path | None = None
    sections: list[tuple[str, str]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    plots: dict[str, Callable[[Any], None]] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    def folder(self) -> Path:
        if self.out is None:
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            self.out = RUNS_DIR / f"{stamp}-{self.kind}"
            suffix = 1
            while self.out.exists():
                suffix += 1
                self.out = RUNS_DIR / f"{stamp}-{self.kind}-{suffix}"
        self.out.mkdir(parents=True, exist_ok=True)
        return self.out

    def add(self, heading: str, markdown: str) -> None:
        self.sections.append((heading, markdown))

    def plot(self, name: str, draw: Callable[[Any], None]) -> None:
        """Register a plot: ``draw(axes)`` fills one matplotlib Axes; saved as <name>.png."""
        self.plots[name] = draw

    def write(self, title: str, settings: Settings) -> Path:
        folder = self.folder()
        seconds = round(time.perf_counter() - self.started, 2)
        self.metrics.setdefault("kind", self.kind)
        self.metrics["seconds"] = seconds
        self.metrics["settings"] = settings.to_dict()
        self.metrics["library_versions"] = library_versions()
        (folder / "metrics.json").write_text(json.dumps(self.metrics, indent=2, default=str) + "\n")
        images = self._draw(folder)
        lines = [f"# {title}", "", f"Run {folder.name}: {seconds:.1f} s on Python {platform.python_version()}.", ""]
        for heading, body in self.sections:
            lines += [f"## {heading}", "", body, ""]
        if images:
            lines += ["## Plots", ""] + [f"![{name}]({name}.png)" for name in images] + [""]
        lines += ["## Settings", "", "```json", json.dumps(settings.to_dict(), indent=2), "```", ""]
        (folder / "report.md").write_text("\n".join(lines))
        return folder

    def _draw(self, folder: Path) -> list[str]:
        if not self.plots:
            return []
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        done = []
        for name, draw in self.plots.items():
            figure, axes = plt.subplots(figsize=(7, 4.2))
            draw(axes)
            figure.tight_layout()
            figure.savefig(folder / f"{name}.png", dpi=110)
            plt.close(figure)
            done.append(name)
        return done
