"""Bad input to corpus import (and to a translate job's pre-queue check), through the library and the CLI: a clear
message, exit code 2 on the command line, and nothing already imported or reviewed is lost."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from db import review
from db.artifacts import list_artifacts
from db.models import Segment
from db.session import read_scope, session_scope
from hala_core.settings import Settings
from jobs.precheck import precheck
from tests.corpus.conftest import ALPACA, cli, make_run, needs_data, run_translations, snapshot
from workbench import corpus_ops

pytestmark = needs_data

GOOD = [{"instruction": f"Say hello number {i}.", "input": "", "output": f"Hello {i}."} for i in range(5)]
ARABIC = [{"instruction": "ترجم الجملة التالية إلى الإنجليزية.", "input": "مرحبا بالعالم", "output": "Hello world"},
          {"instruction": "ما هي عاصمة مصر؟", "input": "", "output": "القاهرة"}]


@pytest.fixture
def ws(workspace: Settings) -> Settings:
    """A workspace that already holds work worth keeping: an imported corpus, a translation, review decisions."""
    corpus_ops.import_file(workspace, str(ALPACA), "kept", limit=10)
    run_id = make_run(workspace, "kept")
    ids = [t.id for t in run_translations(workspace, run_id)]
    with session_scope(workspace.db_url) as s:
        review.save(s, ids[0], "amira", "accept", 0)
        review.save(s, ids[1], "amira", "edit", 0, text="نص معدل يجب ألا يضيع")
        review.save(s, ids[2], "amira", "reject", 0)
    (workspace.home / "incoming").mkdir()
    return workspace


def _write(settings: Settings, name: str, lines: list[str] | bytes) -> Path:
    path = settings.home / "incoming" / name
    if isinstance(lines, bytes):
        path.write_bytes(lines)
    else:
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _jsonl(records: list[dict]) -> list[str]:
    return [json.dumps(r, ensure_ascii=False) for r in records]


def _refused(settings: Settings, path: Path, name: str, *cli_args: str, **kwargs) -> tuple[str, str]:
    """Import must fail in the library and on the command line, and leave the db as it was: (message, stderr)."""
    before = snapshot(settings)
    with pytest.raises(ValueError) as err:
        corpus_ops.import_file(settings, str(path), name, **kwargs)
    assert snapshot(settings) == before
    proc = cli(settings, "corpus", "import", str(path), "--name", name, *cli_args)
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    assert snapshot(settings) == before
    return str(err.value), proc.stderr


def _kept_intact(settings: Settings, before: dict) -> None:
    """What was there before an import that succeeded is still there, unchanged."""
    after = snapshot(settings)
    assert set(before["corpora"]) <= set(after["corpora"])
    for key in ("runs", "translations", "events", "jobs"):
        assert after[key] == before[key], key


@pytest.mark.slow
def test_malformed_json_line_aborts_with_its_line_number(ws):
    path = _write(ws, "broken.jsonl", _jsonl(GOOD[:2]) + ['{"instruction": "oops", "output": '] + _jsonl(GOOD[2:]))
    msg, stderr = _refused(ws, path, "broken")
    for text in (msg, stderr):
        assert "line 3" in text and "not valid JSON" in text and "skip" in text


def test_malformed_json_line_is_skipped_and_listed_with_on_error_skip(ws):
    path = _write(ws, "broken.jsonl", _jsonl(GOOD[:2]) + ['{"instruction": "oops", "output": '] + _jsonl(GOOD[2:]))
    before = snapshot(ws)
    stats = corpus_ops.import_file(ws, str(path), "broken", on_error="skip")
    assert stats["rows"] == 5 and stats["records skipped"] == 1
    assert len(stats["problems"]) == 1 and stats["problems"][0].startswith("line 3: not valid JSON")
    _kept_intact(ws, before)


@pytest.mark.slow
def test_skip_on_the_command_line_lists_the_skipped_record(ws):
    path = _write(ws, "broken.jsonl", _jsonl(GOOD[:2]) + ["not json at all"] + _jsonl(GOOD[2:]))
    proc = cli(ws, "corpus", "import", str(path), "--name", "broken-cli", "--on-error", "skip", "--json")
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout)
    assert stats["rows"] == 5 and stats["records skipped"] == 1 and stats["problems"][0].startswith("line 3")


@pytest.mark.slow
def test_a_cp1256_file_gets_a_clear_message_and_imports_with_its_encoding(ws):
    data = ("\n".join(_jsonl(ARABIC)) + "\n").encode("cp1256")
    path = _write(ws, "arabic.jsonl", data)
    msg, stderr = _refused(ws, path, "arabic", "--language", "ar", language="ar")
    for text in (msg, stderr):
        assert "not UTF-8" in text and "cp1256" in text and "line 1" in text
    before = snapshot(ws)
    stats = corpus_ops.import_file(ws, str(path), "arabic", encoding="cp1256", language="ar")
    assert stats["rows"] == 2 and stats["language"] == "ar"
    _kept_intact(ws, before)
    with read_scope(ws.db_url) as s:
        texts = set(s.scalars(Segment.__table__.select().with_only_columns(Segment.text)))
    assert {"ترجم الجملة التالية إلى الإنجليزية.", "مرحبا بالعالم", "القاهرة"} <= texts
    proc = cli(ws, "corpus", "import", str(path), "--name", "arabic-cli", "--encoding", "cp1256", "--language", "ar")
    assert proc.returncode == 0, proc.stderr
    assert "rows: 2" in proc.stdout


@pytest.mark.slow
def test_an_empty_file_is_refused(ws):
    for name, content in (("empty.jsonl", b""), ("blank.json", b"  \n\n")):
        msg, stderr = _refused(ws, _write(ws, name, content), "empty")
        assert "is empty" in msg and "is empty" in stderr


@pytest.mark.slow
def test_a_1mb_field_is_refused_with_the_limit(ws):
    huge = {"instruction": "Summarise this.", "input": "x" * 1_000_000, "output": "Short."}
    path = _write(ws, "huge.jsonl", _jsonl(GOOD[:1] + [huge]))
    msg, stderr = _refused(ws, path, "huge")
    for text in (msg, stderr):
        assert "line 2" in text and "1,000,000 characters" in text and "the limit is 100,000" in text
        assert "'input'" in text


def test_a_missing_required_field_names_the_field_and_the_keys_found(ws):
    path = _write(ws, "nooutput.jsonl", _jsonl(GOOD[:1] + [{"instruction": "Do it.", "answer": "Done."}]))
    before = snapshot(ws)
    with pytest.raises(ValueError) as err:
        corpus_ops.import_file(ws, str(path), "nooutput")
    msg = str(err.value)
    assert "line 2" in msg and "missing field 'output'" in msg and "answer" in msg
    assert snapshot(ws) == before


@pytest.mark.slow
def test_importing_twice_under_one_name_is_refused_and_the_first_corpus_is_untouched(ws):
    path = _write(ws, "good.jsonl", _jsonl(GOOD))
    before = snapshot(ws)
    msg, stderr = _refused(ws, path, "kept")
    for text in (msg, stderr):
        assert "'kept'" in text and "exists already" in text
    assert snapshot(ws) == before
    with read_scope(ws.db_url) as s:
        kept = [c for c in before["corpora"] if c[0] == "kept"][0]
        assert kept[1] == 10 and kept[3].endswith("alpaca_5000.json")
        assert len([a for a in list_artifacts(s, "dataset") if a.name == "corpus-kept"]) == 1


def _translate_spec(model: str) -> dict:
    return {"kind": "translate", "corpus": "kept", "model": model, "max_new_tokens": 8, "device": "cpu"}


def test_a_translator_path_that_does_not_exist_is_refused_before_queueing(ws):
    missing = ws.models_dir / "no-such-translator"
    before = snapshot(ws)
    with read_scope(ws.db_url) as s, pytest.raises(ValueError) as err:
        precheck(s, ws, _translate_spec(str(missing)))
    assert str(missing) in str(err.value) and "does not exist" in str(err.value)
    with read_scope(ws.db_url) as s, pytest.raises(ValueError) as err:
        precheck(s, ws, _translate_spec("/nowhere/at/all/model"))
    assert "outside the allowed folders" in str(err.value)
    assert snapshot(ws) == before


def test_a_model_folder_that_is_not_a_causal_lm_is_refused_before_queueing(ws):
    import numpy as np
    from safetensors.numpy import save_file

    # what BertModel.save_pretrained writes, in miniature: config.json, weights and a tokenizer
    folder = ws.models_dir / "bert-encoder"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "architectures": ["BertModel"], "model_type": "bert", "hidden_size": 16, "num_hidden_layers": 1,
        "num_attention_heads": 2, "intermediate_size": 32, "vocab_size": 64}))
    save_file({"embeddings.word_embeddings.weight": np.zeros((64, 16), dtype=np.float32),
               "encoder.layer.0.attention.self.query.weight": np.zeros((16, 16), dtype=np.float32)},
              str(folder / "model.safetensors"))
    (folder / "tokenizer.json").write_text("{}")
    before = snapshot(ws)
    with read_scope(ws.db_url) as s, pytest.raises(ValueError) as err:
        precheck(s, ws, _translate_spec(str(folder)))
    msg = str(err.value)
    assert "BertModel" in msg and "not a causal language model" in msg and "translation" in msg
    # a folder without config.json
    (ws.models_dir / "just-files").mkdir()
    (ws.models_dir / "just-files" / "notes.txt").write_text("no model here")
    with read_scope(ws.db_url) as s, pytest.raises(ValueError) as err:
        precheck(s, ws, _translate_spec(str(ws.models_dir / "just-files")))
    assert "no config.json" in str(err.value)
    assert snapshot(ws) == before


def test_preview_shows_format_and_first_rows_without_writing(ws):
    path = _write(ws, "broken.jsonl", _jsonl(GOOD[:2]) + ["not json"] + _jsonl(GOOD[2:]))
    before = snapshot(ws)
    with read_scope(ws.db_url) as s:
        artifacts_before = len(list_artifacts(s))
    info = corpus_ops.preview(ws, str(path), n=3)
    assert info["format"] == "alpaca" and info["records_read"] == 5
    assert [r["line"] for r in info["rows"]] == [1, 2, 4]
    assert info["rows"][0]["instruction (user)"] == "Say hello number 0."
    assert info["problems"] and info["problems"][0].startswith("line 3")
    real = corpus_ops.preview(ws, str(ALPACA))
    assert real["format"] == "alpaca" and real["licence"] == "CC-BY-NC-4.0" and len(real["rows"]) == 5
    assert snapshot(ws) == before
    with read_scope(ws.db_url) as s:
        assert len(list_artifacts(s)) == artifacts_before
    assert not (ws.datasets_dir / "broken").exists()
