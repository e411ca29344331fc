"""The operator console in a real browser: Debian's chromium, headless, driven by
Selenium through chromium-driver, against a real `singura-vault serve` process and a
real `singura-vault console` process.

One browser for the module. Screenshots of each page go to test-artifacts/console/
(SINGURA_TEST_ARTIFACTS overrides the directory); docs/console.md shows a few of them.
Waiting is Selenium's polling for what another process does (the rewrap worker in
`serve`, the page's own polling script), never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from singura_vault.console.security import CONTENT_SECURITY_POLICY
from singura_vault.proto.singura.vault.v1 import keys_pb2 as kpb
from tests.support.audit import chain_pending_audit
from tests.support.console_seed import Seeded, seed
from tests.support.oauth_provider import FakeOAuthProvider
from tests.support.postgres import PostgresServer
from tests.support.vault import Vault
from tests.support.vault_process import serve_process

ROOT = Path(__file__).resolve().parents[2]
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT_S = 30


def _artifacts() -> Path:
    base = Path(os.environ.get("SINGURA_TEST_ARTIFACTS", ROOT / "test-artifacts"))
    path = base / "console"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1280,800")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


@dataclass
class Running:
    url: str
    seeded: Seeded
    vault: Vault


@asynccontextmanager
async def console_process(vault_address: str) -> AsyncIterator[str]:
    """`singura-vault console` on a free port; yields its base URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "SINGURA_"))}
    env.update(SINGURA_CONSOLE_LISTEN="127.0.0.1:0", SINGURA_VAULT_ADDRESS=vault_address)
    process = subprocess.Popen(  # noqa: ASYNC220 - Popen only starts it; output is read in a thread
        [sys.executable, "-m", "singura_vault", "console"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    lines: list[str] = []

    def until_serving() -> str:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            if '"console_serving"' in line:
                return str(json.loads(line)["listen"])
        return ""

    listen = await asyncio.to_thread(until_serving)
    assert listen, "".join(lines)
    drain = threading.Thread(target=lines.extend, args=(process.stderr,), daemon=True)
    drain.start()
    try:
        yield f"http://{listen}"
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(process.wait, 30)
        await asyncio.to_thread(drain.join, 10)
        log = "".join(lines)
        assert "Traceback" not in log, log[-3000:]


@pytest.fixture
async def running(
    vault: Vault,
    provider: FakeOAuthProvider,
    owner_dsn: str,
    service_dsn: str,
    auth_secret: bytes,
    root_key: str,
) -> AsyncIterator[Running]:
    seeded = await seed(vault, provider, owner_dsn)
    async with (
        serve_process(vault, service_dsn, auth_secret, root_key) as address,
        console_process(address) as url,
    ):
        yield Running(url, seeded, vault)


# Reads of a page that a navigation replaced mid-read (see _text).
_READ_ATTEMPTS = 5


def _wait(driver: webdriver.Chrome) -> WebDriverWait[webdriver.Chrome]:
    """Selenium's polling (every 0.2 s) for a page another process changes; a page
    replaced while it is read is read again."""
    return WebDriverWait(driver, WAIT_S, 0.2, ignored_exceptions=(StaleElementReferenceException,))


def _shot(driver: webdriver.Chrome, name: str) -> None:
    driver.save_screenshot(str(_artifacts() / f"{name}.png"))


def _text(driver: webdriver.Chrome) -> str:
    """The page's visible text. A body replaced by a navigation while it is read is read
    again: chromedriver reports that as an "unknown error" naming a node that "does not
    belong to the document", not as a stale element, so _wait's ignore list misses it."""
    for _ in range(_READ_ATTEMPTS):
        try:
            return str(driver.find_element(By.TAG_NAME, "body").text)
        except WebDriverException as exc:
            if "does not belong to the document" not in str(exc.msg):
                raise
    return str(driver.find_element(By.TAG_NAME, "body").text)


def _sign_in(driver: webdriver.Chrome, url: str, key: str, org: str = "") -> None:
    driver.get(f"{url}/signin")
    driver.find_element(By.ID, "api_key").send_keys(key)
    if org:
        driver.find_element(By.ID, "organization_id").send_keys(org)
    driver.find_element(By.CSS_SELECTOR, "form.signin button[type=submit]").click()


def _sign_out(driver: webdriver.Chrome) -> None:
    driver.find_element(By.CSS_SELECTOR, "form[action='/signout'] button").click()
    _wait(driver).until(lambda d: "You are signed out" in _text(d))


def _csp_violations(driver: webdriver.Chrome) -> list[str]:
    return [
        str(entry["message"])
        for entry in driver.get_log("browser")
        if "Content Security Policy" in str(entry["message"])
    ]


async def _tamper(postgres: PostgresServer, database: str, organization_id: str) -> None:
    conn = await asyncpg.connect(postgres.dsn("postgres", database))
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            await conn.execute(
                "UPDATE singura.audit_logs SET actor = 'someone-else' WHERE id = "
                "(SELECT min(id) FROM singura.audit_logs WHERE organization_id = $1)",
                uuid.UUID(organization_id),
            )
    finally:
        await conn.close()


async def test_an_admin_walks_through_every_page(
    browser: webdriver.Chrome,
    running: Running,
    postgres: PostgresServer,
    database_name: str,
    owner_dsn: str,
) -> None:
    """Sign in, see the failing connections first, expiring credentials, a chain that
    verifies and then (tampered) does not, a rewrap in progress that the page follows
    by itself, create an API key, the organization's plan usage; keyboard, narrow
    screen, CSRF refusal, the CSP header and no CSP violation; sign out."""
    driver, url, seeded = browser, running.url, running.seeded
    driver.set_window_size(1280, 800)
    async with httpx.AsyncClient(trust_env=False) as http:
        response = await http.get(f"{url}/signin")
    assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "no-referrer"

    driver.get(f"{url}/signin")
    # Keyboard: the first Tab reaches the skip link, and it is visibly focused.
    driver.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
    assert driver.switch_to.active_element.text == "Skip to content"
    _shot(driver, "01-signin")
    _sign_in(driver, url, running.vault.admin_key)
    _wait(driver).until(lambda d: d.current_url.endswith("/connections"))
    rows = driver.find_elements(By.CSS_SELECTOR, "table.data tbody tr")
    assert seeded.error_conn in rows[0].text
    assert seeded.failing_conn in rows[1].text
    assert "503" in rows[1].text
    assert seeded.org_b_name in _text(driver)
    _shot(driver, "02-connections")

    driver.get(f"{url}/expiring?within=7")
    body = _text(driver)
    assert seeded.org_a_name in body
    assert seeded.org_b_name in body
    assert "expired" in body
    _shot(driver, "03-expiring")

    owner = await asyncpg.connect(owner_dsn)
    try:
        await chain_pending_audit(owner)
    finally:
        await owner.close()
    driver.get(f"{url}/audit?org={seeded.org_a}")
    driver.find_element(By.XPATH, "//button[text()='Verify now']").click()
    _wait(driver).until(lambda d: "Verified:" in _text(d))
    _shot(driver, "04-audit-verified")
    await _tamper(postgres, database_name, seeded.org_a)
    driver.find_element(By.XPATH, "//button[text()='Verify now']").click()
    _wait(driver).until(lambda d: "Verification failed" in _text(d))
    _shot(driver, "05-audit-tampered")

    # CSRF: the same form without its token is refused.
    driver.execute_script(
        "document.querySelector(\"form[action='/audit/verify'] input[name=csrf_token]\").remove()"
    )
    driver.find_element(By.XPATH, "//button[text()='Verify now']").click()
    _wait(driver).until(lambda d: "Refused" in _text(d))

    await _rewrap_in_progress(driver, running, owner_dsn)

    driver.get(f"{url}/api-keys?org={seeded.org_a}")
    driver.find_element(By.ID, "k-name").send_keys("dashboard")
    driver.find_element(By.ID, "role-reader").click()
    driver.find_element(By.XPATH, "//button[text()='Create key']").click()
    _wait(driver).until(lambda d: "API key created" in _text(d))
    secret = driver.find_element(By.ID, "new-secret").get_attribute("value") or ""
    assert secret.startswith("svk_")
    assert driver.find_element(By.CSS_SELECTOR, "button.copy").is_displayed()
    driver.get(f"{url}/api-keys?org={seeded.org_a}")
    assert secret not in driver.page_source
    assert "dashboard" in _text(driver)
    _shot(driver, "07-api-keys")

    driver.get(f"{url}/orgs/{seeded.org_a}")
    assert "2 of 10 active connections used" in _text(driver)
    _shot(driver, "08-organization")

    driver.set_window_size(390, 844)
    driver.get(f"{url}/connections")
    assert driver.execute_script(
        "return document.documentElement.scrollWidth <= window.innerWidth"
    ), "the page scrolls sideways at 390 px"
    _shot(driver, "09-connections-narrow")
    driver.set_window_size(1280, 800)

    assert not _csp_violations(driver)
    for value in [*seeded.secrets, running.vault.admin_key]:
        assert value not in driver.page_source
    _sign_out(driver)
    driver.get(f"{url}/connections")
    assert driver.current_url.endswith("/signin")


async def _rewrap_in_progress(driver: webdriver.Chrome, running: Running, owner_dsn: str) -> None:
    """A rewrap with two of organization A's four credentials held (row locks the
    `serve` worker skips): the page shows it running at 2 of 4; released, the page's
    polling script shows it completed without a reload."""
    seeded = running.seeded
    await running.vault.keys.RotateDataKey(kpb.RotateDataKeyRequest(organization_id=seeded.org_a))
    holder = await asyncpg.connect(owner_dsn)
    try:
        transaction = holder.transaction()
        await transaction.start()
        await holder.execute("SELECT set_config('singura.organization_id', $1, true)", seeded.org_a)
        held = await holder.fetch(
            "SELECT id FROM singura.encrypted_credentials WHERE organization_id = $1 "
            "AND state <> 'revoked' ORDER BY id LIMIT 2 FOR UPDATE",
            uuid.UUID(seeded.org_a),
        )
        assert len(held) == 2
        await running.vault.keys.StartRewrap(kpb.StartRewrapRequest())

        def shows_two_of_four(d: webdriver.Chrome) -> bool:
            d.get(f"{running.url}/keys")
            return "2 of 4 credentials re-encrypted" in _text(d)

        await asyncio.to_thread(_wait(driver).until, shows_two_of_four)
        assert driver.find_element(By.CSS_SELECTOR, "[data-field=state]").text == "running"
        _shot(driver, "06-keys-rewrap-running")
        await transaction.rollback()
    finally:
        await holder.close()
    await asyncio.to_thread(
        _wait(driver).until,
        lambda d: d.find_element(By.CSS_SELECTOR, "[data-field=state]").text == "completed",
    )
    assert driver.find_element(By.CSS_SELECTOR, "[data-field=done]").text == "4"


async def test_an_organization_key_is_confined_to_its_organization(
    browser: webdriver.Chrome, running: Running
) -> None:
    """Signed in with an organization key, the browser sees that organization only;
    asking for another shows the vault's PERMISSION_DENIED with reason and request id."""
    driver, url, seeded = browser, running.url, running.seeded
    _sign_in(driver, url, seeded.org_key_a, seeded.org_a)
    _wait(driver).until(lambda d: d.current_url.endswith("/connections"))
    body = _text(driver)
    assert f"Organization key of {seeded.org_a_name}" in body
    assert seeded.error_conn in body
    assert seeded.ok_conn_b not in body
    driver.get(f"{url}/connections?org={seeded.org_b}")
    body = _text(driver)
    assert "PERMISSION_DENIED" in body
    assert "Request id" in body
    assert seeded.ok_conn_b not in body
    _shot(driver, "10-org-key-refused")
    driver.get(f"{url}/keys")
    assert "PERMISSION_DENIED" in _text(driver)
    _sign_out(driver)
