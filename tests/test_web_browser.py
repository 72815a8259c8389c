"""End to end in headless Chromium: the page, the WebSocket, the fake model, and XSS.

Uses Debian's chromium and chromium-driver (installed by .ci/system-packages) through
Selenium with an explicit driver path, so Selenium Manager never downloads anything.
Selenium is synchronous: its calls run in a thread while the server runs on the loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from adapters.web import create
from tests.conftest import EngineFactory
from tests.fakes.openai_server import FakeOpenAI, Text
from tests.test_web_helpers import serve

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
)  # fmt: skip
XSS = "<img src=x onerror=alert(1)><script>alert(2)</script>"
WAIT_SECONDS = 15

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="headless Chromium is not installed at /usr/bin/chromium (.ci/system-packages "
    "installs it: apt-get install chromium chromium-driver)",
)

T = TypeVar("T")


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    # Leave alerts open instead of auto-dismissing them, so the test can see one.
    options.unhandled_prompt_behavior = "ignore"
    browser = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        yield browser
    finally:
        browser.quit()


@pytest.fixture
async def chat_url(
    make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[str]:
    monkeypatch.delenv("PARLEY_WEB_TOKEN", raising=False)
    engine = make_engine()
    async with serve(engine, create(engine, engine.settings)) as url:
        yield url


def wait(browser: WebDriver, condition: Callable[[WebDriver], T]) -> T:
    result: T = WebDriverWait(browser, WAIT_SECONDS).until(condition)
    return result


def assistant_texts(browser: WebDriver) -> list[str]:
    bubbles = browser.find_elements(By.CSS_SELECTOR, "#log .bubble.assistant:not(.streaming)")
    return [bubble.text for bubble in bubbles]


def open_chat(browser: WebDriver, url: str) -> None:
    browser.get(url + "/")
    wait(
        browser, lambda b: b.find_element(By.ID, "state").get_attribute("data-state") == "connected"
    )


def say(browser: WebDriver, text: str) -> None:
    box = browser.find_element(By.ID, "input")
    wait(browser, lambda b: box.is_enabled() and b.find_element(By.ID, "send").is_enabled())
    box.send_keys(text)
    browser.find_element(By.ID, "send").click()


def no_alert(browser: WebDriver) -> bool:
    try:
        browser.switch_to.alert.dismiss()
    except NoAlertPresentException:
        return True
    return False


def converse(browser: WebDriver, url: str) -> None:
    open_chat(browser, url)
    say(browser, "Say hello")
    wait(browser, lambda b: assistant_texts(b) == ["Hello from the fake model, streamed to you."])
    say(browser, "Now try to break the page")
    wait(browser, lambda b: len(assistant_texts(b)) == 2)
    check_inert(browser)
    # A reload redraws the conversation from the server's transcript, just as inert.
    open_chat(browser, url)
    wait(browser, lambda b: len(assistant_texts(b)) == 2)
    check_inert(browser)
    user_bubbles = browser.find_elements(By.CSS_SELECTOR, "#log .bubble.user")
    assert [bubble.text for bubble in user_bubbles] == ["Say hello", "Now try to break the page"]


def check_inert(browser: WebDriver) -> None:
    assert assistant_texts(browser)[1] == XSS  # shown literally, as text
    assert browser.find_elements(By.CSS_SELECTOR, "#log img, #log script") == []
    assert no_alert(browser), "script from the model ran"


async def test_chat_in_a_real_browser(
    driver: WebDriver, chat_url: str, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(Text("Hello from the fake model, streamed to you.", chunks=5), Text(XSS))
    await asyncio.to_thread(converse, driver, chat_url)
    assert fake_openai.pending == 0


MARKDOWN = """Here is *the plan*:

> Measure twice, cut once.

| step | owner |
|------|-------|
| cut  | ann   |

<script>alert(3)</script> and [a link](javascript:alert(4))
"""


def read_markdown(browser: WebDriver, url: str) -> None:
    open_chat(browser, url)
    say(browser, "Show me Markdown")
    wait(browser, lambda b: len(assistant_texts(b)) == 1)
    log = browser.find_element(By.ID, "log")
    assert log.find_element(By.CSS_SELECTOR, ".bubble em").text == "the plan"
    assert "Measure twice" in log.find_element(By.CSS_SELECTOR, ".bubble blockquote").text
    cells = log.find_elements(By.CSS_SELECTOR, ".bubble table td")
    assert [cell.text for cell in cells] == ["cut", "ann"]
    assert "<script>alert(3)</script>" in assistant_texts(browser)[0]  # shown as text
    assert log.find_elements(By.CSS_SELECTOR, "script") == []
    for anchor in log.find_elements(By.CSS_SELECTOR, "a"):
        assert not (anchor.get_attribute("href") or "").startswith("javascript:")
    assert no_alert(browser), "script from the model ran"


async def test_markdown_tables_italics_and_quotes_render_and_script_stays_inert(
    driver: WebDriver, chat_url: str, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(Text(MARKDOWN, chunks=7))
    await asyncio.to_thread(read_markdown, driver, chat_url)


def dashboard_fits(browser: WebDriver, url: str) -> None:
    browser.set_window_size(360, 740)
    browser.get(url + "/admin?token=dashboard-token")
    wait(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "svg.chart"))
    overflow = browser.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    widest = browser.execute_script(
        "let w = null; for (const e of document.querySelectorAll('body *')) {"
        " const r = e.getBoundingClientRect();"
        " if (r.right > innerWidth && (!w || r.right > w[1])) w = [e.tagName + '.' + e.className"
        " + ' ' + e.outerHTML.slice(0, 80), r.right]; } return w;"
    )
    assert overflow <= 0, f"the dashboard is {overflow} px wider than a phone: {widest}"


async def test_the_dashboard_fits_a_phone(
    driver: WebDriver, chat_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PARLEY_ADMIN_TOKEN", "dashboard-token")
    await asyncio.to_thread(dashboard_fits, driver, chat_url)
