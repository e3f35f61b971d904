"""The real workbench in headless Chromium (Playwright + Debian's chromium)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from db.models import Job
from db.session import session_scope
from hala_core.specs import SleepSpec
from jobs.queue import enqueue
from tests.support.app_server import AppServer, add_user, make_workspace
from tests.support.workspace import job_status, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def login(page, url: str, name: str, password: str) -> None:  # noqa: ANN001
    page.goto(url)
    page.locator('input[data-testid="textbox"]').first.fill(name)
    page.locator('input[type="password"]').fill(password)
    page.get_by_role("button", name="Login").click()
    page.get_by_role("tab", name="Merge").wait_for()


def open_tab(page, name: str) -> None:  # noqa: ANN001
    page.get_by_role("tab", name=name).click()


def wait_text(page, selector: str, text: str, timeout: float = 30_000) -> None:  # noqa: ANN001
    """Wait until the element (which may not be mounted yet) shows ``text``."""
    page.wait_for_function("([sel, text]) => { const e = document.querySelector(sel);"
                           " return !!e && e.innerText.includes(text); }", arg=[selector, text], timeout=timeout)


@pytest.fixture(scope="module")
def server(tmp_path_factory, demo_models_dir):  # noqa: ANN001, ANN201
    root = tmp_path_factory.mktemp("browser")
    settings = make_workspace(root / "home", demo_models_dir)
    add_user(settings, "layla", "researcher", "layla-password")
    app = AppServer(settings, root / "server.log").start()
    yield app
    app.stop()


def test_merge_from_the_browser_end_to_end(server, page):
    login(page, server.url, "layla", "layla-password")
    open_tab(page, "Merge")
    yaml_box = page.locator("#merge-yaml")
    page.wait_for_function("() => document.querySelector('#merge-yaml').innerText.includes('t: 0.5')",
                           timeout=60_000)
    assert "merge_method: slerp" in yaml_box.inner_text()
    page.locator("#merge-sim-plot .js-plotly-plot").wait_for()

    # the preview follows the slider
    page.locator("#merge-t input[type='range']").fill("0.8")
    page.wait_for_function("() => document.querySelector('#merge-yaml').innerText.includes('t: 0.8')")
    assert "t: 0.5" not in yaml_box.inner_text()

    page.locator("#merge-output input, #merge-output textarea").first.fill("browser-merge")
    page.locator("#merge-run").click()
    page.wait_for_function("() => document.querySelector('#merge-job').innerText.includes('succeeded')",
                           timeout=180_000)
    samples = page.locator("#merge-samples table")
    samples.wait_for()
    headers = samples.locator("th").all_inner_texts()
    assert any("A: demo-lfm2-a" in h for h in headers) and any("Merge: browser-merge" in h for h in headers)
    assert samples.locator("tbody tr").count() == 2

    # after a reload, the job is in Runs with its artifact and lineage
    page.reload()
    open_tab(page, "Runs")
    row = page.locator("#runs-table .virtual-row", has_text="browser-merge").first
    row.wait_for()
    assert "succeeded" in row.inner_text()
    row.locator("[role=gridcell]").first.click()
    page.wait_for_function("() => document.querySelector('#runs-artifacts').innerText.includes('browser-merge')")
    arts = page.locator("#runs-artifacts").inner_text()
    assert "made from" in arts and "demo-lfm2-a" in arts and "demo-lfm2-b" in arts
    with session_scope(server.settings.db_url) as s:
        job = s.scalar(select(Job).where(Job.kind == "merge").order_by(Job.id.desc()))
        assert (job.status, job.owner, job.spec["t"]) == ("succeeded", "layla", 0.8)


def test_runs_tab_reattaches_after_refresh_and_workbench_restart(server, page):
    with session_scope(server.settings.db_url) as s:
        jid = enqueue(s, SleepSpec(seconds=25, steps=50), owner="layla").id
    wait_for(lambda: job_status(server.settings, jid) == "running", timeout=60, what="job to run")
    login(page, server.url, "layla", "layla-password")
    open_tab(page, "Runs")
    page.locator("#runs-job-id input").fill(str(jid))
    page.locator("#runs-open").click()
    page.wait_for_function("() => document.querySelector('#runs-head').innerText.includes('running')")

    server.kill()  # the UI dies; its worker (a separate process) and the job go on
    assert job_status(server.settings, jid) == "running"
    server.start()
    login(page, server.url, "layla", "layla-password")  # a restarted server has forgotten its sessions
    open_tab(page, "Runs")
    # the browser remembered the open job; the new server finds it in the db and follows it to the end
    page.wait_for_function(f"() => document.querySelector('#runs-head').innerText.includes('job {jid}')")
    page.wait_for_function("() => document.querySelector('#runs-head').innerText.includes('succeeded')",
                           timeout=90_000)
    assert "progress" in page.locator("#runs-log textarea").input_value()


def test_first_launch_on_an_empty_workspace_builds_demo_models_in_one_click(tmp_path, page):
    from hala_core.settings import load_settings
    from workbench.bootstrap import open_workspace

    settings = open_workspace(load_settings(home=tmp_path / "empty", db_url=f"sqlite:///{tmp_path / 'empty.db'}"))
    app = AppServer(settings, tmp_path / "server.log").start()
    try:
        page.goto(app.url)
        status = page.locator("#home-status")
        status.wait_for()
        assert "no models yet" in status.inner_text() and "random weights" in status.inner_text()
        page.locator("#build-demo-models").click()
        page.wait_for_function("() => document.querySelector('#demo-progress').innerText.includes('succeeded')",
                               timeout=120_000)
        page.wait_for_function("() => document.querySelector('#home-status').innerText.includes('demo-lfm2-b')")
        open_tab(page, "Merge")
        page.wait_for_function("() => document.querySelector('#merge-yaml').innerText.includes('slerp')",
                               timeout=60_000)
    finally:
        app.stop()
