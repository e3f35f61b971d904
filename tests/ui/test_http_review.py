"""Two annotators in two real HTTP sessions against the running app: leases, a stale save, the history."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import update

from db import review
from db.models import Translation, utcnow
from db.session import read_scope, session_scope
from tests.support.app_server import AppServer, add_user, make_workspace
from tests.support.corpus import translated_corpus

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def app(tmp_path_factory, demo_models_dir):  # noqa: ANN001, ANN201
    root = tmp_path_factory.mktemp("review-http")
    settings = make_workspace(root / "home", demo_models_dir)
    app = AppServer(settings, root / "server.log")
    app.run_key = translated_corpus(settings, limit=10)
    for name in ("amal", "badr"):
        add_user(settings, name, "annotator", f"{name}-password")
    add_user(settings, "reader", "researcher", "reader-password")
    yield app.start()
    app.stop()


def call(app: AppServer, session, api: str, data: list) -> list:  # noqa: ANN001
    event, payload = app.call(session, api, data)
    assert event == "complete", (event, payload)
    return json.loads(payload)


def test_two_annotators_never_share_a_segment_and_a_stale_save_is_refused(app):
    amal = app.login("amal", "amal-password")
    badr = app.login("badr", "badr-password")
    a = call(app, amal, "review_next", [app.run_key, "next"])
    b = call(app, badr, "review_next", [app.run_key, "next"])
    a_id, a_ver, b_id = a[0], a[1], b[0]
    assert a_id and b_id and a_id != b_id and a_ver == 0
    # asking again hands amal the segment she already holds, not a new one
    assert call(app, amal, "review_next", [app.run_key, "next"])[0] == a_id

    # amal's lease runs out (she went for coffee); badr is handed her segment and saves an edit
    with session_scope(app.settings.db_url) as s:
        s.execute(update(Translation).where(Translation.id == a_id).values(claim_expires=utcnow()))
        s.execute(update(Translation).where(Translation.id == b_id).values(claimed_by=None, claim_expires=None))
    b2 = call(app, badr, "review_next", [app.run_key, "next"])
    assert b2[0] == a_id
    out = call(app, badr, "review_accept", [app.run_key, "next", a_id, b2[1], "نص بدر", ""])
    assert f"saved #{a_id}: edited" in out[7]

    # amal comes back and saves on the version she was shown: refused, and her text is not written
    out = call(app, amal, "review_accept", [app.run_key, "next", a_id, a_ver, "نص أمل", ""])
    assert "conflict" in out[7] and "badr" in out[7] and "nothing of yours was written" in out[7]
    assert out[0] == a_id and out[1] == 1  # the segment stays on screen with badr's version
    with read_scope(app.settings.db_url) as s:
        assert s.get(Translation, a_id).final_text == "نص بدر"

    # she reapplies her change on the fresh version: now it lands, and the history has both edits
    out = call(app, amal, "review_accept", [app.run_key, "next", a_id, 1, "نص أمل", ""])
    assert f"saved #{a_id}: edited" in out[7]
    with read_scope(app.settings.db_url) as s:
        hist = review.history(s, a_id)
    assert [(h["who"], h["action"], h["before"], h["after"]) for h in hist] == [
        ("badr", "edit", hist[0]["before"], "نص بدر"), ("amal", "edit", "نص بدر", "نص أمل")]


def test_flagging_needs_a_reason_and_bad_modes_are_refused(app):
    amal = app.login("amal", "amal-password")
    a = call(app, amal, "review_next", [app.run_key, "next"])
    event, payload = app.call(amal, "review_flag", [app.run_key, "next", a[0], a[1], a[3] if isinstance(a[3], str)
                                                    else "", ""])
    assert event == "error" and "needs a reason" in payload
    out = call(app, amal, "review_flag", [app.run_key, "next", a[0], a[1], "", "names transliterated wrongly"])
    assert f"saved #{a[0]}: flagged" in out[7]
    # an unknown queue mode is refused with the list of modes
    event, payload = app.call(amal, "review_next", [app.run_key, "sideways"])
    assert event == "error" and "sideways" in payload and "'next', 'flagged', 'random', 'second'" in payload
