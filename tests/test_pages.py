"""The pages, in a real browser: Debian's chromium, headless, driven by selenium through
Debian's chromedriver, against a real service (Redis, workers as the test user, the API
with a key). The browser resolves no name but 127.0.0.1's (`--host-resolver-rules`), so
a page that needed a CDN would stay blank, as it would on an air-gapped host; and each
page's resource list is checked to hold nothing from another origin.

Screenshots go to $CELLBLOCK_ARTIFACTS (default .ci/artifacts/ in the checkout).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.ui import WebDriverWait
from service_support import REPO, live_service

from worker.store import Timing

KEY = "playground-test-key"
TIMING = Timing(lease=4, renew=1, reap=1, limbo=4)
ARTIFACTS = Path(os.environ.get("CELLBLOCK_ARTIFACTS") or REPO / ".ci" / "artifacts")
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def service(test_user):
    with live_service("cb-pages-", test_user.pw_name, TIMING, api_keys=frozenset({KEY})) as api:
        yield api


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # chromium's own sandbox needs a setuid helper or userns as root
        "--disable-dev-shm-usage",
        "--window-size=1280,1400",
        # Nothing but this machine: every other name fails to resolve.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(driver, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def foreign_resources(driver, origin: str) -> list[str]:
    """What the page loaded from anywhere but the service (blob: links are its own)."""
    urls = driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name).concat([location.href])"
    )
    return [u for u in urls if not u.startswith((origin + "/", "blob:", "data:"))]


def wait(driver, condition, timeout: float = 60):
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: condition(d))


def open_playground(driver, service) -> None:
    driver.get(service.url + "/")  # redirects to /ui
    assert driver.current_url == service.url + "/ui"
    key = driver.find_element(By.ID, "key")
    key.clear()
    key.send_keys(KEY)
    driver.execute_script("arguments[0].dispatchEvent(new Event('change'))", key)
    wait(driver, lambda d: len(Select(d.find_element(By.ID, "language")).options) > 3)


def judge(driver, example: str, **limits: str) -> str:
    Select(driver.find_element(By.ID, "example")).select_by_value(example)
    for name, value in limits.items():
        field = driver.find_element(By.ID, name)
        field.clear()
        field.send_keys(value)
    driver.find_element(By.ID, "submit").click()
    wait(driver, lambda d: d.find_element(By.ID, "verdict").text)
    return driver.find_element(By.ID, "verdict").text


def rows(driver) -> list[dict[str, str]]:
    found = []
    for row in driver.find_elements(By.CSS_SELECTOR, "#results tbody tr"):
        cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
        found.append(
            {"verdict": row.get_attribute("data-verdict"), "memory": cells[5], "oom": cells[7]}
        )
    return found


def test_the_playground_judges_accepted_and_time_limit_programs(browser, service) -> None:
    def python_named_with_its_version(driver) -> bool:
        # Workers publish versions shortly after they start: ask the page to reload them.
        key = driver.find_element(By.ID, "key")
        driver.execute_script("arguments[0].dispatchEvent(new Event('change'))", key)
        name = driver.execute_script(
            "const o = document.querySelector('#language option[value=python3]');"
            "return o ? o.textContent : ''"
        )
        return bool(re.fullmatch(r"Python 3 \(3\.\d+\.\d+\)", name))

    open_playground(browser, service)
    wait(browser, python_named_with_its_version, 30)

    assert judge(browser, "ac") == "AC"
    assert [r["verdict"] for r in rows(browser)] == ["AC", "AC"]
    assert all(r["memory"].endswith("MiB") and r["oom"] == "no" for r in rows(browser))
    link = browser.find_element(By.ID, "json").get_attribute("href")
    assert link.startswith("blob:")
    screenshot(browser, "playground-ac")

    assert judge(browser, "tle", time="0.5", wall_time="3") == "TLE"
    assert [r["verdict"] for r in rows(browser)][:1] == ["TLE"]
    screenshot(browser, "playground-tle")
    assert foreign_resources(browser, service.url) == []


def test_the_playground_shows_a_wrong_answer_as_a_diff(browser, service) -> None:
    open_playground(browser, service)
    assert judge(browser, "wa") == "WA"
    first = browser.find_element(By.CSS_SELECTOR, "#results tbody tr")
    first.find_element(By.TAG_NAME, "summary").click()
    assert "first difference on line 1" in first.text
    assert first.find_elements(By.CSS_SELECTOR, ".differs")


PAYLOAD = '<img src=nowhere onerror="window.pwned=1"><script>window.pwned=1</script>'


def test_a_programs_output_is_shown_as_text_never_run(browser, service) -> None:
    """A program prints HTML that would run script if a page inserted it as HTML."""
    open_playground(browser, service)
    browser.find_element(By.ID, "source").clear()
    browser.find_element(By.ID, "source").send_keys(f"print({PAYLOAD!r})\n")
    browser.find_element(By.ID, "submit").click()
    wait(browser, lambda d: d.find_element(By.ID, "verdict").text)
    assert browser.find_element(By.ID, "verdict").text == "WA"
    row = browser.find_element(By.CSS_SELECTOR, "#results tbody tr")
    row.find_element(By.TAG_NAME, "summary").click()
    assert "<img src=nowhere" in row.text
    time.sleep(0.5)
    assert browser.execute_script("return window.pwned") is None


def test_control_the_same_output_inserted_as_html_runs(browser) -> None:
    browser.get("data:text/html,<div id=d></div>")
    browser.execute_script("document.getElementById('d').innerHTML = arguments[0]", PAYLOAD)
    wait(browser, lambda d: d.execute_script("return window.pwned") == 1, 5)


def test_the_playground_reports_an_out_of_memory_kill(browser, service) -> None:
    open_playground(browser, service)
    assert judge(browser, "mle") == "MLE"
    assert rows(browser)[0]["oom"] == "yes"


def test_the_image_choice_lists_the_operators_images(browser, service, monkeypatch) -> None:
    """The image field offers exactly the images a submission may name (GET
    /v1/images); with none allowed it offers only the language's own."""
    monkeypatch.delenv("CELLBLOCK_ALLOWED_IMAGES", raising=False)
    open_playground(browser, service)
    image = Select(browser.find_element(By.ID, "image"))
    assert [o.get_attribute("value") for o in image.options] == [""]
    assert not browser.find_element(By.ID, "image").is_enabled()
    monkeypatch.setenv("CELLBLOCK_ALLOWED_IMAGES", "judge:1, <b>x</b>:2,python:3.12")
    open_playground(browser, service)
    wait(browser, lambda d: len(Select(d.find_element(By.ID, "image")).options) == 4)
    image = Select(browser.find_element(By.ID, "image"))
    assert [o.get_attribute("value") for o in image.options] == [
        "",
        "<b>x</b>:2",
        "judge:1",
        "python:3.12",
    ]
    assert image.options[1].text == "<b>x</b>:2"  # a name is text, never markup
    assert browser.find_element(By.ID, "image").is_enabled()


