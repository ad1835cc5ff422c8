"""The console in a real browser: Debian's Chromium driven by Playwright, over real HTTP.

Each test fails on any console message of level error, any failed request and any
response >= 400 of the page. Screenshots of every page land in var/test-output/console/.
Skipped, with the reason, when /usr/bin/chromium is absent (.ci/run installs it).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

import pytest
from fastapi import FastAPI
from playwright.async_api import (
    Browser,
    ConsoleMessage,
    Page,
    Request,
    Response,
    async_playwright,
    expect,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.console.conftest import LIVE_ONLY, OTHER_TENANT, TEST_ONLY, ConsoleKeys, Walled
from tests.console.test_pages import _active_consent, _endpoint_with_failed_delivery, _monitored

CHROMIUM: Final = Path("/usr/bin/chromium")
SCREENSHOTS: Final = Path(__file__).resolve().parents[2] / "var" / "test-output" / "console"
CHROMIUM_ARGS: Final = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

expect.set_options(timeout=15_000)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="browser tests need Chromium at /usr/bin/chromium (apt-get install -y chromium)",
    ),
]


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    """One headless Chromium for the module."""
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        yield launched
        await launched.close()


class PageWatch:
    """A page that records every console error, failed request and error response."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.problems: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        page.on("requestfailed", self._failed)
        page.on("response", self._response)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type in {"error", "warning"}:
            self.problems.append(f"console {message.type}: {message.text}")

    def _failed(self, request: Request) -> None:
        self.problems.append(f"request failed: {request.method} {request.url} {request.failure}")

    def _response(self, response: Response) -> None:
        if response.status >= 400:
            self.problems.append(f"HTTP {response.status}: {response.url}")


@pytest.fixture
async def watched(browser: Browser, console_url: str) -> AsyncIterator[PageWatch]:
    """A fresh browser context and page; the test fails on anything the page reports."""
    context = await browser.new_context(
        base_url=console_url, viewport={"width": 1280, "height": 900}, locale="en-GB"
    )
    page = await context.new_page()
    page.set_default_timeout(15_000)
    watch = PageWatch(page)
    yield watch
    await context.close()
    assert watch.problems == [], "\n".join(watch.problems)


def expected_refusal(watch: PageWatch, status: int, path: str) -> None:
    """Take the one refusal the test asked for off the page's problems; nothing else.

    That is its response, and the console line Chromium writes for any page answered >= 400.
    """
    wanted = [p for p in watch.problems if p.startswith(f"HTTP {status}: ") and path in p]
    assert wanted, f"no HTTP {status} for {path}: {watch.problems}"
    watch.problems.remove(wanted[0])
    line = f"console error: Failed to load resource: the server responded with a status of {status}"
    logged = [p for p in watch.problems if p.startswith(line)]
    if logged:
        watch.problems.remove(logged[0])


async def shot(page: Page, name: str) -> None:
    """A full-page screenshot under var/test-output/console/."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


async def sign_in(page: Page, key: str) -> None:
    """Sign in through the form, as a user does."""
    await page.goto("/console")
    await expect(page.get_by_role("heading", name="Sign in to the console")).to_be_visible()
    await page.get_by_label("API key").fill(key)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url("**/console/score")


async def score(page: Page, siren: str, amount: str = "25000.00") -> None:
    """Fill the score form, press Score and wait for this SIREN's result."""
    await page.get_by_label("SIREN").fill(siren)
    await page.get_by_label("Amount").fill(amount)
    await page.get_by_label("Product").select_option("term_loan")
    await page.get_by_role("button", name="Score", exact=True).click()
    await expect(page.get_by_test_id("result")).to_contain_text(siren.replace(" ", ""))


