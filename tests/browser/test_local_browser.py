"""A person's first session with ``kubelab up``, in a real browser.

``kubelab up`` (default config) in the background → log in → the chooser shows the profiles and
marks the GPU profile unavailable (no GPU here) → start the CPU profile → JupyterLab loads, a
notebook runs a cell (so the kernel's websocket goes through the proxy) → stop the server from the
hub's control panel. Screenshots go to tests/artifacts/ (gitignored).

Playwright drives Debian's Chromium (``apt-get install chromium``); nothing is downloaded
(never ``playwright install``). Without /usr/bin/chromium the test is skipped, saying why.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubelab.tests.test_up_support import UpProcess

CHROMIUM = os.environ.get("KUBELAB_TEST_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--headless"]

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason=f"no Chromium at {CHROMIUM} (apt-get install chromium); the browser test needs it",
)


@pytest.fixture
def up(tmp_path: Path) -> Iterator[UpProcess]:
    running = UpProcess(tmp_path / "state").start()
    try:
        yield running
    finally:
        running.stop()
        left = running.leftovers()
        running.kill()
        assert not left, f"left running: {left}"


@pytest.fixture
def page() -> Iterator[object]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.set_default_timeout(60_000)
        try:
            yield page
        finally:
            context.close()
            browser.close()


def _shot(page: object, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"local-{name}.png"), full_page=True)  # type: ignore[attr-defined]


def test_log_in_choose_start_lab_and_stop(up: UpProcess, page: object) -> None:
    from playwright.sync_api import expect

    up.add_user("alice", ("ml",))
    p = page  # type: ignore[assignment]
    try:
        # log in
        p.goto(f"{up.url}/hub/login")
        p.fill("#username_input", "alice")
        p.fill("#password_input", up.secrets["user_password"])
        p.click("#login_submit")
        p.wait_for_url("**/hub/spawn**")

        # the chooser: both profiles, the GPU one unavailable with the reason
        expect(p.locator("#kl-profile-cpu")).to_be_visible()
        gpu = p.locator("#kl-profile-gpu")
        expect(gpu).to_be_visible()
        expect(gpu.locator(".kl-unavailable")).to_contain_text("no NVIDIA GPU")
        expect(p.locator("input[name=dataset][value=example]")).to_be_checked()
        expect(p.locator(".kubelab-local-notes")).to_contain_text("not enforced")
        _shot(p, "1-chooser")

        # start the CPU profile
        p.check("input[name=profile][value=cpu]")
        p.click("form#spawn_form input[type=submit], form#spawn_form button[type=submit]")
        p.wait_for_url("**/user/alice/lab**", timeout=90_000)
        expect(p.locator("#jp-main-dock-panel")).to_be_visible(timeout=60_000)
        _shot(p, "2-lab")

        # a notebook runs a cell: the kernel's websocket works through the proxy
        p.locator(".jp-LauncherCard[data-category='Notebook']").first.click()
        cell = p.locator(".jp-Notebook .jp-Cell .cm-content").first
        expect(cell).to_be_visible(timeout=60_000)
        # a cell run before the kernel is connected is dropped: wait until the kernel is idle
        expect(p.locator("#jp-main-statusbar")).to_contain_text("Idle", timeout=60_000)
        cell.click()
        p.keyboard.type("print(open('data/example/README.txt').read().split()[0], 6 * 7)")
        cell.click()
        p.keyboard.press("Control+Enter")
        output = p.locator(".jp-OutputArea-output").first
        try:
            expect(output).to_contain_text("An 42", timeout=20_000)
        except AssertionError:  # the kernel restarted under us: run it once more
            cell.click()
            p.keyboard.press("Control+Enter")
            expect(output).to_contain_text("An 42", timeout=40_000)
        _shot(p, "3-notebook")

        # stop the server from the hub control panel
        p.goto(f"{up.url}/hub/home")
        expect(p.locator("#stop")).to_be_visible()
        p.click("#stop")
        expect(p.locator("#stop")).to_be_hidden(timeout=60_000)
        expect(p.locator("#start")).to_contain_text("Start My Server", timeout=60_000)
        _shot(p, "4-stopped")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "" in up.api("GET", "/users/alice").json()["servers"]:
            time.sleep(0.2)
        assert "" not in up.api("GET", "/users/alice").json()["servers"]
    except Exception:
        _shot(p, "failure")
        raise