def test_the_playground_shows_the_apis_refusal(browser, service) -> None:
    """A request the API refuses shows its reason, naming the field; no key, no languages."""
    open_playground(browser, service)
    limit = browser.find_element(By.ID, "time")
    limit.clear()
    limit.send_keys("-1")
    browser.execute_script("document.getElementById('form').noValidate = true")
    browser.find_element(By.ID, "submit").click()
    error = browser.find_element(By.ID, "error")
    wait(browser, lambda d: error.is_displayed())
    assert "limits.time" in error.text

    key = browser.find_element(By.ID, "key")
    key.clear()
    browser.execute_script("arguments[0].dispatchEvent(new Event('change'))", key)
    wait(browser, lambda d: "API key" in d.find_element(By.ID, "error").text)


def test_docs_render_their_operations_offline(browser, service) -> None:
    browser.get(service.url + "/docs")
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) >= 10)
    paths = {e.text for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
    assert {"/v1/submissions", "/v1/languages"} <= {p.replace("\u200b", "") for p in paths}
    screenshot(browser, "docs")
    assert foreign_resources(browser, service.url) == []

    browser.get(service.url + "/redoc")
    wait(browser, lambda d: "/v1/submissions" in d.find_element(By.TAG_NAME, "body").text)
    assert foreign_resources(browser, service.url) == []


def test_control_fastapis_default_docs_stay_blank_here(browser) -> None:
    """The control: FastAPI's own /docs (scripts from a CDN) shows no operation in this
    browser, so the offline checks above can fail."""
    from fastapi import FastAPI
    from service_support import ApiServer

    app = FastAPI()

    @app.get("/ping")
    def ping() -> str:
        return "pong"

    server = ApiServer(app).start()
    try:
        browser.get(server.url + "/docs")
        time.sleep(2)
        assert not browser.find_elements(By.CSS_SELECTOR, ".opblock")
        assert any("cdn" in u for u in foreign_resources(browser, server.url))
    finally:
        server.stop()


def test_the_pages_name_nothing_outside_the_machine(service) -> None:
    """The HTML itself (not only what a browser fetched): no absolute URL to elsewhere."""
    for page in ("/ui", "/docs", "/redoc"):
        html = httpx.get(service.url + page).text
        assert not re.findall(r"""(?:src|href)=["']?(?:https?:)?//""", html), page
    assert httpx.get(service.url + "/assets/ui/playground.js").status_code == 200
    assert httpx.get(service.url + "/assets/docs/swagger-ui-bundle.js").status_code == 200
