"""The database layer on a real SQLite file and a real PostgreSQL database (``HALA_TEST_PG_URL``): connection
settings, migrations, users, artifacts and lineage."""

from __future__ import annotations

import subprocess
import sys

import pytest
from sqlalchemy import select, text

from db.artifacts import lineage, register_artifact
from db.migrate import current_revision, head_revision, upgrade
from db.session import get_engine, session_scope
from db.users import add_user, authenticate, check_password, hash_password


def test_sqlite_connections_use_wal_busy_timeout_and_foreign_keys(workspace, db_backend):
    if db_backend != "sqlite":
        pytest.skip("SQLite pragmas")
    with get_engine(workspace.db_url).connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() >= 5000
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_postgresql_connections_are_read_committed_and_utf8(workspace, db_backend):
    if db_backend != "postgresql":
        pytest.skip("PostgreSQL settings")
    with get_engine(workspace.db_url).connect() as conn:
        assert conn.execute(text("SHOW transaction_isolation")).scalar() == "read committed"
        assert conn.execute(text("SHOW server_encoding")).scalar() == "UTF8"


def test_workspace_is_at_head_and_upgrade_is_idempotent(workspace):
    assert current_revision(workspace.db_url) == head_revision(workspace.db_url) is not None
    before, after = upgrade(workspace.db_url)
    assert before == after == head_revision(workspace.db_url)


def test_hala_db_upgrade_on_an_empty_database(tmp_path, empty_db_url):
    url = empty_db_url
    assert current_revision(url) is None
    env = {"HALA_HOME": str(tmp_path / "home"), "HALA_DB_URL": url, "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "workbench.cli", "db", "upgrade"], env=env, capture_output=True,
                         text=True, check=True)
    assert f"empty → {head_revision(url)}" in out.stdout
    assert current_revision(url) == head_revision(url)


def test_foreign_keys_are_enforced(workspace):
    from db.models import Metric

    with pytest.raises(Exception, match="(?i)foreign key"):
        with session_scope(workspace.db_url) as s:
            s.add(Metric(job_id=999, key="loss", value=1.0))


def test_passwords_are_hashed_with_a_kdf_and_checked(workspace):
    h = hash_password("correct horse")
    assert h.startswith("scrypt$") and "correct horse" not in h
    assert check_password("correct horse", h) and not check_password("wrong", h)
    with session_scope(workspace.db_url) as s:
        add_user(s, "amal", "annotator", "s3cret-pass")
    with session_scope(workspace.db_url) as s:
        assert authenticate(s, "amal", "s3cret-pass").role == "annotator"
        assert authenticate(s, "amal", "nope") is None
        with pytest.raises(ValueError, match="roles are: admin, researcher, annotator"):
            add_user(s, "bob", "boss", "password1")
        with pytest.raises(ValueError, match="already exists"):
            add_user(s, "amal", "admin", "password1")
        with pytest.raises(ValueError, match="at least 8"):
            add_user(s, "carl", "admin", "short")


def test_artifact_lineage_walks_every_ancestor(workspace):
    with session_scope(workspace.db_url) as s:
        teacher = register_artifact(s, "model", "teacher", "/m/teacher")
        fp8 = register_artifact(s, "model", "teacher-fp8", "/m/fp8", inputs=[teacher.id])
        pairs = register_artifact(s, "dataset", "pairs", "/d/pairs", inputs=[fp8.id])
        base = register_artifact(s, "model", "base", "/m/base")
        translator = register_artifact(s, "model", "translator", "/m/tr", inputs=[base.id, pairs.id])
        chain = lineage(s, translator.id)
    names = {(c["name"], c["depth"]) for c in chain}
    assert names == {("base", 1), ("pairs", 1), ("teacher-fp8", 2), ("teacher", 3)}


def test_register_artifact_twice_updates_instead_of_duplicating(workspace):
    with session_scope(workspace.db_url) as s:
        a = register_artifact(s, "model", "m", "/one", {"x": 1})
        b = register_artifact(s, "model", "m", "/two", {"x": 2})
        assert a.id == b.id and b.path == "/two" and b.meta == {"x": 2}
        with pytest.raises(ValueError, match="kinds: model, dataset, report"):
            register_artifact(s, "weights", "m", "/x")


