"""The report as a browser shows it: headless Chromium loads every figure, finds each table's rows, and sorts by a click.

Chromium and its driver are the Debian packages `chromium` and
`chromium-driver`; the session fixture installs them with apt-get when they
are missing and the tests run as root, and skips otherwise (saying why).
Selenium is given the driver's path, so it never tries to download one.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from babelprune.report.html import write_report
from tests import report_store as made

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run")


def _install_chromium() -> None:
    """apt-get install chromium chromium-driver, or skip with the reason it cannot be done."""
    if CHROMIUM.exists() and CHROMEDRIVER.exists():
        return
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip(f"{CHROMIUM} or {CHROMEDRIVER} is missing and only root with apt-get can install them "
                    "(apt-get install chromium chromium-driver)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium", "chromium-driver"]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1200)
        if done.returncode != 0:
            pytest.skip(f"`{' '.join(command)}` failed: {done.stderr.strip().splitlines()[-1:]}")


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    _install_chromium()
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # selenium manager, should it start, stays off the network
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@dataclass
class Loaded:
    driver: object  # the selenium driver, on the report
    console: list[dict]  # what the browser's console logged while the page loaded


@pytest.fixture(scope="module")
def loaded(tmp_path_factory, browser) -> Loaded:
    folder = tmp_path_factory.mktemp("browser-report")
    index = write_report(made.write_store(folder / "runs.sqlite", made.full_records()), folder / "report")
    browser.get_log("browser")  # start from an empty console
    browser.get(index.resolve().as_uri())
    browser.execute_script("return Promise.all(Array.from(document.images).map(i => i.decode().catch(() => null)))")
    return Loaded(browser, browser.get_log("browser"))


@pytest.fixture
def page(loaded):
    return loaded.driver


def test_the_console_shows_no_error(loaded):
    # A blocked request (the page's policy allows no network), a missing file or a script error would show here.
    errors = [entry["message"] for entry in loaded.console if entry["level"] == "SEVERE"]
    assert not errors, errors


def test_every_figure_loaded(page):
    images = page.execute_script(
        "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])")
    assert len(images) == 11  # dense, two change charts, curves, languages by sparsity, resource levels, overlap, speed, three fine-tuning
    not_loaded = [src for src, complete, width in images if not complete or width <= 0]
    assert not not_loaded, not_loaded


def test_each_table_has_the_expected_rows(page):
    rows = page.execute_script(
        "return Object.fromEntries(Array.from(document.querySelectorAll('table[data-name]'))"
        ".map(t => [t.dataset.name, t.tBodies[0].rows.length]))")
    assert rows == made.expected_rows()


def _column(page, table: str, header: str) -> list[str]:
    return page.execute_script(
        "const t = document.querySelector(`table[data-name=\"${arguments[0]}\"]`);"
        "const i = Array.from(t.tHead.rows[0].cells).findIndex(c => c.textContent === arguments[1]);"
        "return Array.from(t.tBodies[0].rows).map(r => r.cells[i].textContent);", table, header)


def _click(page, table: str, header: str) -> None:
    cells = page.find_elements("css selector", f'table[data-name="{table}"] thead th')
    next(cell for cell in cells if cell.text.strip() == header).click()


def _mean_change(factors: dict[str, float]) -> float:
    en = sum(d * f for d, f in zip(made.DENSE_NLL["en"], made.EN_ALTERNATING)) / sum(made.DENSE_NLL["en"]) - 1
    return statistics.fmean([en, *(factor - 1 for factor in factors.values())])


def test_a_click_on_a_header_sorts_the_rows_by_that_column(page):
    means = {f"{method} {sparsity:.0%}": _mean_change(factors) for (method, sparsity), factors in made.FACTORS.items()}
    means["wanda per-language 50%"] = _mean_change(made.PER_LANGUAGE_FACTORS)
    least_first = sorted(means, key=means.get)
    _click(page, "summary bible", "mean change")
    assert _column(page, "summary bible", "run") == least_first
    _click(page, "summary bible", "mean change")
    assert _column(page, "summary bible", "run") == least_first[::-1]
    # Text columns sort as text: the labels in alphabetical order.
    _click(page, "summary bible", "run")
    assert _column(page, "summary bible", "run") == sorted(means)


def test_numbers_sort_as_numbers_not_as_text(page):
    # 2.5, 3.5, ..., 10.5 seconds: as text "10.50" would come before "2.50".
    _click(page, "measurements", "prune seconds")
    values = [value for value in _column(page, "measurements", "prune seconds") if value != "-"]
    assert [float(v) for v in values] == sorted(float(v) for v in values)
    assert values[-1] == "10.50" and _column(page, "measurements", "prune seconds")[-1] == "-"  # no value: last
