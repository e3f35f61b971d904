"""Two annotators on one review queue: leases, optimistic locking, history, double annotation and queue modes.

The translations are written straight through the job's store (no model): review mechanics do not depend on
what the translator wrote. Each test runs on SQLite and on PostgreSQL (``HALA_TEST_PG_URL``, see
tests/support/workspace.py), where claims and saves really run concurrently under READ COMMITTED."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from sacrebleu.metrics import CHRF
from sqlalchemy import select

from db import review
from db.models import Translation
from db.session import read_scope, session_scope
from tests.corpus.conftest import NTREX, ROOT, make_run, needs_data, run_translations
from workbench import corpus_ops

pytestmark = needs_data


@pytest.fixture
def queue200(workspace):
    """NTREX, first 200 lines, with a hand-made translation of every segment: (settings, run id)."""
    corpus_ops.import_file(workspace, str(NTREX), "ntrex200", limit=200)
    return workspace, make_run(workspace, "ntrex200")


def _claim_and_accept(url: str, run_id: int, user: str, mode: str = "next") -> int | None:
    with session_scope(url) as s:
        tid = review.claim_next(s, run_id, user, mode)
    if tid is None:
        return None
    with session_scope(url) as s:
        version = review.item(s, tid)["version"]
        review.save(s, tid, user, "accept", version)
    return tid


def test_two_threads_hammering_claim_next_never_share_an_item(queue200):
    settings, run_id = queue200
    claims: dict[str, list[int]] = {"ann-a": [], "ann-b": []}
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def annotator(user: str) -> None:
        try:
            start.wait()
            while (tid := _claim_and_accept(settings.db_url, run_id, user)) is not None:
                claims[user].append(tid)
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=annotator, args=(u,)) for u in claims]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    a, b = claims["ann-a"], claims["ann-b"]
    assert len(a) == len(set(a)) and len(b) == len(set(b)), "nobody got one item twice"
    assert not set(a) & set(b), f"handed to both: {sorted(set(a) & set(b))}"
    all_ids = {t.id for t in run_translations(settings, run_id)}
    assert set(a) | set(b) == all_ids and len(all_ids) == 200
    assert a and b, "both annotators got work"
    reviewed = {t.id: t.reviewed_by for t in run_translations(settings, run_id)}
    assert all(reviewed[i] == "ann-a" for i in a) and all(reviewed[i] == "ann-b" for i in b)


def test_concurrent_saves_of_one_item_one_wins_and_the_others_get_a_conflict(queue200):
    """Four annotators save the item they all saw at version 0 at the same moment: one save is written, the other
    three get :class:`ReviewConflict` (on PostgreSQL they wait for the winner's row lock, then fail the version
    check; on SQLite the write lock runs them one at a time)."""
    settings, run_id = queue200
    url = settings.db_url
    with session_scope(url) as s:
        tid = review.claim_next(s, run_id, "ann-0")
    users = [f"ann-{i}" for i in range(4)]
    start = threading.Barrier(len(users))
    outcome: dict[str, str] = {}

    def save(user: str) -> None:
        try:
            start.wait()
            with session_scope(url) as s:
                review.save(s, tid, user, "edit", 0, text=f"نص {user}")
            outcome[user] = "saved"
        except review.ReviewConflict:
            outcome[user] = "conflict"
        except BaseException as e:  # surfaced below
            outcome[user] = repr(e)

    threads = [threading.Thread(target=save, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(outcome.values()) == ["conflict"] * 3 + ["saved"], outcome
    [winner] = [u for u, o in outcome.items() if o == "saved"]
    with read_scope(url) as s:
        now = review.item(s, tid)
        hist = review.history(s, tid)
    assert (now["version"], now["text"], now["reviewed_by"]) == (1, f"نص {winner}", winner)
    assert [(h["who"], h["version"]) for h in hist] == [(winner, 1)]


def test_annotators_taking_over_expired_leases_never_deadlock_or_error(queue200):
    """Six annotators with leases that run out at once (``lease_s=0``), switching queue modes, so every claim can
    take over another's segment while they release theirs: no claim or save errors (on PostgreSQL, waiting to
    release a segment another annotator is taking over deadlocked), and every save is counted once."""
    settings, run_id = queue200
    url = settings.db_url
    errors: list[str] = []
    saved: dict[str, list[int]] = {}
    start = threading.Barrier(6)

    def annotator(user: str, seed: int) -> None:
        rnd = random.Random(seed)
        mine = saved.setdefault(user, [])
        try:
            start.wait()
            for _ in range(60):
                with session_scope(url) as s:
                    tid = review.claim_next(s, run_id, user, rnd.choice(["next", "random", "flagged"]), lease_s=0)
                if tid is None:
                    return
                if rnd.random() < 0.25:
                    try:
                        with session_scope(url) as s:
                            review.save(s, tid, user, "accept", review.item(s, tid)["version"])
                        mine.append(tid)
                    except review.ReviewConflict:
                        pass
        except BaseException as e:  # surfaced below
            errors.append(f"{user}: {e!r}"[:400])

    threads = [threading.Thread(target=annotator, args=(f"ann-{i}", i)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    assert not errors, errors
    # with leases of 0 s two annotators may both get an item and both save it (each on the version they saw):
    # every save is one version and one history event, none lost
    saves = Counter(tid for got in saved.values() for tid in got)
    assert saves
    by_id = {t.id: t for t in run_translations(settings, run_id)}
    assert all(by_id[tid].status == "accepted" and by_id[tid].version == n for tid, n in saves.items())
    with read_scope(url) as s:
        assert all(len(review.history(s, tid)) == n for tid, n in saves.items())


CLAIMER = """
import json, sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
from db import review
from db.session import session_scope
url, run_id, user, n, go = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), Path(sys.argv[5])
while not go.exists():
    time.sleep(0.005)
