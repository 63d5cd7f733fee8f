"""A real worker with an API token and a real headless Chromium (Debian's `chromium`, driven
by Playwright): the console as a person uses it. Screenshots go to a temporary folder, or to
TRIGGERS_CONSOLE_SCREENSHOTS (`make screenshots` writes docs/console/)."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright

from tests.integration.conftest import Deployment, start_deployment

pytestmark = [pytest.mark.integration, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium calls home, which a closed network refuses.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
TOKEN = "console-" + uuid.uuid4().hex
SCREENSHOTS_SETTING = "TRIGGERS_CONSOLE_SCREENSHOTS"


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get(SCREENSHOTS_SETTING)
    folder = Path(configured) if configured else tmp_path_factory.mktemp("console-screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
async def console(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Deployment]:
    """One worker with a token; webhooks to loopback are refused (dead letters to replay)."""
    deployment = await start_deployment(kafka_bootstrap, tmp_path_factory.mktemp("console"), partitions=2,
                                        env={"TRIGGERS_API_TOKEN": TOKEN})
    yield deployment
    deployment.stop()


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    assert shutil.which(CHROMIUM), f"{CHROMIUM} is missing: `make test` installs Debian's chromium package"
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    """A fresh tab (its own sessionStorage) at a laptop's size."""
    context = await browser.new_context(viewport={"width": 1366, "height": 900})
    tab = await context.new_page()
    tab.set_default_timeout(20_000)
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    yield tab
    await context.close()
    assert not errors, f"script errors in the console: {errors}"


async def sign_in(page: Page, base_url: str, token: str = TOKEN) -> None:
    await page.goto(f"{base_url}/ui#/signin")
    await page.get_by_label("API token").fill(token)
    await page.get_by_role("button", name="Sign in").click()
    await page.locator("#who", has_text="Signed in").wait_for()