def test_eval_results_round_trip_and_latest_scores(workspace):
    from db.evals import latest_scores, record_eval, samples_for
    from hala_core.specs import SleepSpec
    from jobs.queue import enqueue

    with session_scope(workspace.db_url) as s:
        j1, j2 = enqueue(s, SleepSpec()).id, enqueue(s, SleepSpec()).id
        model = register_artifact(s, "model", "m", "/m", {"parameters": 1_200_000_000})
        row = {"benchmark": "exams_ar", "task": "exams_ar", "metric": "acc", "value": 0.25, "n_samples": 2}
        record_eval(s, j1, "m", model.id, [row], [{"benchmark": "exams_ar", "task": "exams_ar", "doc_id": i,
                                                   "prompt": "س", "choices": ["أ", "ب"], "response": [-1.0, -2.0],
                                                   "target": "0", "correct": i == 0} for i in range(2)])
        record_eval(s, j2, "m", model.id, [{**row, "value": 0.5}], [])
        with pytest.raises(ValueError, match="without metric"):
            record_eval(s, j2, "m", None, [{"benchmark": "b", "task": "t", "value": 1.0}], [])
    with session_scope(workspace.db_url) as s:
        [latest] = latest_scores(s)
        assert (latest["value"], latest["job_id"], latest["model_meta"]["parameters"]) == (0.5, j2, 1_200_000_000)
        assert [x["correct"] for x in samples_for(s, "m", "exams_ar", job_id=j1)] == [True, False]


def test_conversations_votes_and_win_rates(workspace):
    from db.chat import record_vote, save_conversation, win_rates

    with session_scope(workspace.db_url) as s:
        cid = save_conversation(s, None, "layla", "arena", ["base", "tuned"], None, {},
                                {"base": [{"role": "user", "content": "مرحبا"}]})
        assert save_conversation(s, cid, "layla", "arena", ["base", "tuned"], None, {}, {}) == cid
        assert save_conversation(s, cid, "someone-else", "arena", ["base"], None, {}, {}) != cid
        for winner in ("tuned", "tuned", "base", "tie"):
            record_vote(s, cid, "layla", "مرحبا", ["base", "tuned"], winner)
        with pytest.raises(ValueError, match="choose one of base, tuned, tie, all bad"):
            record_vote(s, cid, "layla", "x", ["base", "tuned"], "merged")
        [pair] = win_rates(s)
    assert (pair["model_a"], pair["battles"], pair["wins_a"], pair["wins_b"], pair["ties"]) == ("base", 4, 1, 2, 1)
    assert pair["win_rate_b"] == 0.5


def test_paths_inside_symlinked_roots_are_allowed(tmp_path):
    from hala_core.settings import resolve_inside

    real = tmp_path / "real"
    (real / "data").mkdir(parents=True)
    (tmp_path / "link").symlink_to(real)
    f = tmp_path / "link" / "data" / "x.txt"
    f.write_text("x")
    assert resolve_inside(f, [tmp_path / "link" / "data"]) == (real / "data" / "x.txt")
    with pytest.raises(ValueError, match="outside the allowed folders"):
        resolve_inside(tmp_path / "elsewhere.txt", [tmp_path / "link" / "data"])


def test_long_whitespace_between_segments_round_trips(workspace):
    """A segment's separator is unbounded whitespace (PostgreSQL refuses what does not fit a VARCHAR(n))."""
    from db.corpora import import_corpus, row_texts
    from db.models import CorpusRow
    from hala_core.corpus import Field, Record, plan_rows

    text = "First sentence here." + " " * 250 + "Second sentence." + "\n" * 300 + "Third one."
    planned = plan_rows([Record(1, "alpaca", [Field("instruction", "user", text)])], max_tokens=5)
    assert max(len(p.sep) for _, pieces in planned[0].fields for p in pieces) == 300
    stats = import_corpus(workspace.db_url, "gaps", planned, source="gaps.jsonl", format="jsonl",
                          source_lang="en", licence="x" * 300, max_tokens=5)
    assert stats["segments"] == 3 and stats["licence"] == "x" * 100
    with session_scope(workspace.db_url) as s:
        row_id = s.scalar(select(CorpusRow.id))
        assert row_texts(s, row_id)[0]["text"] == text


def test_eval_job_models_keep_the_order_they_were_recorded_in(workspace):
    from db.evals import eval_job_models, record_eval
    from hala_core.specs import SleepSpec
    from jobs.queue import enqueue

    with session_scope(workspace.db_url) as s:
        job = enqueue(s, SleepSpec()).id
        for model in ("zeta", "alpha", "mid"):
            record_eval(s, job, model, None, [{"benchmark": "b", "task": "t", "metric": "acc", "value": 1.0}], [])
        assert eval_job_models(s, job) == ["zeta", "alpha", "mid"]


def test_processes_upgrading_an_empty_database_at_once_upgrade_it_once(tmp_path, empty_db_url):
    """The app and its workers start together and each upgrades the schema on start: one does, the others wait
    and find it done (a file lock on SQLite, an advisory lock on PostgreSQL)."""
    url = empty_db_url
    env = {"HALA_HOME": str(tmp_path / "home"), "HALA_DB_URL": url, "PATH": "/usr/bin:/bin"}
    procs = [subprocess.Popen([sys.executable, "-m", "workbench.cli", "db", "upgrade"], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err for _, err in outs]
    assert sum(f"empty → {head_revision(url)}" in out for out, _ in outs) == 1, outs
    assert current_revision(url) == head_revision(url)
