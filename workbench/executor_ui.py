"""'Where it runs': the executor picker every launching tab shares, and the admin's executor settings.

A job runs on the workbench's own worker (``local``, the default) or is submitted to Slurm with the
resources given here; an admin enables Slurm and sets its defaults for the workspace (``hala.yaml``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from hala_core.executor_config import enabled_executors, load_executor_config
from hala_core.settings import Settings
from hala_core.specs import parse_spec

NOT_ENABLED = ("Slurm is not enabled in this workspace: an admin enables it under Runs → Executors "
               "(saved in hala.yaml)")


def executor_choices(settings: Settings) -> tuple[list[str], str]:
    """The executors a job may ask for here, and a note for the picker."""
    try:
        cfg = load_executor_config(settings.home)
    except ValueError as e:
        return ["local"], f"executor settings unreadable, only local is offered: {e}"
    names = enabled_executors(cfg)
    if "slurm" not in names:
        return names, NOT_ENABLED
    slurm = cfg.slurm
    default = f"partition {slurm.partition}" if getattr(slurm, "partition", None) else "the cluster's default partition"
    return names, f"Slurm jobs go to {default} unless you set one below"


@dataclass
class ExecutorPicker:
    executor: gr.Dropdown
    note: gr.Markdown
    fields: list[Any]

    @property
    def inputs(self) -> list[Any]:
        return [self.executor, *self.fields]


def executor_picker(settings: Settings, prefix: str) -> ExecutorPicker:
    """The 'Where it runs' accordion; ``prefix`` makes its element ids unique per tab (``<prefix>-executor``)."""
    names, note = executor_choices(settings)
    with gr.Accordion("Where it runs", open=False, elem_id=f"{prefix}-where"):
        with gr.Row():
            executor = gr.Dropdown(names, value="local", label="executor", elem_id=f"{prefix}-executor",
                                   info="local: the workbench's worker · slurm: submitted with sbatch")
            note_md = gr.Markdown(note, elem_id=f"{prefix}-executor-note")
        with gr.Group(visible=False) as slurm_box:
            with gr.Row():
                partition = gr.Textbox(label="partition (blank = workspace default)", elem_id=f"{prefix}-partition")
                nodes = gr.Number(1, precision=0, minimum=1, label="nodes", elem_id=f"{prefix}-nodes")
                gpus = gr.Number(0, precision=0, minimum=0, label="GPUs per node", elem_id=f"{prefix}-gpus")
                cpus = gr.Number(0, precision=0, minimum=0, label="CPUs per task (0 = default)",
                                 elem_id=f"{prefix}-cpus")
            with gr.Row():
                mem = gr.Textbox(label="memory per node (e.g. 64G)", elem_id=f"{prefix}-mem")
                time_limit = gr.Textbox(label="time limit (minutes, HH:MM:SS or D-HH:MM:SS)",
                                        elem_id=f"{prefix}-time")
                extra = gr.Textbox(label="more sbatch options, one per line (e.g. --constraint=h100)", lines=2,
                                   elem_id=f"{prefix}-sbatch")
    executor.change(lambda e: gr.update(visible=e == "slurm"), executor, slurm_box, api_visibility="private")

    def refresh() -> tuple[Any, str]:
        names, note = executor_choices(settings)
        return gr.update(choices=names), note

    # executors an admin enabled after the page was built show up on the next page load
    executor.focus(refresh, None, [executor, note_md], api_visibility="private", show_progress="hidden")
    return ExecutorPicker(executor, note_md, [partition, nodes, gpus, cpus, mem, time_limit, extra])


def executor_fields(executor: str | None, partition: str | None = None, nodes: float | None = 1,
                    gpus: float | None = 0, cpus: float | None = 0, mem: str | None = None,
                    time_limit: str | None = None, extra: str | None = None) -> dict[str, Any]:
    """The spec fields for the picker's values (``{}`` for local)."""
    if not executor or executor == "local":
        return {}
    if executor != "slurm":
        raise ValueError(f"unknown executor {executor!r}; executors: local, slurm")
    slurm: dict[str, Any] = {"nodes": int(nodes or 1), "gpus_per_node": int(gpus or 0)}
    for key, value in (("partition", partition), ("mem", mem), ("time_limit", time_limit)):
        if value and str(value).strip():
            slurm[key] = str(value).strip()
    if cpus and int(cpus) > 0:
        slurm["cpus_per_task"] = int(cpus)
    lines = [x.strip() for x in (extra or "").splitlines() if x.strip()]
    if lines:
        slurm["extra_sbatch"] = lines
    return {"executor": "slurm", "slurm": slurm}


def with_executor(spec: Any, values: list[Any] | tuple[Any, ...]) -> Any:
    """The spec with the picker's executor and resources, validated again (bad resources: a clear ValueError;
    an executor the workspace has not enabled is refused by ``jobs.precheck`` when the job is submitted)."""
    fields = executor_fields(*values)
    return parse_spec({**spec.model_dump(mode="json"), **fields}) if fields else spec

