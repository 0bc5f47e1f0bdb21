"""A seeded corpus of hostile input files: good records with awkward but valid content, mixed with bad ones.

``write_corpus(folder, seed)`` writes article files (JSON Lines, CSV, MIND news.tsv) and event files
(JSON Lines, CSV, MIND behaviors.tsv) and returns what a correct reader must make of them: the id of
every good article and the key of every good event (none may be lost), and the ``(file, line)`` of
every bad record (each must be reported exactly there). The bad records are the ones hostile input
and real feeds produced in the hardening issue: lone surrogates, undecodable bytes, wrong JSON types,
non-finite and huge counts, times in the distant future or past, unclosed CSV quotes, oversized cells,
rows with the wrong number of columns, titles with no visible character, UTF-16 files and CSV headers that
name a column twice. Good records carry U+2028/U+0085 inside strings, emoji, commas
and quotes, multi-line CSV cells, CRLF line ends and a UTF-8 BOM, so over-eager rejection shows too.

Run ``python -m tests.fuzz_corpus DIR`` to write one for poking at by hand.
"""

from __future__ import annotations

import csv
import io
import json
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

WORDS = (
    "storm harbour election ballot striker derby budget minister vaccine court ruling market shares "
    "festival orchestra drought wildfire rescue climber satellite launch museum strike teachers rail "
    "København vejret æblekage crème brûlée naïve café Zürich São Paulo"
).split()
TRICKY = ["\u2028", "\u2029", "\u0085", "😀", "“quoted”", ", with, commas", "tab\there", "<b>html</b>", "\\"]
GOOD_TIME = "2026-11-20T10:00:00Z"


@dataclass
class Expected:
    """What a correct reader makes of the corpus."""

    article_files: list[Path] = field(default_factory=list)
    event_files: list[Path] = field(default_factory=list)
    good_articles: set[str] = field(default_factory=set)
    bad_article_lines: set[tuple[str, int]] = field(default_factory=set)
    good_events: int = 0
    bad_event_lines: set[tuple[str, int]] = field(default_factory=set)

    @property
    def records(self) -> int:
        return len(self.good_articles) + len(self.bad_article_lines) + self.good_events + len(self.bad_event_lines)


def _title(rng: random.Random) -> str:
    words = rng.sample(WORDS, rng.randint(3, 7))
    if rng.random() < 0.3:
        words.insert(rng.randrange(len(words)), rng.choice(TRICKY))
    return " ".join(words)


def _good_article(rng: random.Random, article_id: str) -> dict:
    record: dict = {"id": article_id, "title": _title(rng), "body": " ".join(rng.choices(WORDS, k=rng.randint(5, 40)))}
    if rng.random() < 0.7:
        record["published_at"] = (
            f"2026-{rng.randint(1, 11):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:00:00Z"
        )
    if rng.random() < 0.5:
        record["category"] = rng.choice(["sport", "politics", "culture", "Økonomi"])
    if rng.random() < 0.3:
        record["tags"] = rng.sample(WORDS, 2)
    return record


def _bad_article_json(rng: random.Random, article_id: str) -> str:
    """One JSON line that must be refused (never a good record in disguise)."""
    good = _good_article(rng, article_id)
    kind = rng.randrange(13)
    if kind == 0:
        return json.dumps(good)[:-5]  # truncated
    if kind == 1:
        return json.dumps({**good, "title": "Broken emoji \ud83d here"})  # a lone surrogate, as an escape
    if kind == 2:
        return json.dumps({**good, "id": f"id-\udc80-{article_id}"})
    if kind == 3:
        return json.dumps({**good, "id": rng.choice([[1, 2], True, 1.5, {"a": 1}])})
    if kind == 4:
        return json.dumps({**good, "title": rng.choice([12, ["a"], False])})
    if kind == 5:
        return json.dumps({k: v for k, v in good.items() if k != "title"})
    if kind == 6:
        return json.dumps(
            {**good, "published_at": rng.choice(["0999-01-01", "not a date", "12000-01-01", "0001-01-01"])}
        )
    if kind == 7:
        return json.dumps({**good, "tags": {"x": 1}})
    if kind == 8:
        return json.dumps([good])
    if kind == 9:
        return json.dumps({**good, "body": 3.5})
    if kind == 10:
        return json.dumps({**good, "id": ""})
    if kind == 11:
        return json.dumps({**good, "title": rng.choice(["\u200b", " \u2060\u200b ", "\u00ad", "\ufeff\u200d"])})
    return json.dumps({**good, "category": ["sport"]})


