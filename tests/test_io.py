from pathlib import Path

import pytest

from recsys.ingest.articles import read_articles
from recsys.ingest.text import detect_format, parse_timestamp
from recsys.types import RecsysError

DATA = Path(__file__).parent / "data"


def reasons(result):
    return {(Path(p.path).name, p.line): p.reason for p in result.problems}


def test_jsonl_reads_valid_records_and_locates_every_bad_line():
    result = read_articles([DATA / "articles.jsonl"])
    assert [a.id for a in result.articles] == ["a1", "a2", "a5"]
    found = reasons(result)
    assert set(found) == {("articles.jsonl", n) for n in (3, 4, 5, 6, 7, 8)}
    assert "malformed JSON" in found[("articles.jsonl", 3)]
    assert "missing required field 'id'" in found[("articles.jsonl", 4)]
    assert "missing required field 'title'" in found[("articles.jsonl", 5)]
    assert "duplicate id 'a1'" in found[("articles.jsonl", 6)] and "articles.jsonl:1" in found[("articles.jsonl", 6)]
    assert "bad published_at" in found[("articles.jsonl", 7)]
    assert "expected a JSON object" in found[("articles.jsonl", 8)]
    assert str(result.problems[0]).startswith(str(DATA / "articles.jsonl") + ":3: ")


def test_jsonl_fields_are_normalised_and_unknown_ones_kept():
    a1, a2, a5 = read_articles([DATA / "articles.jsonl"]).articles
    assert a1.tags == ("transport", "cycling") and a2.tags == ("transport",)
    assert a1.published_at == "2026-11-01T09:00:00Z"
    assert a2.published_at == "2026-11-10T00:00:00Z"  # a date alone means midnight UTC
    assert a1.extra == {"author": "desk"}
    assert a5.language == "EN"


def test_csv_with_timezone_and_a_row_with_too_many_cells():
    result = read_articles([DATA / "articles.csv"])
    assert [a.id for a in result.articles] == ["c1", "c2"]
    c1 = result.articles[0]
    assert c1.published_at == "2026-10-01T08:00:00Z"
    assert c1.body == "Boats, music and food." and c1.tags == ("boats", "music")
    assert list(reasons(result)) == [("articles.csv", 4)]


def test_mind_news_tsv_maps_columns_and_entities_to_tags():
    result = read_articles([DATA / "mind_news_sample_fixture.tsv"])
    n1, n2 = result.articles
    assert (n1.id, n1.category, n1.subcategory, n1.abstract, n1.url) == (
        "N1",
        "sports",
        "football_nfl",
        "A late field goal.",
        "https://example.com/n1",
    )
    assert n1.tags == ("Field goal",)
    assert n2.abstract == ""
    assert list(reasons(result)) == [("mind_news_sample_fixture.tsv", 3)]


def test_invalid_utf8_costs_only_its_own_record():
    result = read_articles([DATA / "latin1.jsonl"])
    assert [a.id for a in result.articles] == ["u2"]
    assert reasons(result) == {("latin1.jsonl", 1): "invalid UTF-8 in this record; re-save the file as UTF-8"}


def test_txt_folder_takes_headline_and_category_and_reports_bad_bytes():
    result = read_articles([DATA / "txtdir"])
    assert [(a.id, a.category, a.title) for a in result.articles] == [
        ("sport/001", "sport", "Runner wins marathon"),
        ("tech/001", "tech", "Phone launch"),
    ]
    assert result.articles[0].body == "She won in record time."
    assert reasons(result) == {("002.txt", 3): "invalid UTF-8 in this file; re-save it as UTF-8"}


def test_format_detection_and_errors(tmp_path):
    assert detect_format(DATA / "articles.jsonl") == "jsonl"
    assert detect_format(DATA / "mind_news_sample_fixture.tsv") == "mind"
    assert detect_format(DATA / "txtdir") == "txtdir"
    with pytest.raises(RecsysError, match="--format"):
        detect_format(tmp_path / "x.xml")
    with pytest.raises(RecsysError, match="no such file"):
        read_articles([tmp_path / "missing.jsonl"])
    # --format overrides the extension
    weird = tmp_path / "feed.txt"
    weird.write_text('{"id": "x", "title": "T"}\n')
    assert [a.id for a in read_articles([weird], "jsonl").articles] == ["x"]


def test_timestamps():
    assert parse_timestamp("2026-11-20T10:00:00+01:00").isoformat() == "2026-11-20T09:00:00+00:00"
    assert parse_timestamp(0).year == 1970
    assert parse_timestamp("1700000000").year == 2023
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_timestamp("20/11/2026")