class TestConsoleInChromium:
    """Sign in, score, browse decisions, replay, operations, language, sign out."""

    async def test_sign_in_score_the_sandbox_companies_and_sign_out(
        self, watched: PageWatch, console_keys: ConsoleKeys
    ) -> None:
        page = watched.page
        await page.goto("/console/sign-in")
        await shot(page, "01-sign-in")
        await sign_in(page, console_keys.writer)
        await expect(page.get_by_test_id("test-banner")).to_contain_text("Test mode")
        # The tenant name holds markup: it shows as text.
        await expect(page.locator(".tenant")).to_have_text(console_keys.tenant_name)
        await expect(page.locator(".tenant b")).to_have_count(0)

        await score(page, "111 111 118")
        result = page.get_by_test_id("result")
        await expect(result.get_by_test_id("decision")).to_contain_text("Approve")
        await expect(result.get_by_test_id("decision")).to_have_class(
            re.compile("decision-approve")
        )
        await expect(result.get_by_test_id("reasons")).to_contain_text("lowers risk")
        await expect(result.locator("svg.reason-chart .reason-row")).not_to_have_count(0)
        await expect(result.get_by_test_id("degraded")).to_have_count(0)
        score_text = await result.get_by_test_id("score").inner_text()
        assert 0 <= int(score_text) <= 1000
        await expect(result.get_by_test_id("grade")).to_have_text(re.compile("^[A-E]$"))
        await shot(page, "02-score-approve")

        await score(page, "555555556")
        await expect(result.get_by_test_id("decision")).to_contain_text("Decline")
        await expect(result.get_by_test_id("rules")).to_contain_text("closed")
        await expect(result.get_by_test_id("limit")).to_have_text("€0.00")
        await shot(page, "03-score-closed-decline")

        await score(page, "666666664")
        await expect(result.get_by_test_id("degraded")).to_contain_text("Open banking")
        await expect(result.get_by_test_id("sources")).to_contain_text("Timed out")
        await shot(page, "04-score-degraded")

        await page.get_by_role("button", name="Sign out").click()
        await page.wait_for_url("**/console/sign-in?signed_out=1")
        await expect(page.get_by_text("You are signed out.")).to_be_visible()
        await page.goto("/console/score")
        await page.wait_for_url("**/console/sign-in?**")

    async def test_bad_input_shows_the_error_next_to_the_field(
        self, watched: PageWatch, console_keys: ConsoleKeys
    ) -> None:
        page = watched.page
        await sign_in(page, console_keys.writer)
        await page.get_by_label("SIREN").fill("123 456 789")
        await page.get_by_label("Amount").fill("-5")
        await page.get_by_role("button", name="Score", exact=True).click()
        siren_error = page.get_by_test_id("siren-error")
        await expect(siren_error).to_contain_text("not a valid SIREN")
        await expect(page.get_by_test_id("amount-error")).to_contain_text("positive decimal")
        await expect(page.get_by_label("SIREN")).to_have_attribute("aria-invalid", "true")
        # The message is tied to its field for assistive technology too.
        described = await page.get_by_label("SIREN").get_attribute("aria-describedby")
        assert described is not None
        assert "siren_error" in described
        await expect(page.get_by_test_id("result")).to_have_count(0)
        await shot(page, "05-score-bad-input")

    async def test_decisions_filters_a_decision_its_replay_and_french(
        self, watched: PageWatch, console_keys: ConsoleKeys
    ) -> None:
        page = watched.page
        await sign_in(page, console_keys.writer)
        await score(page, "333333334")
        await score(page, "111111118")
        await page.get_by_role("link", name="Decisions").click()
        table = page.get_by_test_id("decisions-table")
        await expect(table).to_be_visible()
        await shot(page, "06-decisions")

        await page.get_by_label("SIREN").fill("333 333 334")
        await page.get_by_role("button", name="Apply filters").click()
        await page.wait_for_url("**siren=333**")
        rows = table.locator("tbody tr")
        await expect(rows).not_to_have_count(0)
        for siren in await rows.evaluate_all("rows => rows.map(r => r.dataset.siren)"):
            assert siren == "333333334"
        await page.get_by_label("Decision").select_option("approve")
        await page.get_by_label("Grade").select_option("E")
        await page.get_by_role("button", name="Apply filters").click()
        await expect(page.get_by_test_id("no-decisions")).to_be_visible()
        await page.get_by_role("link", name="Reset").click()
        await page.get_by_label("SIREN").fill("123")
        await page.get_by_role("button", name="Apply filters").click()
        await expect(page.get_by_test_id("siren-error")).to_contain_text("not a valid SIREN")
        await shot(page, "07-decisions-filtered")

        await page.goto("/console/decisions?siren=111111118")
        await table.get_by_role("link", name=re.compile("^Open")).first.click()
        await expect(page.get_by_test_id("integrity")).to_contain_text("Verified")
        await expect(page.get_by_test_id("link-check")).to_contain_text(
            re.compile("Linked|First row")
        )
        await expect(page.get_by_test_id("features")).to_contain_text("bank_inflows_90d")
        await expect(page.get_by_test_id("request-json")).to_contain_text('"siren": "111111118"')
        await page.get_by_test_id("replay-button").click()
        await expect(page.get_by_test_id("replay-result")).to_contain_text("Identical")
        await shot(page, "08-decision-replayed")

        await page.get_by_role("link", name="Français", exact=True).click()
        await expect(page.locator("html")).to_have_attribute("lang", "fr")
        await expect(
            page.get_by_role("heading", name="Intégrité de la chaîne d'audit")
        ).to_be_visible()
        await expect(page.get_by_test_id("decision").first).to_contain_text("Accepter")
        await expect(page.get_by_test_id("reasons")).to_contain_text("diminue le risque")
        await shot(page, "09-decision-fr")
        # The choice sticks across pages until switched back.
        await page.get_by_role("link", name="Scorer").click()
        await expect(page.get_by_label("Montant")).to_be_visible()
        await page.get_by_role("link", name="English", exact=True).click()
        await expect(page.get_by_label("Amount")).to_be_visible()

    async def test_operations_charts(self, watched: PageWatch, console_keys: ConsoleKeys) -> None:
        page = watched.page
        await sign_in(page, console_keys.writer)
        await score(page, "111111118", "12000.00")
        await page.get_by_role("link", name="Operations").click()
        await page.get_by_label("Window").select_option("7d")
        await page.get_by_role("button", name="Show").click()
        await page.wait_for_url("**window=7d")
        total = int(await page.get_by_test_id("ops-total").inner_text())
        assert total >= 1
        await expect(page.get_by_test_id("latency-chart").locator("svg")).to_contain_text("p99")
        await expect(page.get_by_test_id("latency-chart")).to_contain_text("budget 2500 ms")
        await expect(page.get_by_test_id("outcomes-chart")).to_contain_text("Approve")
        await expect(page.get_by_test_id("scores-chart").locator("svg rect.bar")).not_to_have_count(
            0
        )
        await shot(page, "10-operations")

    async def test_keyboard_only_sign_in_and_score(
        self, watched: PageWatch, console_keys: ConsoleKeys
    ) -> None:
        page = watched.page
        await page.goto("/console/sign-in")
        await page.keyboard.press("Tab")  # the skip link comes first
        await expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
        await page.get_by_label("API key").focus()
        outline = await page.get_by_label("API key").evaluate(
            "e => getComputedStyle(e).outlineStyle"
        )
        assert outline != "none"  # a visible focus ring
        await page.keyboard.type(console_keys.writer)
        await page.keyboard.press("Enter")
        await page.wait_for_url("**/console/score")
        await page.get_by_label("SIREN").focus()
        await page.keyboard.type("111111118")
        await page.keyboard.press("Tab")
        await expect(page.get_by_label("Amount")).to_be_focused()
        await page.keyboard.type("5000")
        await page.keyboard.press("Enter")
        await expect(page.get_by_test_id("result")).to_contain_text("111111118")
        await shot(page, "11-keyboard")

    async def test_models_webhooks_consents_and_monitoring(
        self,
        watched: PageWatch,
        console_keys: ConsoleKeys,
        console_app: FastAPI,
        pg_engine: AsyncEngine,
    ) -> None:
        # The other tenant's key is an admin key: every page of the console is open to it.
        tenant = console_keys.other_tenant_id
        endpoint_id, _ = await _endpoint_with_failed_delivery(pg_engine, console_app, tenant)
        await _active_consent(pg_engine, tenant, bank="sandbox-bank")
        await _monitored(pg_engine, tenant, console_keys.writer_id, "405123464")
        page = watched.page
        await sign_in(page, console_keys.other_tenant)

        await page.get_by_role("link", name="Models").click()
        await expect(page.get_by_test_id("bundles").locator('[data-role="live"]')).to_have_count(1)
        await expect(page.get_by_test_id("drift")).to_contain_text("Score")
        await shot(page, "12-models")

        await page.get_by_role("link", name="Webhooks").click()
        await page.get_by_role("link", name="http://127.0.0.1:9/hook").first.click()
        await page.wait_for_url(f"**/console/webhooks/{endpoint_id}")
        await expect(page.get_by_test_id("deliveries")).to_contain_text("company.closed")
        await shot(page, "13-webhook-deliveries")
        await page.get_by_role("button", name="Redeliver").first.click()
        await expect(page.get_by_test_id("notice")).to_contain_text("queued")
        await shot(page, "14-webhook-redelivered")

        await page.get_by_role("link", name="Consents").click()
        await expect(page.get_by_test_id("consents")).to_contain_text("sandbox-bank")
        await shot(page, "15-consents")
        await page.get_by_role("button", name="Revoke").first.click()
        await expect(page.get_by_test_id("notice")).to_contain_text("revoked")
        await expect(page.get_by_test_id("consents")).to_contain_text("revoked")
        await shot(page, "16-consent-revoked")

        await page.get_by_role("link", name="Monitoring").click()
        await expect(page.get_by_test_id("monitored")).to_contain_text("405123464")
        await shot(page, "17-monitoring")


