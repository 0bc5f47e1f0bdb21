"""End to end in real headless Chromium: the demo page, its three boxes, a click, a reaction.

Needs Debian's chromium (/usr/bin/chromium) and the playwright package (which drives it; nothing is
downloaded). Skipped with the reason when either is missing.
"""

import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.model, pytest.mark.filterwarnings("ignore::DeprecationWarning")]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def server(sample_index, tmp_path):
    uvicorn = pytest.importorskip("uvicorn")
    from recsys.config import Settings
    from recsys.http import create_app

    root = tmp_path / "index"
    shutil.copytree(sample_index, root)  # the sample's articles, no events yet
    settings = Settings().replace("popularity", refresh_seconds=0.0)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(create_app(root, settings), host="127.0.0.1", port=port, log_level="warning")
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not instance.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    instance.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def page():
    if CHROMIUM is None:
        pytest.skip("no Chromium on this machine: install Debian's chromium package (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (drives the system Chromium)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser.new_page(viewport={"width": 1280, "height": 1000})
        browser.close()


def lists(page):
    return {
        box: [
            (a.get_attribute("data-id"), reason.inner_text())
            for a, reason in zip(
                page.locator(f"#{box} li a").all(), page.locator(f"#{box} li .reason").all(), strict=True
            )
        ]
        for box in ("related", "ranking", "recommendation")
    }


def open_article(page, base, article_id):
    page.goto(f"{base}/?id={article_id}")
    wait_loaded(page)


def wait_loaded(page):
    page.wait_for_function("document.body.dataset.loaded !== undefined")
    page.wait_for_function("JSON.parse(localStorage.getItem('recsys-history') || '[]').length > 0")


def test_reader_journey(server, page, tmp_path):
    first = "s-ecb-rates-hold"
    open_article(page, server, first)
    assert page.locator("#title").inner_text() == "ECB holds interest rates steady as inflation cools"
    boxes = lists(page)
    ids = [i for hits in boxes.values() for i, _ in hits]
    assert all(boxes.values()), boxes
    assert len(ids) == len(set(ids)) and first not in ids  # three distinct lists, current article in none
    assert "wire-ecb-rates-hold" not in ids  # the re-published copy never shows
    newest = ("new: published", "latest in the archive: published")  # the sample ages: new for a week
    assert all(reason.startswith(newest) for _, reason in boxes["recommendation"])  # no history yet

    clicked = boxes["related"][0][0]
    page.locator("#related li a").first.click()
    page.wait_for_url(f"**/?id={clicked}")
    from recsys.feedback.report import online_report
    from recsys.signals.store import open_event_store

    store = open_event_store(Path(tmp_path) / "index")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the list is written by the log's thread within a second
        rows = {r.box: r for r in online_report(store, time.time() - 600, time.time() + 60).rows}
        if "related" in rows and rows["related"].clicks:
            break
        time.sleep(0.1)
    assert rows["related"].clicks == 1 and rows["related"].mean_click_position == 1.0  # the headline's box, place
    page.wait_for_function(f"JSON.parse(localStorage.getItem('recsys-history') || '[]').includes('{clicked}')")
    after_click = lists(page)
    assert after_click["recommendation"] != boxes["recommendation"]
    assert any('because you read "ECB holds interest rates' in reason for _, reason in after_click["recommendation"])

    page.locator('.reaction[data-name="veryGood"]').click()
    page.wait_for_selector('.reaction.done[data-name="veryGood"]')
    assert page.locator('.reaction[data-name="veryGood"]').inner_text() == "veryGood! (1)"

    open_article(page, server, "s-derby-report")
    page.wait_for_function("document.querySelectorAll('#ranking li').length > 0")
    ranking = lists(page)["ranking"]
    assert ranking[0] == (clicked, "1 view and 1 reaction in the last 24 h")
    assert (first, "1 view in the last 24 h") in ranking
    page.screenshot(path=str(Path(tmp_path) / "journey.png"))


def test_dashboard_plots_ctr_per_box_and_variant(server, page):
    import httpx

    for n in range(6):
        hits = httpx.get(f"{server}/related/s-ecb-rates-hold?k=3&user_id=r{n}").json()
        httpx.get(f"{server}/ranking?k=3&user_id=r{n}")
        if n % 2:
            click = {"type": "click", "article_id": hits[0]["id"], "list_id": hits[0]["list_id"], "position": 1}
            httpx.post(f"{server}/events", json={"events": [click]})
    page.goto(f"{server}/dashboard")
    page.wait_for_function("document.body.dataset.loaded !== undefined")
    names = page.locator("#by-box svg polyline.series").evaluate_all("ps => ps.map(p => p.dataset.name)")
    assert set(names) == {"related", "ranking"}
    assert page.locator("#by-box svg polygon.interval").count() == 2  # each line with its 95% band
    assert page.locator("#by-variant svg polyline.series").count() == 1  # no experiment: one series
    totals = page.locator("#totals").inner_text()
    assert "related" in totals and "0.5000" in totals  # 3 of 6 Related lists clicked
    assert page.locator("#error").is_hidden()
