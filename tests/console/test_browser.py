"""The console in a real browser: Playwright drives Debian's Chromium (/usr/bin/chromium, no
browser download) against a real ``meddet serve`` that received a synthetic study and ran the
shipped model on it (tests/console/harness.py).

Set MEDDET_CONSOLE_SCREENSHOTS=docs/figures to refresh the pictures in docs/console.md.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Error, Page, expect, sync_playwright

from tests.console.harness import ADMIN, RADIOLOGIST, RunningNode, node_with_study

pytestmark = [pytest.mark.integration]

CHROMIUM = Path(os.environ.get("MEDDET_CHROMIUM", "/usr/bin/chromium"))
PREVIEWS_LOADED = """() => {
  const images = [...document.querySelectorAll('img.preview')];
  return images.length > 0 && images.every(i => i.complete && i.naturalWidth > 0);
}"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium (.ci/run does)")
    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        except Error as exc:
            pytest.skip(f"Chromium at {CHROMIUM} cannot start here: {str(exc).splitlines()[0]}")
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def node(browser: Browser, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNode]:
    with node_with_study(tmp_path_factory.mktemp("console-node")) as running:
        yield running


@pytest.fixture
def shot() -> Callable[[Page, str], None]:
    folder = os.environ.get("MEDDET_CONSOLE_SCREENSHOTS")

    def take(page: Page, name: str) -> None:
        if folder:
            page.screenshot(path=str(Path(folder) / f"console-{name}.png"), full_page=True)

    return take


def _page(browser: Browser) -> Page:
    page = browser.new_page(viewport={"width": 1360, "height": 900})
    page.set_default_timeout(20_000)
    return page


def _login(page: Page, node: RunningNode, who: tuple[str, str], shot: Callable | None = None) -> None:
    page.goto(f"{node.url}/")
    expect(page).to_have_url(re.compile(r"/login\?next=/$"))
    page.fill("#username", who[0])
    page.fill("#password", who[1])
    if shot:
        shot(page, "login")
    page.click("button:has-text('Log in')")
    expect(page).to_have_url(f"{node.url}/")
    expect(page.locator("#who")).to_contain_text(who[0])


def _logout(page: Page, node: RunningNode) -> None:
    page.click("button:has-text('Log out')")
    expect(page).to_have_url(f"{node.url}/login")
    page.goto(f"{node.url}/jobs/{node.job_id}")
    expect(page).to_have_url(re.compile(r"/login\?next="))  # the session is over


def test_radiologist_sees_the_findings_and_may_not_act(browser: Browser, node: RunningNode) -> None:
    page = _page(browser)
    _login(page, node, RADIOLOGIST)
    expect(page.locator("header nav")).not_to_contain_text("Failures")
    page.goto(f"{node.url}/jobs/{node.job_id}")
    expect(page.locator("#findings")).to_be_visible()
    page.wait_for_function(PREVIEWS_LOADED)
    expect(page.locator("#retry")).to_have_count(0)
    refused = page.goto(f"{node.url}/failures")
    assert refused is not None and refused.status == 403
    expect(page.locator("#error-message")).to_contain_text("refused: rita is a radiologist")
    page.goto(f"{node.url}/")
    token = page.locator("form.logout input[name=csrf_token]").get_attribute("value")
    forged = page.context.request.post(
        f"{node.url}/jobs/{node.job_id}/retry", form={"csrf_token": token or ""}, max_redirects=0
    )
    assert forged.status == 403  # the session and its token are right; the role is not
    page.goto(f"{node.url}/jobs/{node.job_id}")
    expect(page.locator("#job-state")).to_contain_text("failed")
    _logout(page, node)
    page.close()


def test_admin_follows_the_study_to_its_results_and_retries(browser: Browser, node: RunningNode, shot) -> None:
    page = _page(browser)
    _login(page, node, ADMIN, shot)
    expect(page.locator("#model-version")).not_to_be_empty()
    expect(page.locator("#traffic")).to_contain_text("series selected")
    shot(page, "overview")

    page.click("header nav >> text=Series")
    row = page.locator("#series-table tr", has_text=node.patient_name)
    expect(row).to_have_count(1)
    expect(row).to_contain_text("selected")
    shot(page, "series")
    row.locator("a.series-link").click()
    expect(page.locator("#series-state")).to_contain_text("selected")
    expect(page.locator("main")).to_contain_text(node.patient_id)
    shot(page, "series-detail")

    page.locator("#series-jobs a.job-link").first.click()
    expect(page).to_have_url(f"{node.url}/jobs/{node.job_id}")
    expect(page.locator("#job-state")).to_contain_text("failed")
    expect(page.locator("#findings tr")).not_to_have_count(1)  # a header and the levels
    expect(page.locator("#objects")).to_contain_text("unreachable")
    page.wait_for_function(PREVIEWS_LOADED)
    width = page.locator("img.preview").first.evaluate("i => i.naturalWidth")
    assert width > 0
    shot(page, "job")
    links = page.eval_on_selector_all("a", "links => links.map(a => a.href)")
    assert not [u for u in links if node.patient_name.split("^")[0] in u or node.patient_id in u]

    page.click("#retry")
    expect(page.locator("#flash")).to_contain_text(f"job {node.job_id} queued (run 2)")
    expect(page.locator("#timeline")).to_contain_text("retry requested by alice (console)")

    for name in ("failures", "associations", "settings", "activity"):
        page.click(f"header nav >> text={name.title()}")
        expect(page.locator("h1")).to_have_text(name.title())
        shot(page, name)
    expect(page.locator("#actions-table")).to_contain_text(f"job {node.job_id}")
    _logout(page, node)
    page.close()


def test_no_patient_name_or_id_in_the_server_log(browser: Browser, node: RunningNode) -> None:
    log = node.log.read_text(errors="replace")
    assert "path=/jobs/" in log and "user=alice" in log  # the console logged its requests
    assert node.patient_name not in log and node.patient_id not in log
