"""Evaluate from the browser: run an evaluation, see its leaderboard row, open the drill-down."""

from __future__ import annotations

import pytest

from tests.support.app_server import AppServer, add_user, make_workspace
from tests.ui.test_browser import login, open_tab, wait_text

pytestmark = [pytest.mark.slow, pytest.mark.browser]


@pytest.fixture(scope="module")
def server(tmp_path_factory, demo_models_dir):  # noqa: ANN001, ANN201
    root = tmp_path_factory.mktemp("browser-eval")
    settings = make_workspace(root / "home", demo_models_dir)
    add_user(settings, "layla", "researcher", "layla-password")
    app = AppServer(settings, root / "server.log").start()
    yield app
    app.stop()


def test_evaluation_from_the_tab_reaches_the_leaderboard_and_its_drill_down(server, page):
    login(page, server.url, "layla", "layla-password")
    open_tab(page, "Evaluate")
    models = page.locator("#eval-models input").first
    models.click()
    models.fill("demo-lfm2-b")
    page.keyboard.press("Enter")
    page.locator("#eval-limit input").fill("10")
    page.locator("#eval-run").click()
    wait_text(page, "#eval-job", "succeeded", timeout=240_000)
    assert "demo-lfm2-b" in page.locator("#eval-summary").inner_text()

    open_tab(page, "Leaderboard")
    row = page.locator("#lb-table .virtual-row", has_text="demo-lfm2-b").first
    row.wait_for()
    assert "exams_ar" in page.locator("#lb-table").inner_text() and "nano" in row.inner_text()
    row.locator("[role=gridcell]").first.click()
    wait_text(page, "#lb-drill-summary", "10 samples")
    drill = page.locator("#lb-drill-table")
    assert drill.locator(".virtual-row").count() >= 5
    assert "exams_ar" in drill.inner_text()
