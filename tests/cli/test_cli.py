"""The ``hala`` command line against a real workspace and a real worker process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors import safe_open

from tests.support.app_server import make_workspace

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"  # the sample data beside the checkout (CI lays it out the same way)


def hala(settings, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:  # noqa: ANN001
    env = {**os.environ, "HALA_HOME": str(settings.home), "HALA_DB_URL": settings.db_url}
    return subprocess.run([sys.executable, "-m", "workbench.cli", *args], env=env, cwd=ROOT, text=True,
                          capture_output=True, input=stdin, timeout=300)


@pytest.fixture
def ws(workspace, demo_models_dir):  # noqa: ANN001, ANN201
    return make_workspace(workspace.home, demo_models_dir)


def test_run_merge_spec_with_wait_prints_id_status_and_artifact(ws, workers, tmp_path):
    spec = tmp_path / "merge.yaml"
    spec.write_text("kind: merge\nbase_model: demo-lfm2-a\nmodel: demo-lfm2-b\nt: [0, 0.3, 1]\n"
                    "output: cli-merge\nsample_max_new_tokens: 4\n")
    workers.start()
    out = hala(ws, "run", str(spec), "--wait", "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["status"] == "succeeded" and info["kind"] == "merge"
    [art] = info["artifacts"]
    model_dir = Path(art["path"])
    assert art["name"] == "cli-merge" and (model_dir / "mergekit_config.yml").is_file()
    assert {x["name"] for x in art["lineage"]} == {"demo-lfm2-a", "demo-lfm2-b"}
    with safe_open(str(next(model_dir.glob("*.safetensors"))), "pt") as f:
        assert any("layers.1" in k for k in f.keys())
    text = hala(ws, "run", str(spec.with_name("merge.yaml")), "--wait")
    assert text.returncode == 2 and "already a model artifact" in text.stderr


def test_wait_exits_nonzero_when_the_job_fails(ws, workers, tmp_path):
    spec = tmp_path / "fail.yaml"
    spec.write_text("kind: sleep\nfail: true\n")
    workers.start()
    out = hala(ws, "run", str(spec), "--wait")
    assert out.returncode == 1
    assert "failed" in out.stdout and "asked to fail" in out.stdout


def test_bad_spec_files_are_refused_with_what_is_allowed(ws, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: merge\nbase_model: demo-lfm2-a\nmodel: demo-lfm2-b\noutput: x\nt: 2\nsteps: 3\n")
    out = hala(ws, "run", str(bad))
    assert out.returncode == 2
    assert "t: 2.0 is outside [0, 1]" in out.stderr and "steps: unknown field" in out.stderr
    bad.write_text("kind: [unclosed\n")
    assert "not valid YAML" in hala(ws, "run", str(bad)).stderr
    assert "cannot read spec file" in hala(ws, "run", str(tmp_path / "missing.yaml")).stderr
    missing = hala(ws, "jobs", "show", "999")
    assert missing.returncode == 2 and "no job 999" in missing.stderr


def test_inline_run_jobs_commands_and_users(ws, tmp_path):
    spec = tmp_path / "sleep.yaml"
    spec.write_text("kind: sleep\nseconds: 0.2\nsteps: 2\n")
    out = hala(ws, "run", str(spec), "--inline", "--json")
    assert out.returncode == 0, out.stderr
    job_id = json.loads(out.stdout)["id"]
    listed = json.loads(hala(ws, "jobs", "list", "--json").stdout)
    assert [r["id"] for r in listed] == [job_id] and listed[0]["status"] == "succeeded"
    assert "=== job" in hala(ws, "jobs", "logs", str(job_id)).stdout
    clone = hala(ws, "jobs", "clone", str(job_id), "--set", "seconds=0.5")
    assert clone.returncode == 0 and "clone of" in clone.stdout
    cancel = hala(ws, "jobs", "cancel", str(job_id + 1))
    assert "cancelled" in cancel.stdout
    assert hala(ws, "users", "add", "rana", "--role", "researcher", "--password-stdin",
                stdin="a-good-password\n").returncode == 0
    users = json.loads(hala(ws, "users", "list", "--json").stdout)
    assert users == [{"name": "rana", "role": "researcher", "disabled": False}]
    bad = hala(ws, "users", "add", "omar", "--role", "boss", "--password-stdin", stdin="whatever1\n")
    assert bad.returncode == 2 and "admin" in bad.stderr


def test_run_quantize_spec_with_wait(ws, workers, tmp_path):
    spec = tmp_path / "quantize.yaml"
    spec.write_text("kind: quantize\nmodel: demo-lfm2-a\nscheme: FP8_DYNAMIC\noutput: cli-fp8\n"
                    "validation:\n  prompts: 16\n  ppl_texts: 8\n  translation_pairs: 4\n  max_new_tokens: 8\n"
                    "  throughput_prompts: 4\n  throughput_tokens: 8\n")
    workers.start()
    out = hala(ws, "run", str(spec), "--wait", "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    info = json.loads(out.stdout)
    model = next(a for a in info["artifacts"] if a["kind"] == "model")
    assert model["name"] == "cli-fp8" and [x["name"] for x in model["lineage"]] == ["demo-lfm2-a"]
    config = json.loads((Path(model["path"]) / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "compressed-tensors"
    assert any(a["kind"] == "report" for a in info["artifacts"])

    w8 = tmp_path / "w8a8.yaml"
    w8.write_text("kind: quantize\nmodel: demo-lfm2-a\nscheme: W8A8\noutput: cli-w8a8\n"
                  f"calibration: {{dataset: {DATA}/ntrex128_en_ar/newstest2019-src.eng.txt, num_samples: 8,"
                  " max_seq_length: 64}\n"
                  "validation: {prompts: 8, ppl_texts: 4, translation_pairs: 2, max_new_tokens: 4, "
                  "throughput_prompts: 2, throughput_tokens: 4}\n")
    assert hala(ws, "run", str(w8), "--inline").returncode == 0

    # the comparison view puts both variants of the source side by side
    from workbench.tabs.quantize import comparison

    rows, fig = comparison(ws, "demo-lfm2-a")
    flat = [" ".join(str(c) for c in r) for r in rows]
    assert any("cli-fp8" in r and "FP8_DYNAMIC" in r for r in flat)
    assert any("cli-w8a8" in r and "W8A8" in r for r in flat)
    assert fig is not None

    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: quantize\nmodel: cli-fp8\noutput: twice\n")
    again = hala(ws, "run", str(bad))
    assert again.returncode == 2 and "already quantized" in again.stderr
    bad.write_text("kind: quantize\nmodel: demo-lfm2-a\noutput: w4\nscheme: W4A16\n"
                   f"calibration: {{dataset: {DATA}/alpaca_5000/alpaca_5000.json}}\n")
    w4 = hala(ws, "run", str(bad))
    assert w4.returncode == 2 and "group size" in w4.stderr


def test_eval_job_results_samples_and_leaderboard_agree(ws, tmp_path):
    csv_file = tmp_path / "capitals.csv"
    csv_file.write_text("question,A,B,C,D,answer\n"
                        + "".join(f"ما عاصمة البلد رقم {i}؟,القاهرة,الرياض,عمّان,تونس,{'ABCD'[i % 4]}\n"
                                  for i in range(12)), encoding="utf-8")
    (tmp_path / "broken.csv").write_text("question,A,B,answer\nس,أ,ب,Z\n", encoding="utf-8")
    env_roots = {"HALA_READ_ROOTS": str(tmp_path)}
    os.environ.update(env_roots)
    try:
        added = hala(ws, "bench", "add", "capitals", str(csv_file), "--question", "question", "--choices", "A,B,C,D",
                     "--answer", "answer")
        assert added.returncode == 0, added.stderr
        assert "12 questions" in added.stdout
        broken = hala(ws, "bench", "add", "broken", str(tmp_path / "broken.csv"), "--question", "question",
                      "--choices", "A,B", "--answer", "answer")
        assert broken.returncode == 2 and "Z" in broken.stderr
    finally:
        for k in env_roots:
            os.environ.pop(k)
    spec = tmp_path / "eval.yaml"
    spec.write_text("kind: eval\nmodels: [demo-lfm2-a]\nbenchmarks: [exams_ar, capitals, ntrex_en_ar]\nlimit: 12\n"
                    "translation_max_new_tokens: 8\n")
    out = hala(ws, "run", str(spec), "--inline", "--json")
    assert out.returncode == 0, out.stderr[-3000:]

    from db.evals import latest_scores, samples_for
    from db.session import session_scope

    with session_scope(ws.db_url) as s:
        scores = {(r["benchmark"], r["task"], r["metric"]): r for r in latest_scores(s)}
        exams = samples_for(s, "demo-lfm2-a", "exams_ar")
        capitals = samples_for(s, "demo-lfm2-a", "capitals")
    acc = scores[("exams_ar", "exams_ar", "acc")]
    assert acc["n_samples"] == len(exams) == 12 and acc["harness_version"]
    assert acc["value"] == pytest.approx(sum(x["correct"] for x in exams) / len(exams))
    assert 0.0 <= acc["value"] <= 0.75  # random weights: near chance (0.25) on 4 choices
    assert len(capitals) == 12 and ("ntrex_en_ar", "ntrex_en_ar", "chrf++") in scores

    board = json.loads(hala(ws, "leaderboard", "--format", "json").stdout)
    [row] = board
    assert row["model"] == "demo-lfm2-a" and row["category"] == "nano"
    assert row["exams_ar"] == pytest.approx(100 * scores[("exams_ar", "exams_ar", "acc_norm")]["value"], abs=0.01)
    md = hala(ws, "leaderboard", "--format", "md", "--reported").stdout
    assert "Hala-1.2B (reported)" in md and "| demo-lfm2-a |" in md
    spec.write_text("kind: eval\nmodels: [demo-lfm2-a]\nbenchmarks: [exams_arr]\n")
    bad = hala(ws, "run", str(spec))
    assert bad.returncode == 2 and "exams_ar" in bad.stderr
    spec.write_text("kind: eval\nmodels: [demo-lfm2-a]\nbenchmarks: [alghafa]\n")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        hub = hala(ws, "run", str(spec))
    finally:
        os.environ.pop("HF_HUB_OFFLINE")
    assert hub.returncode == 2 and "needs the Hugging Face hub" in hub.stderr


def test_terminal_chat_streams_answers_and_takes_commands(ws):
    out = hala(ws, "chat", "demo-lfm2-a", "--temperature", "0", "--max-new-tokens", "6", "--repetition-penalty", "3",
               stdin="مرحبا\n/system أنت مساعد مفيد\nHello again\n" + "x" * 5000 + "\n/exit\n")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "random weights" in out.stderr and "(system prompt set)" in out.stderr
    assert len([line for line in out.stdout.splitlines()]) >= 2  # one answer line per message
    assert "5,000 characters long; the limit is 4,000" in out.stderr  # refused, not sent
    missing = hala(ws, "chat", "no-such-model", stdin="")
    assert missing.returncode == 2 and "no-such-model" in missing.stderr
