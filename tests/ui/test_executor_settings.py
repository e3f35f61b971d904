"""The executor picker's values → spec fields, the admin form → hala.yaml, and the precheck that refuses an
executor the workspace has not enabled."""

from __future__ import annotations

import pytest

from hala_core.executor_config import load_executor_config
from hala_core.settings import load_settings
from hala_core.specs import parse_spec
from jobs.precheck import check_executor
from workbench.executor_ui import config_from_form, executor_choices, executor_fields, with_executor

FORM = dict(enabled=True, partition="gpu", time_limit="2:00:00", account="", qos="", mem="64g", cpus=4,
            sbatch="--constraint=h100\n", python="", setup="module load cuda\n\n", max_submitted=8, poll_s=1.5)


def test_picker_values_become_spec_fields():
    assert executor_fields("local", "gpu", 2, 8) == {}
    fields = executor_fields("slurm", " gpu ", 2, 8, 0, "", "90", "--exclusive\n\n--constraint=a100")
    assert fields == {"executor": "slurm", "slurm": {"nodes": 2, "gpus_per_node": 8, "partition": "gpu",
                                                      "time_limit": "90",
                                                      "extra_sbatch": ["--exclusive", "--constraint=a100"]}}
    spec = with_executor(parse_spec({"kind": "sleep"}), ["slurm", "", 1, 0, 2, "8G", "", ""])
    assert spec.executor == "slurm" and spec.slurm.cpus_per_task == 2 and spec.slurm.mem == "8G"
    with pytest.raises(ValueError, match="memory 'lots' is not understood"):
        with_executor(parse_spec({"kind": "sleep"}), ["slurm", "", 1, 0, 0, "lots", "", ""])
    with pytest.raises(ValueError, match="unknown executor 'k8s'"):
        executor_fields("k8s")


def test_admin_form_saves_hala_yaml_and_the_precheck_follows_it(tmp_path):
    settings = load_settings(home=tmp_path)
    slurm_job = parse_spec({"kind": "sleep", "executor": "slurm"})
    assert executor_choices(settings)[0] == ["local"]
    with pytest.raises(ValueError, match="executor 'slurm' is not enabled in this workspace.*Runs → Executors"):
        check_executor(settings, slurm_job)

    from hala_core.executor_config import save_executor_config

    save_executor_config(settings.home, config_from_form(**FORM))
    cfg = load_executor_config(settings.home)
    assert (cfg.slurm.enabled, cfg.slurm.partition, cfg.slurm.mem, cfg.slurm.cpus_per_task, cfg.slurm.sbatch,
            cfg.slurm.setup, cfg.slurm.max_submitted) == (True, "gpu", "64G", 4, ("--constraint=h100",),
                                                          ("module load cuda",), 8)
    assert executor_choices(settings)[0] == ["local", "slurm"]
    check_executor(settings, slurm_job)  # enabled now: accepted

    with pytest.raises(ValueError, match="time_limit"):
        config_from_form(**dict(FORM, time_limit="tomorrow"))
    # a broken hala.yaml: the picker still offers local and says why
    (tmp_path / "hala.yaml").write_text("executors: [1, 2\n")
    names, note = executor_choices(settings)
    assert names == ["local"] and "unreadable" in note


def test_runs_table_says_where_a_job_runs():
    from db.models import Job
    from db.queries import where_text

    assert where_text(Job(executor="local")) == "local"
    assert where_text(Job(executor="slurm", status="queued")) == "slurm"
    pending = Job(executor="slurm", status="claimed", executor_handle="slurm:1764", executor_state="PENDING")
    assert where_text(pending) == "slurm 1764 · PENDING"
    # ended, but the worker has not read Slurm's final state yet: no stale RUNNING next to "succeeded"
    assert where_text(Job(executor="slurm", status="succeeded", executor_handle="slurm:1764",
                          executor_state="RUNNING")) == "slurm 1764"
    assert where_text(Job(executor="slurm", status="failed", executor_handle="slurm:1764",
                          executor_state="TIMEOUT")) == "slurm 1764 · TIMEOUT"
