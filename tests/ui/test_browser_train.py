"""Train from the browser: launch a translator run on the demo model, watch its curve grow (also after a reload),
stop it (a checkpoint is saved), resume it for ten more steps and see the curve continue where it stopped."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from db.artifacts import register_artifact
from db.models import Artifact, Job
from db.session import session_scope
from hala_core.translation import HALA_TRANSLATOR_TEMPLATE
from tests.support.app_server import AppServer, add_user, make_workspace
from tests.ui.test_browser import login, open_tab, wait_text

pytestmark = [pytest.mark.slow, pytest.mark.browser]

NTREX = Path(__file__).resolve().parents[3] / "shared" / "data" / "ntrex128_en_ar"
DATASET = "ntrex64-pairs"
OUTPUT = "browser-translator"
CURVE = "#train-curves .js-plotly-plot"


def write_pairs(path: Path, n: int = 64) -> int:
    """``n`` NTREX EN→AR pairs as prompt/completion rows in the Hala translator template (the pairs export)."""
    en = (NTREX / "newstest2019-src.eng.txt").read_text(encoding="utf-8").splitlines()[:n]
    ar = (NTREX / "newstest2019-ref.arb.txt").read_text(encoding="utf-8").splitlines()[:n]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for src, ref in zip(en, ar, strict=True):
            prompt = HALA_TRANSLATOR_TEMPLATE.format(src_lang="English", tgt_lang="Arabic", text=src)
            fh.write(json.dumps({"prompt": prompt, "completion": ref}, ensure_ascii=False) + "\n")
    return len(en)


@pytest.fixture(scope="module")
def server(tmp_path_factory, demo_models_dir):  # noqa: ANN001, ANN201
    if not NTREX.is_dir():
        pytest.skip(f"the NTREX sample data is not at {NTREX}")
    root = tmp_path_factory.mktemp("browser-train")
    settings = make_workspace(root / "home", demo_models_dir)
    path = settings.datasets_dir / DATASET / f"{DATASET}.jsonl"
    n = write_pairs(path)
    with session_scope(settings.db_url) as s:
        register_artifact(s, "dataset", DATASET, str(path), {"kind": "pairs", "records": n,
                                                             "licence": "CC-BY-SA-4.0"})
    add_user(settings, "layla", "researcher", "layla-password")
    app = AppServer(settings, root / "server.log").start()
    yield app
    app.stop()


def curve_steps(page) -> list[int]:  # noqa: ANN001
    """The steps of the training-loss trace (the figure's first trace) as drawn in the page."""
    return page.evaluate("(sel) => { const p = document.querySelector(sel);"
                         " return p && p.data && p.data.length ? Array.from(p.data[0].x) : []; }", CURVE)


def wait_curve_longer(page, than: int, timeout_s: float = 60) -> list[int]:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        steps = curve_steps(page)
        if len(steps) > than:
            return steps
        page.wait_for_timeout(300)
    raise AssertionError(f"the loss curve did not grow past {than} points in {timeout_s}s")


def latest_train_job(settings) -> Job:  # noqa: ANN001
    with session_scope(settings.db_url) as s:
        return s.scalar(select(Job).where(Job.kind == "train").order_by(Job.id.desc()))


def test_train_watch_reload_stop_and_resume(server, page):
    login(page, server.url, "layla", "layla-password")
    open_tab(page, "Train")
    wait_text(page, "#train-datasets", DATASET)  # the translator preset picks the pairs export
    for field, value in (("max-steps", "400"), ("logging-steps", "2"), ("save-steps", "1000"), ("batch", "4"),
                         ("max-length", "128")):
        page.locator(f"#train-{field} input").fill(value)
    page.locator("#train-output input, #train-output textarea").first.fill(OUTPUT)
    page.locator("#train-show").click()
    wait_text(page, "#train-spec", "max_steps: 400")
    assert "hala run train.yaml --wait" in page.locator("#train-cli").inner_text()

    page.locator("#train-run").click()
    wait_text(page, "#train-job", "running", timeout=60_000)
    job = latest_train_job(server.settings)
    assert (job.owner, job.spec["preset"], job.spec["max_steps"], job.spec["datasets"]) == (
        "layla", "translator", 400, [{"dataset": DATASET, "weight": 1.0}])
    assert (job.spec["per_device_train_batch_size"], job.spec["max_length"], job.spec["logging_steps"]) == (4, 128, 2)
    first = wait_curve_longer(page, 1)
    grown = wait_curve_longer(page, len(first))
    assert grown == sorted(grown)

    page.reload()  # the db remembers the run: the page re-attaches and the curve keeps growing
    open_tab(page, "Train")
    wait_text(page, "#train-job", f"job {job.id}")
    after_reload = wait_curve_longer(page, 0)
    assert len(after_reload) >= len(grown)
    wait_curve_longer(page, len(after_reload))

    page.locator("#train-stop").click()
    wait_text(page, "#train-message", "saving a checkpoint")
    wait_text(page, "#train-job", "cancelled", timeout=60_000)
    with session_scope(server.settings.db_url) as s:
        old = s.get(Job, job.id)
        assert old.status == "cancelled", old.error
        points = [a for a in s.scalars(select(Artifact).where(Artifact.job_id == job.id)) if a.meta.get("checkpoint")]
    assert len(points) == 1, [a.name for a in points]
    stop_step = points[0].meta["step"]
    assert points[0].name == f"{OUTPUT}-step{stop_step}" and 0 < stop_step < 400
    wait_text(page, "#train-result", points[0].name)
    stopped = curve_steps(page)
    assert stopped and max(stopped) <= stop_step

    page.wait_for_function("(name) => document.querySelector('#train-resume-checkpoint input').value === name",
                           arg=points[0].name)
    page.locator("#train-resume-max-steps input").fill(str(stop_step + 10))
    page.locator("#train-resume").click()
    wait_text(page, "#train-message", f"resumes job {job.id}")
    new = latest_train_job(server.settings)
    assert new.id != job.id and new.resume_of_id == job.id and new.spec["resume_from"] == points[0].name
    wait_text(page, "#train-job", f"job {new.id}")
    wait_text(page, "#train-job", "succeeded", timeout=120_000)
    with session_scope(server.settings.db_url) as s:
        done = s.get(Job, new.id)
        assert (done.status, done.owner, done.progress_done) == ("succeeded", "layla", stop_step + 10), done.error
        assert done.result["steps"] == stop_step + 10
    wait_text(page, "#train-result", "final loss")

    # one curve: the old run up to the checkpoint, then the new job's steps, none twice and no gap
    last_logged = (stop_step + 10) // 2 * 2  # the loss is logged every 2 steps
    page.wait_for_function("([sel, last]) => { const p = document.querySelector(sel);"
                           " return !!p && !!p.data && Array.from(p.data[0].x).includes(last); }",
                           arg=[CURVE, last_logged])
    steps = curve_steps(page)
    assert steps == sorted(set(steps)), steps
    old_part = [x for x in steps if x <= stop_step]
    new_part = [x for x in steps if x > stop_step]
    assert old_part == [x for x in stopped if x <= stop_step]
    assert new_part and new_part[0] <= stop_step + 2 and new_part[-1] == last_logged
    assert all(b - a <= 2 for a, b in zip(steps, steps[1:], strict=False)), steps
