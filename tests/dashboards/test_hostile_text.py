"""Text from data (series ids, channels, quarantine reasons) shows literally in the HTML
report and the dashboard: no element injected, no markup or template interpreted
(issue 19 item 3, dashboard side). The browser test skips without headless Chromium."""

from __future__ import annotations

import threading
from html.parser import HTMLParser
from pathlib import Path

import polars as pl
import pytest

from recurra.dashboards.figures import plot_text, series_figure
from recurra.dashboards.report import write_report
from recurra.data.store import Store
from tests.conftest import make_frame
from tests.dashboards.conftest import FakeRegistry

SERIES = "<img src=x onerror=window.__xss=1>"
CHANNEL = "[/bold] 5%{y} <b>bold</b>"
REASON = "text in numeric column 'value': '<img src=y onerror=window.__xss=2>'"
RED = "\x1b[31mred"


def _hostile_store(root: Path) -> Store:
    store = Store(root)
    frame = make_frame(n_series=1, n_steps=48, seed=5)
    store.upsert(frame.with_columns(pl.lit(SERIES).alias("series_id"),
                                    pl.lit(CHANNEL).alias("channel")), source="evil.csv")
    store.upsert(frame.with_columns(pl.lit(SERIES).alias("series_id"),
                                    pl.lit(RED).alias("channel")), source="evil.csv")
    store.add_quarantine(pl.DataFrame({"source_file": ["evil.csv"], "line": [7],
                                       "reason": [REASON], "raw": ["<script>x</script>"]}))
    return store


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        self.text.append(data)


def test_plot_text_escapes_tags_and_template_fields():
    assert plot_text("<b>x</b> %{y}") == "&lt;b&gt;x&lt;/b&gt; &#37;{y}"
    figure = series_figure(make_frame(n_series=1, n_steps=10).with_columns(
        pl.lit(CHANNEL).alias("channel")), title=f"Series {SERIES}")
    values = next(t for t in figure.data if t.meta and t.meta["role"] == "values")
    assert "<b>" not in values.name and "%{y}" not in values.hovertemplate.split(":")[0]
    assert "<img" not in figure.layout.title.text


def test_report_escapes_ids_channels_and_reasons(tmp_path):
    store = _hostile_store(tmp_path / "store")
    path = write_report(store, tmp_path / "report.html", series_ids=[SERIES])
    page = Path(path).read_text()
    parser = _Tags()
    parser.feed(page)
    assert "img" not in parser.tags and "b" not in parser.tags
    assert parser.tags.count("script") == page.count("<script")  # none injected
    assert "</script><img" not in page and "<img src=" not in page
    assert any(SERIES in text for text in parser.text)  # the heading shows it literally


CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


@pytest.mark.browser
@pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                    reason="needs headless Chromium and chromedriver")
def test_dashboard_shows_hostile_text_literally(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    from werkzeug.serving import make_server

    from recurra.dashboards.app import create_app
    from tests.dashboards.test_browser import FLAGS

    app = create_app(store=_hostile_store(tmp_path / "store"), registry=FakeRegistry())
    server = make_server("127.0.0.1", 0, app.server, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'profile'}")
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.get(f"http://127.0.0.1:{server.server_port}/")
        wait = WebDriverWait(driver, 30)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#series-graph .legendtext"))
        body = driver.find_element(By.TAG_NAME, "body").text
        assert SERIES in body and f"Series {SERIES}" in body  # dropdown and chart title
        legend = " ".join(e.get_attribute("textContent") for e in
                          driver.find_elements(By.CSS_SELECTOR, "#series-graph .legendtext"))
        assert CHANNEL in legend and RED in legend  # no bold, no template substitution
        assert not driver.find_elements(By.CSS_SELECTOR, "#series-graph text b")
        driver.find_element(By.XPATH, "//*[normalize-space(text())='Data quality']").click()
        wait.until(lambda d: "text in numeric column" in d.find_element(By.TAG_NAME, "body").text)
        assert driver.execute_script("return window.__xss === undefined")
        assert driver.execute_script("return document.querySelectorAll('img').length") == 0
    finally:
        driver.quit()
        server.shutdown()
        thread.join(timeout=5)