def _lines(text: str | None) -> list[str]:
    return [x.strip() for x in (text or "").splitlines() if x.strip()]


def config_from_form(enabled: bool, partition: str, time_limit: str, account: str, qos: str, mem: str,
                     cpus: float | None, sbatch: str, python: str, setup: str, max_submitted: float | None,
                     poll_s: float | None) -> Any:
    """The admin form's values as a validated ``ExecutorConfig`` (a clear ValueError when one is wrong)."""
    from hala_core.executor_config import parse_executor_config

    slurm: dict[str, Any] = {"enabled": bool(enabled), "sbatch": _lines(sbatch), "setup": _lines(setup),
                             "max_submitted": int(max_submitted or 32), "poll_s": float(poll_s or 2.0)}
    for key, value in (("partition", partition), ("time_limit", time_limit), ("account", account),
                       ("qos", qos), ("mem", mem), ("python", python)):
        if value and value.strip():
            slurm[key] = value.strip()
    if cpus and int(cpus) > 0:
        slurm["cpus_per_task"] = int(cpus)
    return parse_executor_config({"slurm": slurm}, "the executor form")


def form_values(settings: Settings) -> list[Any]:
    cfg = load_executor_config(settings.home)
    s = cfg.slurm
    return [s.enabled, s.partition or "", s.time_limit or "", s.account or "", s.qos or "", s.mem or "",
            s.cpus_per_task or 0, "\n".join(s.sbatch), s.python or "", "\n".join(s.setup), s.max_submitted, s.poll_s]


def build_executor_settings(settings: Settings, require_admin: Any) -> None:
    """The admin's executor settings (Runs tab): enable Slurm and set its defaults, saved to ``hala.yaml``.
    ``require_admin(request)`` raises unless the caller is an admin."""
    from hala_core.executor_config import config_path, save_executor_config

    with gr.Accordion("Executors — where jobs may run (admins)", open=False, elem_id="executors"):
        gr.Markdown(f"Saved in `{config_path(settings.home)}`; the worker picks changes up within seconds. "
                    "`local` always runs jobs on this machine's worker; a job asks for Slurm in its "
                    "'Where it runs' section (or `executor: slurm` in its spec).")
        with gr.Row():
            enabled = gr.Checkbox(label="enable Slurm", elem_id="executors-slurm-enabled")
            partition = gr.Textbox(label="default partition", elem_id="executors-partition")
            time_limit = gr.Textbox(label="default time limit", elem_id="executors-time")
            account = gr.Textbox(label="account", elem_id="executors-account")
            qos = gr.Textbox(label="QOS", elem_id="executors-qos")
        with gr.Row():
            mem = gr.Textbox(label="default memory per node", elem_id="executors-mem")
            cpus = gr.Number(0, precision=0, minimum=0, label="default CPUs per task (0 = cluster's)",
                             elem_id="executors-cpus")
            max_submitted = gr.Number(32, precision=0, minimum=1, label="jobs kept submitted at once",
                                      elem_id="executors-max")
            poll_s = gr.Number(2.0, minimum=0.1, label="squeue poll (s)", elem_id="executors-poll")
        with gr.Row():
            sbatch = gr.Textbox(label="sbatch options for every job, one per line", lines=2,
                                elem_id="executors-sbatch")
            python = gr.Textbox(label="Python on the compute nodes (blank = the worker's)", elem_id="executors-python")
            setup = gr.Textbox(label="setup lines before each job (module load …)", lines=2,
                               elem_id="executors-setup")
        with gr.Row():
            save = gr.Button("Save executor settings", variant="primary", scale=0, elem_id="executors-save")
            status = gr.Markdown(elem_id="executors-message")
    fields = [enabled, partition, time_limit, account, qos, mem, cpus, sbatch, python, setup, max_submitted, poll_s]

    def on_open(request: gr.Request):  # noqa: ANN202
        try:
            require_admin(request)
            return (*form_values(settings), "")
        except gr.Error:
            return (*(gr.update() for _ in fields), "")
        except ValueError as e:
            return (*(gr.update() for _ in fields), f"**{e}**")

    def on_save(en: bool, part: str, tl: str, acct: str, q: str, m: str, c: float, sb: str, py: str, su: str,
                mx: float, ps: float, request: gr.Request) -> str:
        require_admin(request)
        try:
            cfg = config_from_form(en, part, tl, acct, q, m, c, sb, py, su, mx, ps)
            path = save_executor_config(settings.home, cfg)
        except ValueError as e:
            raise gr.Error(str(e)) from None
        message = f"saved to `{path}` — executors: {', '.join(enabled_executors(cfg))}"
        if cfg.slurm.enabled:
            from jobs.slurm import SlurmExecutor

            why = SlurmExecutor.available()
            if why:  # the worker may run on another host (a login node); say what this one lacks
                message += f". Note: this machine cannot submit to Slurm ({why}); a worker that can must run it"
        return message

    save.click(on_save, fields, status, api_name="save_executors")
    return on_open, fields, status
