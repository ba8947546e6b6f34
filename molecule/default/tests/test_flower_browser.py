"""Flower in a real browser: headless Chromium (Debian's chromium and chromium-driver on the
controller, driven by Selenium) opens the Flower of the converged scenario, as an operator
would from an admin network (the controller is one of flower_allowed_sources here).

Chromium does not trust the cluster's CA (it is in no system store), so it is told to accept
exactly one key for its TLS errors: the Flower host's (an SPKI pin), and it reaches the host
by its name, which the certificate carries. Screenshots go to docs/screenshots/, which the
README shows.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from celerylab import (
    FLOWER_URL,
    FLOWERS,
    PKI,
    PROJECT,
    WORKERS,
    address_of,
    expected_nodes,
    flower_async_apply_download,
    flower_credentials,
)
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

SCREENSHOTS = PROJECT / "docs" / "screenshots"
WAIT = 60  # seconds a page may take to show what the test looks for


def spki_pin(certificate: Path) -> str:
    """base64(sha256(SubjectPublicKeyInfo)) of a certificate's key: Chromium's pin format."""
    cert = x509.load_pem_x509_certificate(certificate.read_bytes())
    der = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    flower = FLOWERS[0]
    address = address_of(flower)
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in (
        "--headless=new",
        "--no-sandbox",  # the tests run as root
        "--disable-dev-shm-usage",
        "--window-size=1600,900",
        f"--host-resolver-rules=MAP {flower} {address}",
        f"--ignore-certificate-errors-spki-list={spki_pin(PKI / f'{flower}.crt')}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


def document_responses(driver: webdriver.Chrome) -> list[dict[str, Any]]:
    """The responses to page loads since the last call (from Chromium's performance log)."""
    found = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.responseReceived" and message["params"]["type"] == "Document":
            found.append(message["params"]["response"])
    return found


def wait_for(
    driver: webdriver.Chrome,
    what: str,
    seen: Callable[[str], bool],
    seconds: float = WAIT,
    reload_every: float | None = None,
) -> str:
    """The page's visible text once SEEN(text) holds; fails after SECONDS. With RELOAD_EVERY,
    the page is loaded again that often (for pages that do not refresh by themselves)."""
    deadline = time.monotonic() + seconds
    loaded = time.monotonic()
    text = ""
    while time.monotonic() < deadline:
        if reload_every is not None and time.monotonic() - loaded >= reload_every:
            driver.refresh()
            loaded = time.monotonic()
        text = driver.find_element(By.TAG_NAME, "body").text
        if seen(text):
            return text
        time.sleep(1)
    raise AssertionError(f"{what}: not seen in {seconds} s on {driver.current_url}; the page showed:\n{text}")


def worker_rows(driver: webdriver.Chrome) -> dict[str, str]:
    """{worker node: status} as the workers table shows them (a narrow column may wrap a
    name over two lines: the cell's text without its line breaks)."""
    rows = {}
    for row in driver.find_elements(By.CSS_SELECTOR, "#workers-table tbody tr"):
        cells = [cell.text.replace("\n", "") for cell in row.find_elements(By.TAG_NAME, "td")]
        if len(cells) >= 2:
            rows[cells[0]] = cells[1]
    return rows


def test_flower_asks_for_a_login_then_lists_every_worker_node(browser: webdriver.Chrome) -> None:
    url = f"{FLOWER_URL}/workers?refresh=1"
    document_responses(browser)  # start from an empty log
    browser.get(url)
    responses = document_responses(browser)
    assert responses, "no page load recorded"
    first = responses[-1]
    headers = {k.lower(): v for k, v in first["headers"].items()}
    assert first["status"] == 401, first
    assert headers.get("www-authenticate", "").startswith("Basic"), headers
    assert not any(node in browser.page_source for node in expected_nodes())

    # Wrong credentials: asked again.
    user = flower_credentials().split(":", 1)[0]
    wrong = base64.b64encode(f"{user}:wrong-password".encode()).decode()
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {wrong}"}})
    browser.get(url)
    assert [r["status"] for r in document_responses(browser)][-1:] == [401]

    # The operator's credentials: every node of every worker host is listed.
    good = base64.b64encode(flower_credentials().encode()).decode()
    browser.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {good}"}})
    browser.get(url)
    assert [r["status"] for r in document_responses(browser)][-1:] == [200]
    nodes = expected_nodes()
    deadline = time.monotonic() + WAIT
    while (rows := worker_rows(browser)).keys() != nodes and time.monotonic() < deadline:
        time.sleep(1)
    assert rows == dict.fromkeys(nodes, "Online"), f"expected {sorted(nodes)} online; the table: {rows}"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(SCREENSHOTS / "flower-workers.png"))


def test_a_task_submitted_through_the_api_shows_on_the_tasks_page(browser: webdriver.Chrome) -> None:
    """Submitted with the tutorial's curl call (from worker1, an allowed source), the task then
    appears, with its id and its success, on the tasks page of the browser logged in above."""
    task_id = flower_async_apply_download(WORKERS[0], f"browser-{uuid.uuid4().hex[:8]}.bin")

    def listed(text: str) -> bool:
        return task_id in text and "SUCCESS" in text

    # The table is filled by the page's script; the page does not refresh by itself, so it is
    # loaded again every 5 s until the task is there (it runs in about a second).
    browser.get(f"{FLOWER_URL}/tasks")
    wait_for(browser, f"task {task_id} in SUCCESS", listed, reload_every=5)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(SCREENSHOTS / "flower-tasks.png"))