ids = []
for _ in range(n):
    with session_scope(url) as s:
        tid = review.claim_next(s, run_id, user)
    if tid is None:
        break
    with session_scope(url) as s:
        review.save(s, tid, user, "accept", review.item(s, tid)["version"])
    ids.append(tid)
print(json.dumps(ids))
"""


@pytest.mark.slow
def test_two_processes_claim_50_each_and_never_share_an_item(queue200, tmp_path: Path):
    settings, run_id = queue200
    script = tmp_path / "claimer.py"
    script.write_text(CLAIMER.format(root=str(ROOT)))
    go = tmp_path / "go"
    procs = {user: subprocess.Popen([sys.executable, str(script), settings.db_url, str(run_id), user, "50", str(go)],
                                    cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for user in ("proc-a", "proc-b")}
    time.sleep(1.0)  # both interpreters up and waiting
    go.touch()
    got = {}
    for user, p in procs.items():
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        got[user] = json.loads(out.strip().splitlines()[-1])
    a, b = got["proc-a"], got["proc-b"]
    assert len(a) == 50 and len(set(a)) == 50
    assert len(b) == 50 and len(set(b)) == 50
    assert not set(a) & set(b), f"handed to both processes: {sorted(set(a) & set(b))}"
    by_id = {t.id: t for t in run_translations(settings, run_id)}
    assert all(by_id[i].reviewed_by == "proc-a" and by_id[i].status == "accepted" for i in a)
    assert all(by_id[i].reviewed_by == "proc-b" and by_id[i].status == "accepted" for i in b)
    assert Counter(t.status for t in by_id.values()) == {"accepted": 100, "unreviewed": 100}


def test_stale_save_is_refused_and_history_keeps_both_edits_in_order(queue200):
    settings, run_id = queue200
    url = settings.db_url
    with session_scope(url) as s:
        tid = review.claim_next(s, run_id, "amira")
        seen_a = review.item(s, tid)
    with read_scope(url) as s:
        seen_b = review.item(s, tid)  # B opened the same item (e.g. from the history list) at the same version
    assert seen_a["version"] == seen_b["version"] == 0
    mt = seen_a["text"]
    text_a = "هذه ترجمة أميرة المعدلة"
    text_b = "هذه ترجمة بلال"
    with session_scope(url) as s:
        assert review.save(s, tid, "amira", "edit", seen_a["version"], text=text_a) == {"version": 1,
                                                                                          "status": "edited"}
    with pytest.raises(review.ReviewConflict) as err, session_scope(url) as s:
        review.save(s, tid, "bilal", "edit", seen_b["version"], text=text_b)
    msg = str(err.value)
    assert "amira" in msg and "nothing of yours was written" in msg
    assert err.value.current["text"] == text_a and err.value.current["version"] == 1
    with read_scope(url) as s:
        now = review.item(s, tid)
        assert now["text"] == text_a and now["status"] == "edited" and now["reviewed_by"] == "amira"
        assert [(h["who"], h["action"]) for h in review.history(s, tid)] == [("amira", "edit")]
    # B reloads and saves again on the fresh version
    with session_scope(url) as s:
        fresh = review.item(s, tid)
        review.save(s, tid, "bilal", "edit", fresh["version"], text=text_b)
    with read_scope(url) as s:
        hist = review.history(s, tid)
        final = review.item(s, tid)
    assert [(h["who"], h["action"], h["before"], h["after"], h["version"]) for h in hist] == [
        ("amira", "edit", mt, text_a, 1), ("bilal", "edit", text_a, text_b, 2)]
    assert final["text"] == text_b and final["version"] == 2 and final["mt"] == mt


def test_an_expired_lease_lets_another_annotator_claim_the_item(queue200):
    settings, run_id = queue200
    url = settings.db_url
    with session_scope(url) as s:
        first = review.claim_next(s, run_id, "amira", lease_s=1)
    with session_scope(url) as s:
        other = review.claim_next(s, run_id, "bilal", lease_s=60)
        again = review.claim_next(s, run_id, "amira", lease_s=1)
    assert other != first, "a live lease keeps the item away from others"
    assert again == first, "an annotator gets their own live claim back"
    time.sleep(1.3)
    with session_scope(url) as s:
        taken = review.claim_next(s, run_id, "chadi", lease_s=60)
        assert review.stale_claims(s, run_id) == 0  # chadi's claim replaced amira's stale one
    assert taken == first, "after the lease ran out the item goes to the next annotator"
    with read_scope(url) as s:
        assert review.item(s, first)["claimed_by"] == "chadi"
    with session_scope(url) as s:
        assert review.claim_next(s, run_id, "amira", lease_s=60) not in (first, other)


@pytest.fixture
def small_double(workspace):
    """Six rows, every translation in the double-annotation sample."""
    corpus_ops.import_file(workspace, str(NTREX), "ntrex6", limit=6)
    run_id = make_run(workspace, "ntrex6", double_share=1.0)
    return workspace, run_id


def test_double_annotation_second_opinions_and_agreement(small_double):
    settings, run_id = small_double
    url = settings.db_url
    items = run_translations(settings, run_id)
    assert len(items) == 6 and all(t.double for t in items)
    ids = [t.id for t in items]
    edit_a, edit_b = "الترجمة التي كتبتها أميرة للجملة الثانية", "الترجمة التي كتبها بلال للجملة الثانية"
    # amira reviews items 1-4, bilal items 5-6 (first opinions)
    first = {ids[0]: ("accept", None), ids[1]: ("edit", edit_a), ids[2]: ("accept", None), ids[3]: ("reject", None)}
    with session_scope(url) as s:
        for tid, (action, text) in first.items():
            review.save(s, tid, "amira", action, 0, text=text)
        for tid in ids[4:]:
            review.save(s, tid, "bilal", "accept", 0)
    # nobody is asked for a second opinion on their own decisions
    with session_scope(url) as s:
        assert review.claim_next(s, run_id, "amira", "second") == ids[4]
        review.release(s, ids[4], "amira")
    # bilal's second opinions: agree on items 1-2 (accept), disagree on 3 (he rejects) and 4 (he accepts)
    second = {ids[0]: ("accept", None), ids[1]: ("edit", edit_b), ids[2]: ("reject", None), ids[3]: ("accept", None)}
    handed = []
    with session_scope(url) as s:
        while (tid := review.claim_next(s, run_id, "bilal", "second")) is not None:
            handed.append(tid)
            action, text = second[tid]
            review.save(s, tid, "bilal", action, review.item(s, tid)["version"], text=text, second=True)
    assert handed == ids[:4], "bilal gets amira's decisions, never his own (items 5-6)"
    with read_scope(url) as s:
        agree = review.agreement(s, run_id)
        prog = review.progress(s, run_id)
        mt0 = review.item(s, ids[0])["mt"]
        # the second opinion does not change the first decision
        assert review.item(s, ids[2])["status"] == "accepted" and review.item(s, ids[3])["status"] == "rejected"
        assert review.history(s, ids[1])[-1]["action"] == "edit (second opinion)"
    # by hand: labels A = [acc, acc, acc, rej], B = [acc, acc, rej, acc]; p_o = 2/4; p_e = (3·3 + 1·1)/16
    p_o, p_e = 2 / 4, (3 * 3 + 1 * 1) / 16
    assert agree["items"] == 4 and agree["raw_agreement"] == pytest.approx(0.5)
    assert agree["kappa"] == pytest.approx((p_o - p_e) / (1 - p_e)) == pytest.approx(-1 / 3)
    # chrF++ between the two versions where both kept a text: item 1 (both accepted the MT) and item 2 (edits)
    assert agree["pairs_with_text"] == 2
    expected = CHRF(word_order=2).corpus_score([mt0, edit_b], [[mt0, edit_a]]).score
    assert agree["chrf_between_edits"] == pytest.approx(expected)
    assert 0 < agree["chrf_between_edits"] < 100
    assert prog["double_total"] == 6 and prog["double_done"] == 4


def test_second_mode_does_not_hand_back_an_unreviewed_claim(small_double):
    """A live claim taken in "next" mode is an unreviewed item: "second" mode must not return it as a second
    opinion (it would record a second opinion on an item nobody reviewed first)."""
    settings, run_id = small_double
    ids = [t.id for t in run_translations(settings, run_id)]
    with session_scope(settings.db_url) as s:
        review.save(s, ids[0], "amira", "accept", 0)
        held = review.claim_next(s, run_id, "bilal", "next")  # bilal starts in the normal queue…
        assert held == ids[1]
        second = review.claim_next(s, run_id, "bilal", "second")  # …then switches to second opinions
    assert second == ids[0], f"second-opinion mode handed out {second} (bilal's unreviewed claim {held})"


def test_flagged_mode_hands_out_failed_items_first_and_random_mode_follows_order_key(workspace):
    corpus_ops.import_file(workspace, str(NTREX), "ntrex30", limit=30)
    run_id = make_run(workspace, "ntrex30", flagged=lambda i: i % 4 == 1)
    items = run_translations(workspace, run_id)
    failed = [t.id for t in items if not t.passed]
    passed = [t.id for t in items if t.passed]
    assert len(failed) == 8 and all(t.flags == "wrong_script" for t in items if not t.passed)
    got = [_claim_and_accept(workspace.db_url, run_id, "qa", "flagged") for _ in range(12)]
    assert got[:8] == failed, "flagged items first, in order"
    assert got[8:] == passed[:4], "then the rest of the queue"
    # random QA mode walks the remaining items in order_key order, not in id order
    rest = [t for t in run_translations(workspace, run_id) if t.status == "unreviewed"]
    expected = [t.id for t in sorted(rest, key=lambda t: t.order_key)]
    got_random = []
    while (tid := _claim_and_accept(workspace.db_url, run_id, "qa", "random")) is not None:
        got_random.append(tid)
    assert got_random == expected
    assert got_random != sorted(got_random), "the QA sample is shuffled"
    with read_scope(workspace.db_url) as s:
        assert review.progress(s, run_id)["by_status"] == {"accepted": 30}
        assert s.scalar(select(Translation.id).where(Translation.run_id == run_id,
                                                     Translation.claimed_by.is_not(None))) is None


# --------------------------------------------------------------------------- the same, through the running app

@pytest.fixture(scope="module")
def app(tmp_path_factory):
    from tests.support.app_server import AppServer, add_user, make_workspace

    root = tmp_path_factory.mktemp("review-app")
    settings = make_workspace(root / "home", {})
    corpus_ops.import_file(settings, str(NTREX), "ntrex30", limit=30)
    make_run(settings, "ntrex30", double_share=1.0)
    for name in ("amal", "badr"):
        add_user(settings, name, "annotator", f"{name}-password")
    server = AppServer(settings, root / "server.log").start()
    server.run_key = "ntrex30/mt"
    yield server
    server.stop()


def _http(server, session, api: str, data: list) -> list:
    event, payload = server.call(session, api, data)
    assert event == "complete", (api, event, payload)
    return json.loads(payload)


def _text(update) -> str | None:
    return update.get("value") if isinstance(update, dict) else update


@pytest.mark.slow
def test_two_annotators_over_http_never_share_an_item_and_second_opinions_go_to_the_other(app):
    sessions = {name: app.login(name, f"{name}-password") for name in ("amal", "badr")}
    got: dict[str, list[int]] = {name: [] for name in sessions}
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def annotate(name: str, mode: str) -> None:
        try:
            sess = sessions[name]
            start.wait()
            out = _http(app, sess, "review_next", [app.run_key, mode])
            while out[0] is not None:
                tid = int(out[0])
                got[name].append(tid)
                out = _http(app, sess, "review_accept", [app.run_key, mode, tid, out[1], _text(out[3]), ""])
                assert f"saved #{tid}: accepted" in out[7], out[7]
        except BaseException as e:  # surfaced below
            errors.append(e)

    def both(mode: str) -> None:
        threads = [threading.Thread(target=annotate, args=(n, mode)) for n in sessions]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors, errors

    both("next")
    first = {name: list(ids) for name, ids in got.items()}
    a, b = first["amal"], first["badr"]
    assert a and b and not set(a) & set(b)
    with read_scope(app.settings.db_url) as s:
        run = review.resolve_run(s, app.run_key)
        all_ids = set(s.scalars(select(Translation.id).where(Translation.run_id == run.id)))
        assert review.progress(s, run.id)["by_status"] == {"accepted": 30}
    assert set(a) | set(b) == all_ids and len(a) + len(b) == 30

    # second opinions: each annotator is handed exactly the other's decisions
    for ids in got.values():
        ids.clear()
    both("second")
    assert sorted(got["amal"]) == sorted(b) and sorted(got["badr"]) == sorted(a)
    with read_scope(app.settings.db_url) as s:
        agree = review.agreement(s, run.id)
        prog = review.progress(s, run.id)
    assert prog["double_done"] == 30 and agree["items"] == 30 and agree["raw_agreement"] == 1.0
    assert agree["kappa"] == 1.0  # one label throughout on both sides
