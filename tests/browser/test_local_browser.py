"""A person's first session with ``kubelab up``, in a real browser.

``kubelab up`` (default config) in the background → log in → the chooser shows the profiles and
marks the GPU profile unavailable (no GPU here) → start the CPU profile → JupyterLab loads, a
notebook runs a cell (so the kernel's websocket goes through the proxy) and a ``%%train`` cell (a
job on the local backend, its log back in the cell) → stop the server from the
hub's control panel. Screenshots go to tests/artifacts/ (gitignored). The chooser's layout is
also checked with its longest texts at 1280 px and 390 px (nothing sticks out of a card).

Playwright drives Debian's Chromium (``apt-get install chromium``); nothing is downloaded
(never ``playwright install``). Without /usr/bin/chromium the test is skipped, saying why.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubelab.spawner import profiles as P
from kubelab.tests.profiles_support import ALICE, CONFIG
from kubelab.tests.up_support import UpProcess

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
def browser() -> Iterator[object]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: object) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        yield page
    finally:
        context.close()


def _shot(page: object, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"local-{name}.png"), full_page=True)  # type: ignore[attr-defined]


def _assert_fits(page: object) -> None:
    """No part of the chooser sticks out of its card, and the page does not scroll sideways."""
    overflow = page.evaluate("""() => {  // type: ignore[attr-defined]
        const out = [];
        for (const card of document.querySelectorAll('.kl-profile, .kubelab-chooser fieldset')) {
            const box = card.getBoundingClientRect();
            for (const el of card.querySelectorAll('label, span, select, input, div')) {
                const r = el.getBoundingClientRect();
                if (r.width && (r.right > box.right + 1 || r.left < box.left - 1)) {
                    out.push(`${el.className || el.tagName}: ${el.textContent.trim().slice(0, 60)}`);
                }
            }
        }
        if (document.documentElement.scrollWidth > window.innerWidth + 1) {
            out.push(`page ${document.documentElement.scrollWidth}px wide in ${window.innerWidth}px`);
        }
        return out;
    }""")
    assert overflow == [], overflow


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
        _assert_fits(p)
        _shot(p, "1-chooser")
        # a phone's width: everything wraps, nothing scrolls sideways
        p.set_viewport_size({"width": 390, "height": 844})
        _assert_fits(p)
        _shot(p, "1-chooser-phone")
        p.set_viewport_size({"width": 1280, "height": 900})

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

        # the kubelab magics: a cell runs as a training job on the local backend, its log and
        # final status streamed back into the cell
        cells = p.locator(".jp-Notebook .jp-Cell .cm-content")
        for n, source in enumerate(["%load_ext kubelab", "%%train --name hello\nprint('hello from a job', 6 * 7)"]):
            cell.click()
            p.keyboard.press("Escape")
            p.keyboard.press("b")  # a new cell below the last one
            expect(cells).to_have_count(n + 2, timeout=10_000)
            cells.nth(n + 1).click()
            p.keyboard.type(source)
            p.keyboard.press("Control+Enter")
            cell = cells.nth(n + 1)
        expect(p.locator(".jp-Notebook")).not_to_contain_text("UsageError")
        notebook = p.locator(".jp-Notebook")
        expect(notebook).to_contain_text("hello from a job 42", timeout=60_000)
        expect(notebook).to_contain_text("hello: Succeeded", timeout=60_000)
        _shot(p, "3-train")

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


# -- the chooser's layout with the longest texts it shows ---------------------------------------
#
# Kubernetes-style "not free now" and quota reasons beside each GPU count, a long GPU type name, a
# custom image field: render_form inside JupyterHub's own page styles (spawn.html's structure,
# style.min.css), at a laptop's width and a phone's. Screenshots: tests/artifacts/chooser-*.png.


def _page_html() -> str:
    import jupyterhub._data

    css = Path(jupyterhub._data.DATA_FILES_PATH, "static", "css", "style.min.css").read_text()
    availability = P.Availability(
        gpus={"a100": P.GpuAvailability(total=24, free=3, largest_free=1)},
        quota=P.QuotaUsage("ml", gpus_used=1, gpus_quota=4, user_gpus_used=0, user_gpus_quota=2),
        unusable_datasets={"local": "hostPath volumes are not allowed under Pod Security 'restricted'"},
    )
    form = P.render_form(CONFIG, ALICE, availability, user_options={"profile": "a100", "gpus": 1})
    # JupyterHub's spawn.html around the fragment
    return f"""<!doctype html><html><head><meta name="viewport" content="width=device-width, initial-scale=1">
<style>{css}</style></head><body><div class="container"><div class="row text-center"><h1>Server Options</h1></div>
<div class="row justify-content-center"><div class="col-md-8"><form id="spawn_form">{form}<br>
<button type="submit" class="btn btn-jupyter form-control">Start</button></form></div></div></div></body></html>"""


@pytest.mark.parametrize(("width", "height"), [(1280, 900), (390, 844)])
def test_the_chooser_fits_its_cards(browser: object, width: int, height: int) -> None:
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": width, "height": height})  # type: ignore[attr-defined]
    try:
        page = context.new_page()
        page.set_content(_page_html())
        card = page.locator("#kl-profile-a100")
        # the texts are there (escaped config text shown as text, not markup)
        expect(card).to_contain_text('NVIDIA A100 <80GB> & "friends"')
        expect(card).to_contain_text("not free now: at most 1 free on one node (3 of 24 free)")
        expect(card).to_contain_text("unavailable: over your quota of 2 GPUs")
        _assert_fits(page)
        page.screenshot(path=str(ARTIFACTS / f"chooser-{width}.png"), full_page=True)
    finally:
        context.close()
