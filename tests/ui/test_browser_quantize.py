"""Quantize from the browser: start an FP8 job, watch it finish, read the validation report."""

from __future__ import annotations

import re

import pytest

from tests.support.app_server import AppServer, add_user, make_workspace
from tests.ui.test_browser import login, open_tab

pytestmark = [pytest.mark.slow, pytest.mark.browser]


@pytest.fixture(scope="module")
def server(tmp_path_factory, demo_models_dir):  # noqa: ANN001, ANN201
    root = tmp_path_factory.mktemp("browser-quant")
    settings = make_workspace(root / "home", demo_models_dir)
    add_user(settings, "layla", "researcher", "layla-password")
    app = AppServer(settings, root / "server.log").start()
    yield app
    app.stop()


def test_fp8_job_from_the_quantize_tab_shows_its_report(server, page):
    login(page, server.url, "layla", "layla-password")
    open_tab(page, "Quantize")
    page.locator("#quant-output input, #quant-output textarea").first.fill("browser-fp8")
    page.locator("#quant-run").click()
    page.wait_for_function("() => document.querySelector('#quant-job').innerText.includes('succeeded')",
                           timeout=240_000)
    table = page.locator("#quant-report-table")
    table.wait_for()
    text = table.inner_text()
    assert "agreement" in text.lower() and "chrf" in text.lower() and "tokens/s" in text.lower()
    assert len(re.findall(r"\d+\.\d+", text)) >= 8, text
    assert "emulated" in page.locator("#quant-report").inner_text()
    page.locator("#quant-fig-quality .js-plotly-plot").wait_for()

    page.reload()  # the report comes back from the db after a refresh
    open_tab(page, "Quantize")
    page.locator("#quant-report-table").wait_for()
