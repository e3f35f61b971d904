"""An admin enables Slurm for the workspace, then sends a translation job to it from the Translate tab; the Runs
tab shows the job queued on Slurm (PENDING) and then running under its Slurm job id, and it succeeds."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select

from db.models import Job, Translation
from db.session import read_scope
from tests.support.app_server import AppServer, add_user, make_workspace
from tests.support.corpus import DATA
from tests.support.slurm import slurm_partition
from tests.ui.test_browser import login, open_tab, wait_text
from workbench.corpus_ops import import_file

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.slurm]

CORPUS = "ntrex-slurm"
SEGMENTS = 6


@pytest.fixture(scope="module")
def server(tmp_path_factory, demo_models_dir):  # noqa: ANN001, ANN201
    partition = slurm_partition()
    root = tmp_path_factory.mktemp("browser-slurm")
    settings = make_workspace(root / "home", demo_models_dir)
    import_file(settings, str(DATA / "ntrex128_en_ar"), CORPUS, limit=SEGMENTS)
    add_user(settings, "noor", "admin", "noor-password")
    app = AppServer(settings, root / "server.log").start()
    app.partition = partition
    yield app
    app.stop()


def pick(page, elem_id: str, option: str) -> None:  # noqa: ANN001
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=option, exact=True).click()


def slurm_job(settings) -> Job | None:  # noqa: ANN001
    with read_scope(settings.db_url) as s:
        return s.scalar(select(Job).where(Job.kind == "translate").order_by(Job.id.desc()))


def test_admin_sends_a_translation_to_slurm_and_follows_it_in_the_runs_tab(server, page):
    settings = server.settings
    login(page, server.url, "noor", "noor-password")

    # the admin enables the Slurm executor for the workspace (Runs → Executors), saved to hala.yaml
    open_tab(page, "Runs")
    page.locator("#executors").get_by_text("Executors — where jobs may run").click()
    page.locator("#executors-slurm-enabled input").check()
    page.locator("#executors-partition input, #executors-partition textarea").first.fill(server.partition)
    page.locator("#executors-save").click()
    wait_text(page, "#executors-message", "executors: local, slurm")
    assert "slurm" in (settings.home / "hala.yaml").read_text()

    # a translation job, sent to Slurm; it waits a few seconds in the queue (--begin) so PENDING is seen
    open_tab(page, "Translate")
    page.locator("#translate-max-new input").fill("8")
    page.locator("#translate-where").get_by_text("Where it runs").click()
    pick(page, "translate-executor", "slurm")
    page.locator("#translate-time textarea, #translate-time input").first.fill("10")
    page.locator("#translate-sbatch textarea").fill("--begin=now+6")
    page.locator("#translate-run").click()
    deadline = time.monotonic() + 30
    while (job := slurm_job(settings)) is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert job is not None and job.executor == "slurm"

    open_tab(page, "Runs")
    row = "#runs-table"
    wait_text(page, row, "PENDING", timeout=30_000)  # submitted: queued on Slurm under its job id
    job = slurm_job(settings)
    assert job.executor_handle and job.executor_handle.startswith("slurm:")
    slurm_id = job.executor_handle.split(":", 1)[1]
    wait_text(page, row, f"slurm {slurm_id}")
    wait_text(page, row, "RUNNING", timeout=60_000)
    wait_text(page, row, "succeeded", timeout=180_000)

    job = slurm_job(settings)
    assert job.status == "succeeded", job.error
    with read_scope(settings.db_url) as s:
        done = s.scalar(select(func.count(Translation.id)))
    assert done == SEGMENTS
    # the job's own log (the Slurm output file) is the one the Runs tab tails
    page.locator("#runs-job-id input").fill(str(job.id))
    page.locator("#runs-open").click()
    wait_text(page, "#runs-facts", f"slurm {slurm_id}")
    log = page.locator("#runs-log textarea")
    deadline = time.monotonic() + 30
    while f"=== job {job.id} succeeded" not in log.input_value() and time.monotonic() < deadline:
        page.wait_for_timeout(300)
    assert f"=== job {job.id} succeeded" in log.input_value()