async def your_model(page: Page, window: str) -> None:
    """Open the tenant's model page from the menu and show one window."""
    await page.get_by_role("link", name="Your model").click()
    await page.wait_for_url("**/console/model")
    await page.get_by_label("Window").select_option(window)
    await page.get_by_role("button", name="Show").click()
    await page.wait_for_url(f"**/console/model?window={window}")


class TestAlertsAndTenantModelInChromium:
    """Monitored companies' alerts and the tenant's model page, walled by the key's mode."""

    async def test_a_test_key_sees_test_alerts_and_test_drift_only(
        self, watched: PageWatch, walled: Walled
    ) -> None:
        page = watched.page
        await sign_in(page, walled.test_key)
        await page.get_by_role("link", name="Monitoring").click()
        alerts = page.get_by_test_id(f"alerts-{walled.siren}")
        # The provider text is shown as text, never run.
        await expect(alerts).to_contain_text(TEST_ONLY)
        await expect(alerts).to_contain_text("712 (B) → 540 (C)")
        await expect(page.get_by_test_id("monitored")).not_to_contain_text(LIVE_ONLY)
        await expect(page.get_by_test_id("monitored")).not_to_contain_text(OTHER_TENANT)
        await shot(page, "18-monitoring-alerts")

        await page.get_by_role("link", name=walled.siren).click()
        await page.wait_for_url(f"**/console/monitoring/{walled.test_item}")
        listed = page.get_by_test_id("alerts").locator("li.alert")
        await expect(listed).to_have_count(2)
        await expect(listed.first).to_contain_text("Proceedings opened")
        await expect(page.get_by_test_id("alerts")).not_to_contain_text(LIVE_ONLY)
        await shot(page, "19-monitored-company")

        # The same SIREN watched in live mode is not this key's to see.
        await page.goto(f"/console/monitoring/{walled.live_item}")
        await expect(page.get_by_text("Not found.")).to_be_visible()
        expected_refusal(watched, 404, walled.live_item)

        await page.goto("/console/score")
        await your_model(page, "24h")
        await expect(page.get_by_test_id("tenant-drift")).to_contain_text(
            f"{walled.test_decisions} decisions in the window."
        )
        await expect(page.get_by_test_id("score-psi")).to_be_visible()
        chart = page.get_by_test_id("tenant-drift").locator("svg")
        await expect(chart.locator("rect.bar-observed")).not_to_have_count(0)
        await expect(chart.locator("rect.bar-reference")).not_to_have_count(0)
        await expect(page.get_by_test_id("models-used")).not_to_contain_text(
            str(walled.live_decisions)
        )
        # Platform-wide drift is the operators': no link, and 403 when asked for.
        await expect(page.get_by_role("link", name="Models", exact=True)).to_have_count(0)
        await shot(page, "20-tenant-model")
        await page.goto("/console/models")
        await expect(page.get_by_text("lacks the 'admin' scope")).to_be_visible()
        expected_refusal(watched, 403, "/console/models")

    async def test_a_live_key_sees_live_rows_only(self, watched: PageWatch, walled: Walled) -> None:
        page = watched.page
        await sign_in(page, walled.live_key)
        await expect(page.get_by_test_id("test-banner")).to_have_count(0)
        await page.get_by_role("link", name="Monitoring").click()
        await expect(page.get_by_test_id(f"alerts-{walled.siren}")).to_contain_text(LIVE_ONLY)
        await expect(page.get_by_test_id("monitored")).not_to_contain_text("TEST-ONLY")
        await your_model(page, "24h")
        await expect(page.get_by_test_id("tenant-drift")).to_contain_text(
            f"{walled.live_decisions} decisions in the window."
        )
        await shot(page, "21-tenant-model-live")

    async def test_a_key_without_decisions_read_is_refused(
        self, watched: PageWatch, walled: Walled
    ) -> None:
        page = watched.page
        await sign_in(page, walled.score_only)
        await expect(page.get_by_role("link", name="Monitoring")).to_have_count(0)
        await expect(page.get_by_role("link", name="Your model")).to_have_count(0)
        for path in ("/console/model", f"/console/monitoring/{walled.test_item}"):
            await page.goto(path)
            await expect(page.get_by_text("lacks the 'decisions:read' scope")).to_be_visible()
            await expect(page.locator("main")).not_to_contain_text("TEST-ONLY")
            expected_refusal(watched, 403, path)
        await shot(page, "22-model-403")

    async def test_signed_out_a_page_asks_for_a_key_then_opens(
        self, watched: PageWatch, walled: Walled
    ) -> None:
        page = watched.page
        target = f"/console/monitoring/{walled.test_item}"
        await page.goto(target)
        await page.wait_for_url("**/console/sign-in?**")
        await expect(page.get_by_test_id("alerts")).to_have_count(0)
        await page.get_by_label("API key").fill(walled.test_key)
        await page.get_by_role("button", name="Sign in").click()
        # Back where the visitor was going, the company's alerts in view.
        await page.wait_for_url(f"**{target}")
        await expect(page.get_by_test_id("alerts")).to_contain_text("Score changed")