def _write_jsonl(path: Path, rng: random.Random, n: int, expected: Expected, prefix: str) -> None:
    lines: list[bytes] = []
    for i in range(n):
        article_id = f"{prefix}{i}"
        number = len(lines) + 1
        roll = rng.random()
        if roll < 0.75:
            record = _good_article(rng, article_id)
            if rng.random() < 0.05:
                record["id"] = 7_000_000 + i  # whole-number ids are accepted as text
                article_id = str(record["id"])
            lines.append(json.dumps(record, ensure_ascii=rng.random() < 0.5).encode("utf-8"))
            expected.good_articles.add(article_id)
        elif roll < 0.97:
            lines.append(_bad_article_json(rng, article_id).encode("utf-8", "surrogatepass"))
            expected.bad_article_lines.add((str(path), number))
        else:
            lines.append(json.dumps(_good_article(rng, article_id)).encode("utf-8").replace(b"e", b"\xff", 1))
            expected.bad_article_lines.add((str(path), number))
        if rng.random() < 0.02:
            lines.append(b"   ")  # blank lines are skipped, not reported
    path.write_bytes(b"\xef\xbb\xbf" + b"\r\n".join(lines) + b"\r\n")


def _csv_line(cells: list[str]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(cells)
    return out.getvalue()


def _write_csv(path: Path, rng: random.Random, n: int, expected: Expected, prefix: str) -> None:
    header = ["id", "title", "body", "published_at", "category"]
    text = _csv_line(header)
    line = 2
    for i in range(n):
        article_id = f"{prefix}{i}"
        good = _good_article(rng, article_id)
        cells = [article_id, good["title"], good["body"], good.get("published_at", ""), good.get("category", "")]
        roll = rng.random()
        if roll < 0.8:
            if rng.random() < 0.1:
                cells[2] = "first paragraph\nsecond paragraph\nthird"  # a quoted cell over lines: valid
            if rng.random() < 0.005:
                cells[2] = "long " * 40_000  # 200,000 characters: over csv's default limit, under ours
            chunk = _csv_line(cells)
            expected.good_articles.add(article_id)
        else:
            kind = rng.randrange(4) if rng.random() > 0.01 else 4
            if kind == 0:  # an opening quote that never closes
                chunk = f'{article_id},"{good["title"]},{good["body"]},,\n'
            elif kind == 1:
                chunk = _csv_line([*cells, "extra", "cells"])
            elif kind == 2:
                chunk = _csv_line(cells[:3])
            elif kind == 3:
                chunk = _csv_line([article_id, "", good["body"], "", ""])
            else:
                chunk = _csv_line([article_id, "x" * 1_100_000, "", "", ""])  # over MAX_CELL_CHARS
            expected.bad_article_lines.add((str(path), line))
        text += chunk
        line += chunk.count("\n")
    path.write_text(text, encoding="utf-8")


def _write_mind_news(path: Path, rng: random.Random, n: int, expected: Expected, prefix: str) -> None:
    rows: list[bytes] = []
    for i in range(n):
        article_id = f"{prefix}{i}"
        title = _title(rng).replace("\t", " ")
        cells = [
            article_id,
            "news",
            "newsworld",
            title,
            "An abstract.",
            "https://example.com/" + article_id,
            "[]",
            "[]",
        ]
        roll = rng.random()
        if roll < 0.8:
            rows.append("\t".join(cells).encode("utf-8"))
            expected.good_articles.add(article_id)
            continue
        kind = rng.randrange(4)
        if kind == 0:
            rows.append("\t".join([*cells, "x", "y", "z", "w"]).encode("utf-8"))  # 12 columns
        elif kind == 1:
            rows.append("\t".join(cells[:3]).encode("utf-8"))
        elif kind == 2:
            rows.append("\t".join(cells).encode("utf-8").replace(b"An", b"A\xffn"))
        else:
            rows.append("\t".join([*cells[:3], "", *cells[4:]]).encode("utf-8"))  # no title
        expected.bad_article_lines.add((str(path), len(rows)))
    path.write_bytes(b"\n".join(rows) + b"\n")


def _good_event(rng: random.Random, article_ids: list[str]) -> dict:
    event = {
        "article_id": rng.choice(article_ids),
        "type": rng.choice(["view", "click", "impression"]),
        "ts": GOOD_TIME,
    }
    if rng.random() < 0.2:
        event.update(type="reaction", reaction=rng.choice(["veryGood", "angry", "sad"]))
    if rng.random() < 0.6:
        event["user_id"] = f"u{rng.randrange(500)}"
    if rng.random() < 0.3:
        event["count"] = rng.randint(1, 50)
    if rng.random() < 0.2:
        event["ts"] = rng.randint(1_700_000_000, 1_760_000_000)  # epoch seconds
    return event


def _bad_event(rng: random.Random, article_ids: list[str]) -> str:
    event = _good_event(rng, article_ids)
    kind = rng.randrange(11)
    if kind == 0:
        return json.dumps({**event, "ts": rng.choice(["2100-01-01T00:00:00Z", "9999-12-31", 4_102_444_800])})
    if kind == 1:
        return json.dumps({**event, "ts": rng.choice(["0001-01-01", -1, 0])})
    if kind == 2:
        return json.dumps({**event, "count": float(rng.choice(["inf", "-inf", "nan"]))})  # Infinity / NaN
    if kind == 3:
        return json.dumps({**event, "count": rng.choice([1e19, 99999999999999999999, 2.9, -1, 0, True, "many"])})
    if kind == 4:
        return json.dumps({**event, "article_id": "a\ud83d"})
    if kind == 5:
        return json.dumps({**event, "user_id": "\udcff"})
    if kind == 6:
        return json.dumps({**event, "type": "like"})
    if kind == 7:
        return json.dumps({**event, "article_id": ["x"]})
    if kind == 8:
        return json.dumps({k: v for k, v in event.items() if k != "ts"})
    if kind == 9:
        return "{not json"
    return json.dumps({**event, "type": "reaction", "reaction": ""})


def _write_events(path: Path, rng: random.Random, n: int, expected: Expected, article_ids: list[str]) -> None:
    lines = []
    for _ in range(n):
        if rng.random() < 0.8:
            lines.append(json.dumps(_good_event(rng, article_ids)))
            expected.good_events += 1
        else:
            lines.append(_bad_event(rng, article_ids))
            expected.bad_event_lines.add((str(path), len(lines)))
    path.write_bytes("\n".join(lines).encode("utf-8", "surrogatepass") + b"\n")


def _write_events_csv(path: Path, rng: random.Random, n: int, expected: Expected, article_ids: list[str]) -> None:
    text = "article_id,type,ts,user_id,count\n"
    for number in range(2, n + 2):
        event = _good_event(rng, article_ids)
        cells = [event["article_id"], "view", GOOD_TIME, event.get("user_id", ""), str(event.get("count", 1))]
        if rng.random() < 0.2:
            cells[rng.choice([2, 4])] = rng.choice(["2100-01-01", "Infinity", "1e19", "2.9", "-3", "0001-01-01"])
            expected.bad_event_lines.add((str(path), number))
        else:
            expected.good_events += 1
        text += _csv_line(cells)
    path.write_text(text, encoding="utf-8")


def _write_behaviors(path: Path, rng: random.Random, n: int, expected: Expected, article_ids: list[str]) -> None:
    rows: list[bytes] = []
    for i in range(n):
        shown = rng.sample(article_ids, 4)
        cells = [
            f"{i + 1}",
            f"U{rng.randrange(300)}",
            "11/15/2019 8:55:22 AM",
            " ".join(rng.sample(article_ids, 3)),
            " ".join(f"{a}-{int(j == 0)}" for j, a in enumerate(shown)),
        ]
        if rng.random() < 0.85:
            rows.append("\t".join(cells).encode("utf-8"))
            expected.good_events += len(shown) + 1  # an impression per candidate, a click for the first
            continue
        kind = rng.randrange(3)
        if kind == 0:
            rows.append("\t".join(cells).encode("utf-8").replace(b"U", b"U\xff", 1))
        elif kind == 1:
            rows.append("\t".join(cells[:4]).encode("utf-8"))
        else:
            rows.append("\t".join([*cells[:2], "yesterday", *cells[3:]]).encode("utf-8"))
        expected.bad_event_lines.add((str(path), len(rows)))
    path.write_bytes(b"\n".join(rows) + b"\n")


def write_corpus(folder: Path, seed: int = 0, scale: int = 1) -> Expected:
    """Write the corpus into ``folder`` (about 11,500 records at scale 1) and say what must come of it."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    expected = Expected()
    for name, writer, n in (
        ("articles.jsonl", _write_jsonl, 4000),
        ("articles.csv", _write_csv, 3000),
        ("news.tsv", _write_mind_news, 1500),
    ):
        path = folder / name
        writer(path, rng, n * scale, expected, name.split(".")[1][0] + "-")
        expected.article_files.append(path)
    # Whole files a reader must refuse with one problem on line 1: UTF-16 text, a CSV header naming a column twice.
    utf16 = folder / "articles-utf16.jsonl"
    utf16.write_text(json.dumps(_good_article(rng, "u16")) + "\n", encoding="utf-16")
    twice = folder / "header-twice.csv"
    twice.write_text("id,title,id\nx1,storm harbour,x2\n", encoding="utf-8")
    for path in (utf16, twice):
        expected.article_files.append(path)
        expected.bad_article_lines.add((str(path), 1))
    article_ids = sorted(expected.good_articles)
    for name, writer, n in (
        ("events.jsonl", _write_events, 2000),
        ("events.csv", _write_events_csv, 500),
        ("behaviors.tsv", _write_behaviors, 500),
    ):
        path = folder / name
        writer(path, rng, n * scale, expected, article_ids)
        expected.event_files.append(path)
    return expected


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "fuzz-corpus")
    started = time.perf_counter()
    found = write_corpus(target)
    print(f"wrote {found.records:,} records to {target} in {time.perf_counter() - started:.1f}s")
