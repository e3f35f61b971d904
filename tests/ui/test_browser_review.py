"""The Review tab in headless Chromium: English left (LTR), Arabic right (RTL, editable), keyboard saves."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from db.models import Translation
from db.session import read_scope
from tests.support.app_server import AppServer, add_user, make_workspace
from tests.support.corpus import translated_corpus
from tests.ui.test_browser import login, open_tab, wait_text

pytestmark = [pytest.mark.slow, pytest.mark.browser]

EDIT = "ترجمة منقّحة بعناية: الجمعية الوطنية في ويلز"


@pytest.fixture(scope="module")
def review_server(tmp_path_factory, demo_models_dir):  # noqa: ANN001, ANN201
    root = tmp_path_factory.mktemp("review")
    settings = make_workspace(root / "home", demo_models_dir)
    translated_corpus(settings, limit=12)
    add_user(settings, "amal", "annotator", "amal-password")
    app = AppServer(settings, root / "server.log").start()
    yield app
    app.stop()


def direction_of(page, selector: str) -> str:  # noqa: ANN001
    return page.evaluate("(sel) => getComputedStyle(document.querySelector(sel)).direction", selector)


def test_annotator_edits_and_accepts_with_the_keyboard_and_the_edit_survives_a_reload(review_server, page):
    login(page, review_server.url, "amal", "amal-password")
    open_tab(page, "Review")
    wait_text(page, "#review-source", "Welsh AMs")  # the first NTREX line, handed out to amal
    assert direction_of(page, "#review-source .review-source") == "ltr"
    target = page.locator("#review-target textarea")
    assert direction_of(page, "#review-target textarea") == "rtl"
    wait_text(page, "#review-meta", "status: unreviewed")
    first_id = int(page.evaluate("() => document.querySelector('#review-meta b').innerText.slice(1)"))

    target.fill(EDIT)
    page.keyboard.press("Alt+a")
    wait_text(page, "#review-message", f"saved #{first_id}: edited")
    wait_text(page, "#review-recent", EDIT[:10])
    # the next segment is on screen now, not the saved one
    assert f"#{first_id} " not in page.locator("#review-meta").inner_text()

    # reject the next one with the keyboard too
    second_meta = page.locator("#review-meta").inner_text()
    second_id = int(second_meta.split()[0].lstrip("#"))
    page.keyboard.press("Alt+r")
    wait_text(page, "#review-message", f"saved #{second_id}: rejected")

    page.reload()
    open_tab(page, "Review")
    wait_text(page, "#review-recent", EDIT[:10])
    wait_text(page, "#review-recent", "reject")
    with read_scope(review_server.settings.db_url) as s:
        t = s.get(Translation, first_id)
        assert (t.status, t.final_text, t.reviewed_by, t.version) == ("edited", EDIT, "amal", 1)
        assert s.get(Translation, second_id).status == "rejected"
        claimed = s.scalars(select(Translation.id).where(Translation.claimed_by == "amal")).all()
    # after the reload amal still holds exactly one claim: the segment on screen
    shown = int(page.locator("#review-meta").inner_text().split()[0].lstrip("#"))
    assert claimed == [shown] and shown not in (first_id, second_id)
