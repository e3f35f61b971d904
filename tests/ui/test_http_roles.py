"""The running workbench over plain HTTP: roles are enforced on the server, and bad merges are refused
before anything is queued."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from db.models import Job
from db.session import session_scope
from tests.support.app_server import AppServer, add_user, make_workspace

pytestmark = pytest.mark.slow

MERGE_ARGS = ["demo-lfm2-a", "demo-lfm2-b", "single t", 0.5, "0, 1", "float32"]


@pytest.fixture(scope="module")
def server(tmp_path_factory, demo_models_dir):  # noqa: ANN001, ANN201
    from hala_core.demo_models import build_demo_model

    root = tmp_path_factory.mktemp("http")
    wide = build_demo_model(root / "wide", seed=3, hidden_size=128)
    settings = make_workspace(root / "home", {**demo_models_dir, "demo-wide": wide})
    add_user(settings, "layla", "researcher", "layla-password")
    add_user(settings, "amal", "annotator", "amal-password")
    app = AppServer(settings, root / "server.log").start()
    yield app
    app.stop()


def _jobs(settings) -> int:  # noqa: ANN001
    with session_scope(settings.db_url) as s:
        return s.scalar(select(func.count(Job.id)))


def test_annotator_calling_the_merge_endpoint_is_refused(server):
    before = _jobs(server.settings)
    amal = server.login("amal", "amal-password")
    event, data = server.call(amal, "merge", [*MERGE_ARGS, "sneaky-merge"])
    assert event == "error"
    message = json.loads(data)["error"]
    assert "amal is annotator" in message and "admin or researcher" in message
    assert _jobs(server.settings) == before


def test_no_login_no_api(server):
    import requests

    r = requests.post(f"{server.url}/gradio_api/call/merge", json={"data": [*MERGE_ARGS, "x"]}, timeout=10)
    assert r.status_code == 401


def test_wrong_password_is_refused(server):
    import requests

    r = requests.post(server.url + "/login", data={"username": "amal", "password": "nope"}, timeout=10)
    assert r.status_code == 400 or not r.json().get("success")


@pytest.mark.parametrize(("base", "model", "t", "expected"), [
    ("demo-lfm2-a", "no-such-model", 0.5, "is not a model artifact, an existing folder or a hub id"),
    ("demo-lfm2-a", "demo-wide", 0.5, "vs"),
    ("demo-lfm2-a", "/etc", 0.5, "outside the allowed folders"),
    ("demo-lfm2-a", "LiquidAI/LFM2-350M", 0.5, "hub"),
])
def test_bad_merges_are_refused_before_queueing(server, base, model, t, expected):
    before = _jobs(server.settings)
    layla = server.login("layla", "layla-password")
    event, data = server.call(layla, "merge", [base, model, "single t", t, "0, 1", "float32", "bad-merge"])
    assert event == "error", data
    assert expected in json.loads(data)["error"]
    assert _jobs(server.settings) == before


def test_researcher_can_queue_a_merge(server):
    layla = server.login("layla", "layla-password")
    event, data = server.call(layla, "merge", [*MERGE_ARGS, "http-merge"])
    assert event == "complete", data
    with session_scope(server.settings.db_url) as s:
        job = s.scalar(select(Job).where(Job.kind == "merge").order_by(Job.id.desc()))
    assert job.owner == "layla" and job.spec["output"] == "http-merge" and job.spec["t"] == 0.5


def test_runs_actions_check_roles_and_ownership_on_the_server(server):
    from hala_core.specs import SleepSpec
    from jobs.queue import enqueue

    with session_scope(server.settings.db_url) as s:
        theirs = enqueue(s, SleepSpec(seconds=60, steps=60), owner="someone-else").id
    layla = server.login("layla", "layla-password")
    amal = server.login("amal", "amal-password")

    event, data = server.call(layla, "cancel_job", [theirs])
    assert event == "error" and "belongs to someone-else" in json.loads(data)["error"]
    event, data = server.call(amal, "retry_job", [theirs])
    assert event == "error" and "annotator" in json.loads(data)["error"]

    spec = "kind: sleep\nseconds: 0.5\nsteps: 2\n"
    event, data = server.call(layla, "clone_job", [theirs, spec])
    assert event == "complete", data
    with session_scope(server.settings.db_url) as s:
        clone = s.scalar(select(Job).order_by(Job.id.desc()))
        assert (clone.parent_id, clone.owner, clone.spec["seconds"]) == (theirs, "layla", 0.5)
    event, data = server.call(layla, "clone_job", [theirs, "kind: sleep\nseconds: -3\n"])
    assert event == "error" and "seconds" in json.loads(data)["error"]
