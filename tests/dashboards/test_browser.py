"""End-to-end: the dashboard and a report in real headless Chromium (selenium).

The app runs in a thread (werkzeug ``make_server`` on a free localhost port) over a small
store built in a temp folder. Screenshots go to the test's temp folder and are copied to
``/tmp/recurra_screens/`` for a human to look at.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from tests.dashboards.conftest import FakeRegistry, build_store

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SCREENS = Path("/tmp/recurra_screens")
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", "--window-size=1400,1300", "--hide-scrollbars",
         # offline: every host but localhost fails to resolve, so a CDN asset would break
         "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1")
WAIT_S = 30
MAX_POINTS = 100

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
                       reason=f"headless Chromium tests need {CHROMIUM} and {CHROMEDRIVER} "
                              "(Debian: apt-get install chromium chromium-driver)"),
]
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def server_url(tmp_path_factory):
    from werkzeug.serving import make_server

    from recurra.dashboards.app import create_app

    store = build_store(tmp_path_factory.mktemp("dash") / "store")
    # max_points=100: the 200-point series count as "long", so zooming and jumping to an
    # event must re-downsample the visible window (what a million-point series needs)
    app = create_app(store=store, registry=FakeRegistry(), max_points=MAX_POINTS)
    server = make_server("127.0.0.1", 0, app.server, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/", store
    server.shutdown()
    thread.join(timeout=5)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT_S)
    yield driver
    driver.quit()


def _screenshot(driver, folder: Path, name: str) -> Path:
    path = folder / f"{name}.png"
    driver.save_screenshot(str(path))
    SCREENS.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, SCREENS / path.name)
    return path


def _trace_names(driver) -> list[str]:
    return driver.execute_script(
        "const g = document.querySelector('#series-graph .js-plotly-plot');"
        "return g && g.data ? g.data.map(t => t.name) : [];")


def _x_range(driver) -> list[str] | None:
    return driver.execute_script(
        "const g = document.querySelector('#series-graph .js-plotly-plot');"
        "return g && g._fullLayout ? g._fullLayout.xaxis.range.map(String) : null;")


def _points_between(driver, low: str, high: str) -> int:
    """Number of drawn points of the first value trace within [low, high] (ISO text)."""
    return driver.execute_script(
        "const g = document.querySelector('#series-graph .js-plotly-plot');"
        "const t = g.data.find(t => t.meta && t.meta.role === 'values');"
        "const lo = Date.parse(arguments[0] + 'Z'), hi = Date.parse(arguments[1] + 'Z');"
        "return t.x.filter(x => { const v = Date.parse(String(x).replace(' ', 'T') + "
        "(String(x).endsWith('Z') ? '' : 'Z')); return v >= lo && v <= hi; }).length;",
        low, high)


def _click_event_row(driver, series_id: str, start: str) -> None:
    rows = driver.find_elements(By.CSS_SELECTOR, "#events-table tbody tr")
    for row in rows:
        cells = row.find_elements(By.CSS_SELECTOR, "td")
        texts = [c.text for c in cells]
        if series_id in texts and start in texts:
            cells[texts.index(start)].click()
            return
    raise AssertionError(f"no events-table row for {series_id} at {start}")


def test_explorer_renders_forecast_and_events_and_jumps_to_a_clicked_event(
        server_url, browser, tmp_path):
    url, _ = server_url
    browser.get(url)
    wait = WebDriverWait(browser, WAIT_S)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#series-graph .js-plotly-plot"))
    # the first series (m0, three channels) shows first; pick s0 through the dropdown search
    wait.until(lambda d: "forecast" in _trace_names(d))
    dropdown = browser.find_element(By.CSS_SELECTOR, "#series-select")
    dropdown.click()
    search = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "input.dash-dropdown-search"))
    search.send_keys("s0")   # the search box filters the options by id
    option = "//*[@role='option' and normalize-space(.)='s0']"
    wait.until(lambda d: [e.text for e in d.find_elements(By.XPATH, "//*[@role='option']")]
               == ["s0"])
    browser.find_element(By.XPATH, option).click()
    wait.until(lambda d: {"value", "forecast", "anomaly: high", "anomaly: low",
                          "gap (not observed)"} <= set(_trace_names(d)))
    legend = " ".join(e.text for e in browser.find_elements(By.CSS_SELECTOR, ".legendtext"))
    assert "forecast interval q10-q90" in legend and "anomaly: high" in legend
    before = _x_range(browser)
    n_drawn = browser.execute_script(
        "return document.querySelector('#series-graph .js-plotly-plot').data"
        ".find(t => t.meta && t.meta.role === 'values').x.length;")
    assert n_drawn <= MAX_POINTS                                  # 200 rows, downsampled
    _screenshot(browser, tmp_path, "01_explorer_s0")

    # zooming (as a drag or the range slider would) redraws the window in full detail:
    # 2024-01-03 00:00..2024-01-04 23:00 holds 48 hourly rows (gaps included, as NaN)
    browser.execute_script(
        "Plotly.relayout(document.querySelector('#series-graph .js-plotly-plot'),"
        "{'xaxis.range': ['2024-01-03 00:00', '2024-01-04 23:00']});")
    wait.until(lambda d: _points_between(d, "2024-01-03T00:00", "2024-01-04T23:00") == 48)
    browser.execute_script(
        "Plotly.relayout(document.querySelector('#series-graph .js-plotly-plot'),"
        "{'xaxis.autorange': true});")
    wait.until(lambda d: _points_between(d, "2024-01-03T00:00", "2024-01-04T23:00") < 48)
    before = _x_range(browser)

    _click_event_row(browser, "s0", "2024-01-02 06:00")   # s0 event 30h..34h
    wait.until(lambda d: _x_range(d) != before)
    low, high = _x_range(browser)                           # padded by 12 hourly steps
    assert low.startswith("2024-01-01 18:00") and high.startswith("2024-01-02 22:00")
    _screenshot(browser, tmp_path, "02_explorer_event_focus")

    _click_event_row(browser, "m0", "2024-01-05 04:00")   # other series: switches series
    wait.until(lambda d: "c1" in _trace_names(d))
    wait.until(lambda d: (_x_range(d) or [""])[0].startswith("2024-01-04 16:00"))
    assert {"c0", "c1", "c2", "anomaly: high"} <= set(_trace_names(browser))
    _screenshot(browser, tmp_path, "03_explorer_multichannel_event")
    failed = [e["message"] for e in browser.get_log("browser")
              if e["level"] == "SEVERE" and ("net::" in e["message"] or "http" in e["message"])]
    assert failed == [], f"requests failed (offline?): {failed}"


def test_models_runs_and_quality_tabs(server_url, browser, tmp_path):
    url, _ = server_url
    browser.get(url)
    wait = WebDriverWait(browser, WAIT_S)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#series-graph .js-plotly-plot"))

    # filtering by source narrows the series list and switches to a series of that source
    wait.until(lambda d: "m0" in d.find_element(By.ID, "series-select").text)
    browser.find_element(By.ID, "source-filter").click()
    wait.until(lambda d: d.find_elements(By.XPATH, "//*[@role='option' and .='sensors.csv']"))
    browser.find_element(By.XPATH, "//*[@role='option' and .='sensors.csv']").click()
    wait.until(lambda d: d.find_element(By.ID, "series-select").text.strip() == "s0")
    wait.until(lambda d: "value" in _trace_names(d))
    browser.find_element(By.TAG_NAME, "h1").click()                 # close the dropdown

    # the events table filters natively: severity >= 4 keeps the two "high" events
    box = browser.find_element(
        By.CSS_SELECTOR, "#events-table th.dash-filter[data-dash-column='severity'] input")
    box.send_keys(">= 4" + Keys.ENTER)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#events-table tbody tr td"
                                                               "[data-dash-column='level']"))
               == 2)
    levels = {e.text for e in browser.find_elements(
        By.CSS_SELECTOR, "#events-table tbody td[data-dash-column='level']")}
    assert levels == {"high"}

    browser.find_element(By.XPATH, "//*[contains(@class,'tab') and .='Models']").click()
    wait.until(lambda d: "champion" in d.find_element(By.ID, "models-table").text)
    link = browser.find_element(By.CSS_SELECTOR, "#models-table a")
    assert link.get_attribute("href").endswith("/#/experiments/7/runs/abcdef1234567890")
    _screenshot(browser, tmp_path, "04_models")

    browser.find_element(By.XPATH, "//*[contains(@class,'tab') and .='Pipeline runs']").click()
    wait.until(lambda d: "FAILED" in d.find_element(By.ID, "runs-table").text)
    _screenshot(browser, tmp_path, "05_runs")

    browser.find_element(By.XPATH, "//*[contains(@class,'tab') and .='Data quality']").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#share-graph .js-plotly-plot")
               and d.find_elements(By.CSS_SELECTOR, "#quarantine-graph .bars"))
    assert "unparseable timestamp" in browser.find_element(By.ID, "quarantine-graph").text
    _screenshot(browser, tmp_path, "06_quality")


def test_report_opens_from_file_without_a_server(server_url, browser, tmp_path):
    from recurra.dashboards.report import write_report

    _, store = server_url
    path = write_report(store, tmp_path / "report.html", run_id="r1", title="Run r1")
    browser.get(path.as_uri())
    wait = WebDriverWait(browser, WAIT_S)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot")) >= 3)
    names = browser.execute_script(
        "return [...document.querySelectorAll('.js-plotly-plot')]"
        ".flatMap(g => g.data.map(t => t.name));")
    assert "forecast" in names and "anomaly: high" in names
    _screenshot(browser, tmp_path, "07_report")
    failed = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert failed == [], f"the report needed something it does not embed: {failed}"
