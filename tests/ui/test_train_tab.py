"""The Train tab: the spec built from the form, the curves of a resumed run (``db.queries.run_curves``), the live
view's pieces, and roles over HTTP (an annotator may look, not launch, stop or resume)."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from db.artifacts import register_artifact
from db.models import Job, Metric
from db.queries import run_curves
from db.session import session_scope
from hala_core.settings import Settings
from hala_core.specs import TrainSpec, parse_spec
from jobs.queue import enqueue
from tests.support.workspace import workspace  # noqa: F401
from workbench.tabs import train as train_tab


def form(**kw: object) -> dict[str, object]:
    return {**train_tab.FORM_DEFAULTS, "base_model": "demo-lfm2-a", "datasets": ["news-pairs"],
            "output": "my-translator", **kw}


# --------------------------------------------------------------------------- the form → the spec

def test_the_default_form_makes_a_translator_spec_that_round_trips_through_yaml():
    spec = train_tab.build_spec(**form())
    assert isinstance(spec, TrainSpec)
    assert (spec.preset, spec.method, spec.base_model, spec.output) == ("translator", "full", "demo-lfm2-a",
                                                                        "my-translator")
    assert [(d.dataset, d.weight) for d in spec.datasets] == [("news-pairs", 1.0)]
    assert spec.max_steps == -1  # 0 in the form: by epochs
    assert spec.eval_steps is None  # 0 in the form: logging × 5
    assert spec.gpus is None and spec.advanced == {}
    assert parse_spec(spec.to_yaml()) == spec


def test_every_form_field_reaches_the_spec():
    spec = train_tab.build_spec(**form(
        preset="sft", datasets=["a-sft", "b-sft"], weights="2, 1", eval_split=0.1, learning_rate=3e-5,
        num_train_epochs=2.5, max_steps=120, per_device_train_batch_size=4, gradient_accumulation_steps=8,
        max_length=2048, packing=True, warmup_steps=10, lr_scheduler_type="linear", weight_decay=0.01,
        assistant_only_loss=True, save_steps=50, eval_steps=25, logging_steps=5, seed=7, precision="fp32",
        gradient_checkpointing=True, advanced="neftune_noise_alpha: 5\noptim: adamw_torch\n", num_processes=4,
        gpus="0, 1,2,3", distributed="fsdp"))
    assert [(d.dataset, d.weight) for d in spec.datasets] == [("a-sft", 2.0), ("b-sft", 1.0)]
    assert (spec.preset, spec.eval_split, spec.learning_rate, spec.num_train_epochs, spec.max_steps) == (
        "sft", 0.1, 3e-5, 2.5, 120)
    assert (spec.per_device_train_batch_size, spec.gradient_accumulation_steps, spec.max_length, spec.packing) == (
        4, 8, 2048, True)
    assert (spec.warmup_steps, spec.lr_scheduler_type, spec.weight_decay, spec.assistant_only_loss) == (
        10, "linear", 0.01, True)
    assert (spec.save_steps, spec.eval_steps, spec.logging_steps, spec.seed, spec.precision) == (
        50, 25, 5, 7, "fp32")
    assert spec.gradient_checkpointing and spec.advanced == {"neftune_noise_alpha": 5, "optim": "adamw_torch"}
    assert (spec.num_processes, spec.gpus, spec.distributed) == (4, "0,1,2,3", "fsdp")


def test_lora_fields():
    spec = train_tab.build_spec(**form(method="lora", lora_r=8, lora_alpha=16, lora_dropout=0.1,
                                       lora_targets="q_proj, v_proj", merge_lora=False))
    assert spec.method == "lora" and not spec.merge_lora
    assert (spec.lora.r, spec.lora.alpha, spec.lora.dropout, spec.lora.target_modules) == (
        8, 16, 0.1, ("q_proj", "v_proj"))
    with pytest.raises(ValueError, match="target module"):
        train_tab.build_spec(**form(method="lora", lora_targets=" , "))
    with pytest.raises(ValueError, match="lora.r"):
        train_tab.build_spec(**form(method="lora", lora_r=0))


def test_cleared_number_boxes_fall_back_to_the_spec_defaults():
    cleared = {k: None for k in ("eval_split", "learning_rate", "num_train_epochs", "max_steps", "seed",
                                 "per_device_train_batch_size", "lora_r", "lora_targets", "advanced", "gpus")}
    spec = train_tab.build_spec(**form(**cleared))
    assert (spec.learning_rate, spec.per_device_train_batch_size, spec.seed, spec.lora.r) == (2e-5, 8, 42, 16)
    assert spec.lora.target_modules == ("all-linear",)


@pytest.mark.parametrize(("weights", "expected"), [
    ("2", "1 weight for 2 datasets"),
    ("2, 1, 1", "3 weights for 2 datasets"),
    ("two, one", "give numbers separated by commas"),
    ("0, 1", "greater than 0 (got 0)"),
    ("-1, 1", "greater than 0 (got -1)"),
])
def test_bad_weights_say_what_is_wrong(weights, expected):
    with pytest.raises(ValueError, match="weights") as err:
        train_tab.build_spec(**form(datasets=["a-pairs", "b-pairs"], weights=weights))
    assert expected in str(err.value)


def test_weights_accept_spaces_and_blank_means_equal():
    assert train_tab.parse_weights("3 1", 2) == [3.0, 1.0]
    assert train_tab.parse_weights("0.5,1.5", 2) == [0.5, 1.5]
    assert train_tab.parse_weights("  ", 3) is None
    spec = train_tab.build_spec(**form(datasets=["a-pairs", "b-pairs"], weights=""))
    assert [d.weight for d in spec.datasets] == [1.0, 1.0]


@pytest.mark.parametrize(("text", "expected"), [
    ("neftune_noise_alpha: [5", "not valid YAML"),
    ("- optim\n- adamw", "give a mapping of SFTConfig fields"),
    ("just text", "give a mapping of SFTConfig fields"),
    ("1: 2", "give a mapping of SFTConfig fields"),
])
def test_bad_advanced_yaml_says_what_is_wrong(text, expected):
    with pytest.raises(ValueError, match="advanced") as err:
        train_tab.build_spec(**form(advanced=text))
    assert expected in str(err.value)


def test_advanced_comments_only_is_empty():
    assert train_tab.parse_advanced(train_tab.ADVANCED_HELP) == {}
    assert train_tab.parse_advanced(None) == {}


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("datasets", [], "choose at least one dataset"),
    ("datasets", ["  "], "choose at least one dataset"),
    ("base_model", " ", "choose a base model"),
    ("output", "", "give an output name"),
    ("output", "bad name!", "output name 'bad name!' is not allowed"),
    ("gpus", "0;1", "GPU indices separated by commas"),
    ("lr_scheduler_type", None, None),  # a cleared dropdown: the default
    ("max_length", 4, "max_length"),
    ("preset", "pretrain", "preset"),
])
def test_missing_or_bad_fields(field, value, expected):
    if expected is None:
        train_tab.build_spec(**form(**{field: value}))
        return
    with pytest.raises(ValueError) as err:
        train_tab.build_spec(**form(**{field: value}))
    assert expected in str(err.value)


def test_unknown_form_fields_are_refused():
    with pytest.raises(ValueError, match="unknown form fields: bogus"):
        train_tab.build_spec(**form(bogus=1))


def test_job_ref_reads_ids_labels_and_typed_numbers():
    assert train_tab.job_ref(12) == 12
    assert train_tab.job_ref("#7 · out · running") == 7
    assert train_tab.job_ref(" 31 ") == 31
    assert train_tab.job_ref(None) is None and train_tab.job_ref("") is None and train_tab.job_ref(0) is None
    with pytest.raises(Exception, match="pick a run"):
        train_tab.job_ref("latest")


# --------------------------------------------------------------------------- curves across a resume chain

def _train_spec(output: str = "run", **kw: object) -> TrainSpec:
    return TrainSpec(base_model="demo-lfm2-a", datasets=["d-pairs"], output=output, max_steps=40, **kw)


def _log(s, job_id: int, steps: range, base: float = 5.0) -> None:  # noqa: ANN001
    for step in steps:
        s.add(Metric(job_id=job_id, key="loss", step=step, value=base - step / 100))
        s.add(Metric(job_id=job_id, key="learning_rate", step=step, value=1e-4))
        if step % 10 == 0:
            s.add(Metric(job_id=job_id, key="eval_loss", step=step, value=base - step / 90))


def _checkpoint(s, settings: Settings, job_id: int, name: str, step: int) -> None:  # noqa: ANN001
    folder = settings.home / "jobs" / str(job_id) / f"checkpoint-{step}"
    folder.mkdir(parents=True, exist_ok=True)
    register_artifact(s, "model", name, str(folder), {"checkpoint": True, "step": step, "train_job": job_id},
                      job_id=job_id)


def test_run_curves_continue_across_a_resume_chain(workspace):  # noqa: F811
    with session_scope(workspace.db_url) as s:
        a = enqueue(s, _train_spec(), owner="layla")
        a.status = "cancelled"
        _log(s, a.id, range(2, 25, 2))  # ran to step 24 …
        _checkpoint(s, workspace, a.id, "run-step20", 20)  # … but the chosen checkpoint is at step 20
        _checkpoint(s, workspace, a.id, "run-step24", 24)
        b = enqueue(s, _train_spec(resume_from="run-step20"), owner="layla", parent_id=a.id, resume_of_id=a.id)
        b.status = "cancelled"
        _log(s, b.id, range(22, 33, 2), base=4.0)
        _checkpoint(s, workspace, b.id, "run-step32", 32)
        c = enqueue(s, _train_spec(resume_from="run-step32"), owner="layla", parent_id=b.id, resume_of_id=b.id)
        _log(s, c.id, range(34, 41, 2), base=3.0)
        ids = a.id, b.id, c.id
        s.add(Job(kind="sleep", status="queued", spec={"kind": "sleep"}))  # other jobs are no part of it

    with session_scope(workspace.db_url) as s:
        whole_a = run_curves(s, ids[0])
        assert [p[0] for p in whole_a["loss"]] == list(range(2, 25, 2))  # an unresumed run: all of it
        b_curve = run_curves(s, ids[1])
        assert [p[0] for p in b_curve["loss"]] == [*range(2, 21, 2), *range(22, 33, 2)]
        assert b_curve["loss"][9] == (20, pytest.approx(5.0 - 0.2)) and b_curve["loss"][10] == (
            22, pytest.approx(4.0 - 0.22))
        c_curve = run_curves(s, ids[2])
        steps = [p[0] for p in c_curve["loss"]]
        assert steps == list(range(2, 41, 2))  # continuous: no step twice, none missing
        assert [p[0] for p in c_curve["eval_loss"]] == [10, 20, 30, 40]
        assert set(c_curve) == {"loss", "learning_rate", "eval_loss"}
        with pytest.raises(ValueError, match="no job 9999"):
            run_curves(s, 9999)


def test_run_curves_fall_back_to_the_first_logged_step_without_checkpoint_metadata(workspace):  # noqa: F811
    with session_scope(workspace.db_url) as s:
        a = enqueue(s, _train_spec(), owner="layla")
        _log(s, a.id, range(1, 31))
        b = enqueue(s, _train_spec(resume_from="/somewhere/checkpoint-12"), owner="layla", resume_of_id=a.id)
        _log(s, b.id, range(13, 20))
        c = enqueue(s, _train_spec(resume_from="gone-step19"), owner="layla", resume_of_id=b.id)  # nothing yet
        ids = a.id, b.id, c.id
    with session_scope(workspace.db_url) as s:
        assert [p[0] for p in run_curves(s, ids[1])["loss"]] == list(range(1, 20))
        assert [p[0] for p in run_curves(s, ids[2])["loss"]] == list(range(1, 20))  # the child has no steps yet


def test_live_view_of_a_resumed_run(workspace):  # noqa: F811
    with session_scope(workspace.db_url) as s:
        a = enqueue(s, _train_spec(), owner="layla")
        a.status, a.error = "cancelled", "cancel requested: stopped at step 20; checkpoint run-step20 saved"
        a.result = {"stopped_at_step": 20, "checkpoint": "run-step20"}
        _log(s, a.id, range(2, 21, 2))
        _checkpoint(s, workspace, a.id, "run-step10", 10)
        _checkpoint(s, workspace, a.id, "run-step20", 20)
        b = enqueue(s, _train_spec(resume_from="run-step20"), owner="layla", resume_of_id=a.id)
        b.status, b.progress_done, b.progress_total, b.progress_message = "succeeded", 30, 30, "step 30/30"
        b.result = {"final_loss": 3.7, "eval_loss": 3.6, "tokens_per_s": 812.5, "steps": 30, "seconds": 9.1,
                    "model": "run", "checkpoints": ["run-step30"]}
        _log(s, b.id, range(22, 31, 2), base=4.0)
        s.add(Metric(job_id=b.id, key="tokens_per_s", step=30, value=812.5))
        ids = a.id, b.id

    assert train_tab.checkpoints(workspace, ids[0]) == [("run-step20", 20), ("run-step10", 10)]
    old = train_tab._get_job(workspace, ids[0])
    head, fig, extra = train_tab.job_view(workspace, old)
    assert f"job {ids[0]}" in head and "cancelled" in head
    assert "checkpoint <code>run-step20</code> saved" in extra and "stopped at step 20" in extra
    new = train_tab._get_job(workspace, ids[1])
    head, fig, extra = train_tab.job_view(workspace, new)
    assert f"resumes job {ids[0]}" in head and "812.5" in head
    assert fig.data[0].name == "loss" and list(fig.data[0].x) == list(range(2, 31, 2))
    assert [t.name for t in fig.data] == ["loss", "eval loss", "learning rate", "grad norm"]
    assert any(sh.x0 == 20 for sh in fig.layout.shapes)  # the resume point is marked
    assert "final loss" in extra and "3.7" in extra and "812.5" in extra and "run" in extra
    cmp = train_tab.compare_figure(workspace, [ids[0], ids[1]])
    assert [t.name for t in cmp.data] == [f"#{ids[0]} run", f"#{ids[0]} run eval", f"#{ids[1]} run",
                                         f"#{ids[1]} run eval"]
    assert list(cmp.data[2].x) == list(range(2, 31, 2))
    assert train_tab.compare_figure(workspace, []) is None
    choices = train_tab.train_job_choices(workspace)
    assert [c[1] for c in choices] == [ids[1], ids[0]]
    assert f"resumes #{ids[0]}" in choices[0][0] and "succeeded" in choices[0][0]
    assert train_tab.job_view(workspace, None)[1] is None


def test_resume_run_checks_the_steps_and_links_the_new_job(workspace):  # noqa: F811
    with session_scope(workspace.db_url) as s:
        a = enqueue(s, _train_spec(), owner="layla")
        a.status = "cancelled"
        _checkpoint(s, workspace, a.id, "run-step10", 10)
        _checkpoint(s, workspace, a.id, "run-step20", 20)
        running = enqueue(s, _train_spec("other"), owner="layla")
        running.status = "running"
        ids = a.id, running.id
    with pytest.raises(ValueError, match="checkpoint is at step 20 and max steps would be 20"):
        train_tab.resume_run(workspace, ids[0], None, 20, None, "sami")
    with pytest.raises(ValueError, match="is running; stop it first"):
        train_tab.resume_run(workspace, ids[1], None, 0, None, "sami")
    with pytest.raises(ValueError, match="not a checkpoint of job"):
        train_tab.resume_run(workspace, ids[0], "nope-step3", 0, None, "sami")
    new_id, frm = train_tab.resume_run(workspace, ids[0], None, 30, 2, "sami")
    assert frm == "run-step20"
    new_id2, frm2 = train_tab.resume_run(workspace, ids[0], "run-step10", 0, None, "sami")
    assert frm2 == "run-step10"
    with session_scope(workspace.db_url) as s:
        new = s.get(Job, new_id)
        assert (new.resume_of_id, new.owner, new.spec["max_steps"], new.spec["num_train_epochs"]) == (
            ids[0], "sami", 30, 2.0)
        assert s.get(Job, new_id2).spec["max_steps"] == 40  # kept


def test_presets_pick_datasets_of_their_kind_and_outputs_are_free(workspace):  # noqa: F811
    data = workspace.home / "datasets"
    data.mkdir(exist_ok=True)
    with session_scope(workspace.db_url) as s:
        register_artifact(s, "dataset", "news-t1-pairs", str(data / "a.jsonl"), {"kind": "pairs"})
        register_artifact(s, "dataset", "news-t2-pairs", str(data / "b.jsonl"), {"kind": "pairs"})
        register_artifact(s, "dataset", "alpaca-t1-sft", str(data / "c.jsonl"), {"kind": "sft"})
        register_artifact(s, "dataset", "corpus-alpaca", str(data / "d.json"), {"format": "alpaca"})
        register_artifact(s, "model", "demo-lfm2-a-translator-1", str(workspace.models_dir / "x"), {})
        enqueue(s, _train_spec("demo-lfm2-a-translator-2"))
    assert train_tab.preset_datasets(workspace, "translator", []) == ["news-t2-pairs"]  # the newest of its kind
    assert train_tab.preset_datasets(workspace, "sft", ["news-t1-pairs"]) == ["alpaca-t1-sft"]
    assert train_tab.preset_datasets(workspace, "translator", ["news-t1-pairs"]) == ["news-t1-pairs"]
    assert train_tab.preset_datasets(workspace, "translator", ["/my/file.jsonl"]) == ["/my/file.jsonl"]
    labels = dict((v, k) for k, v in train_tab.dataset_choices(workspace))
    assert labels["news-t1-pairs"].endswith("pairs") and labels["alpaca-t1-sft"].endswith("sft")
    assert list(labels)[-1] == "corpus-alpaca"
    assert train_tab.suggest_output(workspace, "demo-lfm2-a", "translator") == "demo-lfm2-a-translator-3"
    assert train_tab.suggest_output(workspace, "LiquidAI/LFM2-350M", "sft") == "LFM2-350M-sft-1"
    for preset, d in train_tab.PRESET_DEFAULTS.items():
        spec = train_tab.build_spec(**form(preset=preset, learning_rate=d["learning_rate"]["lora"], method="lora",
                                           max_length=d["max_length"], assistant_only_loss=d["assistant_only_loss"]))
        assert spec.learning_rate == 2e-4
    assert train_tab.PRESET_DEFAULTS["translator"]["learning_rate"]["full"] == 5e-5
    assert train_tab.PRESET_DEFAULTS["sft"]["assistant_only_loss"] is True


def test_an_output_being_written_by_a_live_run_is_refused(workspace):  # noqa: F811
    with session_scope(workspace.db_url) as s:
        live = enqueue(s, _train_spec("busy-run"), owner="layla")
        live.status = "running"
        done = enqueue(s, _train_spec("old-run"), owner="layla")
        done.status = "failed"
        jid = live.id
    with pytest.raises(ValueError, match=f"output 'busy-run' is the output of job {jid}, which is running"):
        train_tab.check_output_not_in_use(workspace, "busy-run")
    train_tab.check_output_not_in_use(workspace, "old-run")  # a failed run's name may be used again
    assert {"busy-run", "old-run"} <= train_tab.taken_outputs(workspace)


def test_the_tab_is_registered_after_review(workspace):  # noqa: F811
    from workbench.app import build_app

    demo = build_app(workspace)
    labels = [b.label for b in demo.blocks.values() if type(b).__name__ == "Tab"]
    assert labels.index("Train") == labels.index("Review") + 1
    api = {fn.api_name for fn in demo.fns.values() if fn.api_name}
    assert {"train", "train_stop", "train_resume"} <= api


# --------------------------------------------------------------------------- roles over HTTP

@pytest.fixture(scope="module")
def server(tmp_path_factory, demo_models_dir):  # noqa: ANN001, ANN201
    from tests.support.app_server import AppServer, add_user, make_workspace

    root = tmp_path_factory.mktemp("train_http")
    settings = make_workspace(root / "home", demo_models_dir)
    pairs = settings.home / "datasets" / "tiny-pairs.jsonl"
    pairs.parent.mkdir(parents=True, exist_ok=True)
    pairs.write_text("".join(json.dumps({"prompt": f"### Translate English to Arabic\nline {i}\n### Arabic\n",
                                         "completion": f"سطر {i}"}) + "\n" for i in range(8)), encoding="utf-8")
    with session_scope(settings.db_url) as s:
        register_artifact(s, "dataset", "tiny-pairs", str(pairs), {"kind": "pairs"})
    add_user(settings, "layla", "researcher", "layla-password")
    add_user(settings, "amal", "annotator", "amal-password")
    app = AppServer(settings, root / "server.log").start()
    yield app
    app.stop()


def _jobs(settings: Settings) -> int:
    with session_scope(settings.db_url) as s:
        return s.scalar(select(func.count(Job.id)))


def _form_data(**kw: object) -> list[object]:
    f = {**train_tab.FORM_DEFAULTS, "base_model": "demo-lfm2-a", "datasets": ["tiny-pairs"], "output": "http-run",
         "max_steps": 2, "logging_steps": 1, **kw}
    return [f[k] for k in train_tab.FORM_FIELDS]


@pytest.mark.slow
def test_an_annotator_may_not_launch_stop_or_resume_over_http(server):
    with session_scope(server.settings.db_url) as s:
        theirs = enqueue(s, _train_spec("layla-run"), owner="layla")
        theirs.status = "cancelled"
        jid = theirs.id
    before = _jobs(server.settings)
    amal = server.login("amal", "amal-password")
    for api, data in (("train", _form_data()), ("train_stop", [jid]), ("train_resume", [jid, None, 50, 0])):
        event, out = server.call(amal, api, data)
        assert event == "error", (api, out)
        message = json.loads(out)["error"]
        assert "amal is annotator" in message and "admin or researcher" in message, (api, message)
    assert _jobs(server.settings) == before


@pytest.mark.slow
def test_a_researcher_gets_clear_refusals_before_anything_is_queued(server):
    layla = server.login("layla", "layla-password")
    before = _jobs(server.settings)
    for kw, expected in ((dict(weights="1, 2"), "2 weights for 1 dataset"),
                         (dict(advanced="neftune_noise_alpa: 5"), "did you mean neftune_noise_alpha"),
                         (dict(advanced="output_dir: /tmp/x"), "output_dir is set by the workbench"),
                         (dict(datasets=["no-such-data"]), "'no-such-data'"),
                         (dict(base_model="no-such-model"), "is not a model artifact"),
                         (dict(method="lora", lora_targets="nope_proj"), "matches no module")):
        event, out = server.call(layla, "train", _form_data(**kw))
        assert event == "error", (kw, out)
        assert expected in json.loads(out)["error"], (kw, out)
    assert _jobs(server.settings) == before


@pytest.mark.slow
def test_a_researcher_may_not_stop_someone_elses_run_but_may_queue_and_stop_their_own(server):
    with session_scope(server.settings.db_url) as s:
        other = enqueue(s, _train_spec("sami-run"), owner="sami").id
    layla = server.login("layla", "layla-password")
    event, out = server.call(layla, "train_stop", [other])
    assert event == "error" and "belongs to sami" in json.loads(out)["error"]
    event, out = server.call(layla, "train", _form_data(output="http-own-run", max_steps=400))
    assert event == "complete", out
    with session_scope(server.settings.db_url) as s:
        job = s.scalar(select(Job).where(Job.kind == "train").order_by(Job.id.desc()))
        assert (job.owner, job.spec["output"], job.spec["max_steps"]) == ("layla", "http-own-run", 400)
        jid = job.id
    event, out = server.call(layla, "train_stop", [jid])
    assert event == "complete" and f"job {jid}" in out, out
    with session_scope(server.settings.db_url) as s:
        job = s.get(Job, jid)
        assert job.cancel_requested or job.status == "cancelled"


def test_form_fields_match_the_spec():
    """Every spec field a researcher turns is on the form (the rest: advanced, resume_from, evaluate_after)."""
    covered = {"lora_r", "lora_alpha", "lora_dropout", "lora_targets", "weights", "slurm_partition", "slurm_nodes",
               "slurm_gpus", "slurm_cpus", "slurm_mem", "slurm_time", "slurm_sbatch"}
    spec_fields = set(TrainSpec.model_fields) - {"kind", "lora", "resume_from", "evaluate_after", "slurm"}
    assert spec_fields <= set(train_tab.FORM_FIELDS)
    assert set(train_tab.FORM_FIELDS) - spec_fields == covered


def test_the_form_sends_a_run_to_slurm_with_its_resources():
    form = dict(train_tab.FORM_DEFAULTS, base_model="demo-lfm2-a", datasets=["pairs"], output="run-1",
                executor="slurm", slurm_partition="gpu", slurm_nodes=2, slurm_gpus=8, slurm_time="12:00:00",
                slurm_sbatch="--constraint=h100\n\n")
    spec = train_tab.build_spec(**form)
    assert spec.executor == "slurm"
    assert (spec.slurm.partition, spec.slurm.nodes, spec.slurm.gpus_per_node, spec.slurm.time_limit,
            spec.slurm.extra_sbatch) == ("gpu", 2, 8, "12:00:00", ("--constraint=h100",))
    local = train_tab.build_spec(**dict(form, executor="local"))
    assert local.executor == "local" and local.slurm is None
    with pytest.raises(ValueError, match="time limit 'soon' is not understood"):
        train_tab.build_spec(**dict(form, slurm_time="soon"))
    with pytest.raises(ValueError, match="not allowed"):
        train_tab.build_spec(**dict(form, slurm_sbatch="--wrap=rm -rf /; echo"))
