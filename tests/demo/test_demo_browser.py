"""The demo page in a real browser: type a command, approve in the thread, see the promotion.

Headless Debian Chromium, driven by Playwright with the browser started by the test (nothing is
downloaded). The page talks only to the demo server, which signs the requests to the real bot,
so this covers the page, the demo server, the bot and the emulators together. It also saves
the screenshot the README shows (docs/images/demo.png) and one in the test's tmp directory.
Without Chromium or Playwright the test skips locally, naming what to install, and fails in CI.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from canary_sandbox.demo_web.server import DemoWebServer
from canary_sandbox.demo_web.world import DemoWorld

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = ROOT / "docs" / "images" / "demo.png"
APPROVAL_SCREENSHOT = SCREENSHOT.with_name("approval.png")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
CAROL = "U03CAROL"


def _need_browser() -> None:
    missing = []
    if not CHROMIUM.exists():
        missing.append("Chromium (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("Playwright for Python (pip install playwright; no `playwright install`)")
    if missing:
        message = "the browser test needs " + " and ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[DemoWorld, str]]:
    # Metrics read straight from the traffic generator: no Prometheus start-up to wait for,
    # and the fallback path gets its end-to-end run (the scripted test uses Prometheus in CI).
    world = DemoWorld(workdir=tmp_path / "world", prometheus=False)
    web = DemoWebServer(world, port=0)
    try:
        world.start()
        web.start()
        yield world, web.url
    finally:
        web.stop()
        world.stop()


@pytest.mark.timeout(120)
def test_typing_a_command_and_approving_in_the_page_promotes(
    demo: tuple[DemoWorld, str], tmp_path: Path
) -> None:
    _need_browser()
    from playwright.sync_api import expect, sync_playwright

    world, url = demo
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1440, "height": 900},
        )
        try:
            page = browser.pages[0] if browser.pages else browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(url)
            expect(page.locator("#me")).to_contain_text("Alice")  # a deployer, not an approver

            page.fill("#composer-input", "/canary start checkout v2.3.5")
            page.press("#composer-input", "Enter")
            card = page.locator("#message-list .message", has_text="checkout · demo-cluster")
            card.locator(".thread-link").click(timeout=20_000)
            thread = page.locator("#thread")
            approve = thread.locator("button", has_text="Approve")
            expect(approve).to_be_visible(timeout=45_000)
            expect(thread).to_contain_text("Approval needed @sre")
            page.wait_for_function(
                "[...document.querySelectorAll('#thread img')]"
                ".every(img => img.complete && img.naturalWidth > 0)"
            )
            approve.scroll_into_view_if_needed()
            page.mouse.move(0, 0)
            page.screenshot(path=str(tmp_path / "approval.png"))  # the README's approval view
            APPROVAL_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(tmp_path / "approval.png", APPROVAL_SCREENSHOT)

            page.click(f"[data-user={CAROL}]")
            expect(page.locator("#me")).to_contain_text("Carol")
            approve.click()
            dialog = page.locator(".confirm-dialog")
            expect(dialog).to_contain_text("Promote checkout?")
            dialog.locator("button.confirm").click()

            expect(card).to_contain_text("Succeeded", timeout=30_000)
            expect(thread).to_contain_text("Approved by @Carol")
            expect(thread).to_contain_text("Released")
            expect(thread.locator(".file img").first).to_be_visible()
            page.wait_for_function(
                "[...document.querySelectorAll('#thread img')]"
                ".every(img => img.complete && img.naturalWidth > 0)"
            )
            page.mouse.move(0, 0)  # no hover highlight in the picture
            page.screenshot(path=str(tmp_path / "demo.png"))
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(tmp_path / "demo.png", SCREENSHOT)
            assert errors == []
        finally:
            browser.close()

    stable = world.sandbox.kube.get("apps/v1", "Deployment", "shop", "checkout") or {}
    image = stable["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "registry.example.com/shop/checkout:v2.3.5"
    assert world.sandbox.kube.get("apps/v1", "Deployment", "shop", "checkout-canary") is None
