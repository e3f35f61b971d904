"""Train: fine-tune with TRL's SFTTrainer (the translator preset or instruction SFT, full or LoRA), follow the run
live (curves from the db, also across a resume), stop it with a checkpoint, resume it, and compare runs."""

from __future__ import annotations

import re
from typing import Any

import gradio as gr
import plotly.graph_objects as go
import yaml
from sqlalchemy import func, select

from db.artifacts import list_artifacts
from db.models import Artifact, Job, Metric
from db.queries import run_curves
from db.session import read_scope, session_scope
from hala_core.settings import Settings
from hala_core.specs import TrainSpec, parse_spec
from jobs import queue
from workbench.auth import LAUNCH_ROLES, Caller, caller, require
from workbench.executor_ui import executor_fields, executor_picker
from workbench.ui import esc, job_error_html, job_header, kv_table, latest_job, progress_html, submit_job

PRESET_HELP = {
    "translator": "**translator** — bilingual pairs (`prompt`/`completion` in the Hala translator template, the "
                  "corpus export's `-pairs` datasets); the loss is on the translation only.",
    "sft": "**instruction SFT** — conversations (`messages` with role/content turns, the corpus export's `-sft` "
           "datasets); the loss is on the assistant turns.",
}
# What choosing a preset (or a method) fills in.
PRESET_DEFAULTS: dict[str, dict[str, Any]] = {
    "translator": {"learning_rate": {"lora": 2e-4, "full": 5e-5}, "max_length": 512, "assistant_only_loss": False,
                   "dataset_kind": "pairs"},
    "sft": {"learning_rate": {"lora": 2e-4, "full": 2e-5}, "max_length": 2048, "assistant_only_loss": True,
            "dataset_kind": "sft"},
}
SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial")
ADVANCED_HELP = ("# any other field of TRL's SFTConfig, as YAML; checked against SFTConfig before queueing\n"
                 "# neftune_noise_alpha: 5\n# optim: adamw_torch_fused\n")

# The form, in the order the `train` endpoint takes it (HTTP callers: data = [FORM_DEFAULTS[k] for k in FORM_FIELDS]).
FORM_DEFAULTS: dict[str, Any] = {
    "preset": "translator", "base_model": "", "datasets": [], "weights": "", "eval_split": 0.05,
    "method": "full", "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "lora_targets": "all-linear",
    "merge_lora": True, "learning_rate": 5e-5, "num_train_epochs": 1.0, "max_steps": 0,
    "per_device_train_batch_size": 8, "gradient_accumulation_steps": 1, "max_length": 512, "packing": False,
    "warmup_steps": 0.03, "lr_scheduler_type": "cosine", "weight_decay": 0.0, "assistant_only_loss": False,
    "save_steps": 500, "eval_steps": 0, "logging_steps": 10, "seed": 42, "precision": "auto",
    "gradient_checkpointing": False, "advanced": "", "num_processes": 1, "gpus": "", "distributed": "ddp",
    "output": "",
    # where it runs (workbench.executor_ui): local, or Slurm with these resources
    "executor": "local", "slurm_partition": "", "slurm_nodes": 1, "slurm_gpus": 0, "slurm_cpus": 0, "slurm_mem": "",
    "slurm_time": "", "slurm_sbatch": "",
}
EXECUTOR_FIELDS = ("executor", "slurm_partition", "slurm_nodes", "slurm_gpus", "slurm_cpus", "slurm_mem",
                   "slurm_time", "slurm_sbatch")
FORM_FIELDS = tuple(FORM_DEFAULTS)
# Spec fields the form passes through as they are (None = keep the spec's default).
_INT_FIELDS = ("max_steps", "per_device_train_batch_size", "gradient_accumulation_steps", "max_length", "save_steps",
               "logging_steps", "seed", "num_processes")
_FLOAT_FIELDS = ("eval_split", "learning_rate", "num_train_epochs", "warmup_steps", "weight_decay")
_BOOL_FIELDS = ("merge_lora", "packing", "assistant_only_loss", "gradient_checkpointing")


# --------------------------------------------------------------------------- the form → a spec

def parse_weights(text: str | None, n: int) -> list[float] | None:
    """``"2, 1"`` → [2.0, 1.0] for ``n`` datasets, in their order; blank → None (equal shares)."""
    parts = [p.strip() for p in re.split(r"[,\s]+", (text or "").strip()) if p.strip()]
    if not parts:
        return None
    try:
        weights = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"weights {text!r}: give numbers separated by commas, e.g. 2, 1 (one per dataset, in "
                         "order), or leave it blank for equal shares") from None
    if len(weights) != n:
        raise ValueError(f"weights {text!r}: {len(weights)} weight{'s' if len(weights) != 1 else ''} for {n} "
                         f"dataset{'s' if n != 1 else ''}; give one per dataset, in order, or leave it blank")
    bad = [p for p, w in zip(parts, weights, strict=True) if not w > 0]
    if bad:
        raise ValueError(f"weights {text!r}: every weight must be greater than 0 (got {', '.join(bad)})")
    return weights


def parse_advanced(text: str | None) -> dict[str, Any]:
    """The advanced YAML box → a dict of SFTConfig fields ({} when blank or only comments)."""
    try:
        data = yaml.safe_load(text or "")
    except yaml.YAMLError as e:
        raise ValueError(f"advanced: not valid YAML ({str(e).splitlines()[0]}); write one SFTConfig field per "
                         "line, e.g. neftune_noise_alpha: 5") from None
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise ValueError("advanced: give a mapping of SFTConfig fields to values, one per line, e.g. "
                         f"neftune_noise_alpha: 5 (got {type(data).__name__})")
    return data


def _number(value: Any) -> Any:
    """Gradio numbers arrive as int/float or None (a cleared box); whole floats become ints."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def build_spec(**form: Any) -> TrainSpec:
    """The train spec for the form's values (names as in FORM_FIELDS; missing or None = the default)."""
    unknown = set(form) - set(FORM_FIELDS)
    if unknown:
        raise ValueError(f"unknown form fields: {', '.join(sorted(unknown))}")
    f = {k: form.get(k) for k in FORM_FIELDS}
    datasets = f["datasets"] or []
    if isinstance(datasets, str):
        datasets = [datasets]
    datasets = [d.strip() for d in datasets if d and d.strip()]
    if not datasets:
        raise ValueError("choose at least one dataset: a dataset artifact (the corpus export's -pairs or -sft "
                         "datasets) or a JSONL/Parquet file or datasets folder inside the workspace")
    base = (f["base_model"] or "").strip()
    if not base:
        raise ValueError("choose a base model: a model artifact, a local folder or a hub id")
    output = (f["output"] or "").strip()
    if not output:
        raise ValueError("give an output name for the trained model")
    weights = parse_weights(f["weights"], len(datasets))
    data: dict[str, Any] = {
        "kind": "train", "preset": f["preset"] or "sft", "base_model": base, "output": output,
        "datasets": [{"dataset": d, **({"weight": w} if weights else {})}
                     for d, w in zip(datasets, weights or [1.0] * len(datasets), strict=True)],
        "method": f["method"] or "full", "advanced": parse_advanced(f["advanced"]),
        "distributed": f["distributed"] or "ddp", "precision": f["precision"] or "auto",
        "lr_scheduler_type": f["lr_scheduler_type"] or "cosine",
    }
    for k in (*_INT_FIELDS, *_FLOAT_FIELDS):
        if f[k] is not None:
            data[k] = _number(f[k])
    if data.get("max_steps") == 0:  # 0 in the form: train by epochs
        data["max_steps"] = -1
    for k in _BOOL_FIELDS:
        if f[k] is not None:
            data[k] = bool(f[k])
    if f["eval_steps"]:
        data["eval_steps"] = _number(f["eval_steps"])
    if (f["gpus"] or "").strip():
        data["gpus"] = f["gpus"].strip()
    lora: dict[str, Any] = {}
    for key, name in (("lora_r", "r"), ("lora_alpha", "alpha"), ("lora_dropout", "dropout")):
        if f[key] is not None:
            lora[name] = _number(f[key])
    if f["lora_targets"] is not None:
        lora["target_modules"] = [t.strip() for t in re.split(r"[,\s]+", f["lora_targets"]) if t.strip()]
    if lora:
        data["lora"] = lora
    data.update(executor_fields(*(f[k] for k in EXECUTOR_FIELDS)))
    spec = parse_spec(data)
    assert isinstance(spec, TrainSpec)
    return spec


def command_text(spec: TrainSpec) -> str:
    return ("Save the spec as `train.yaml` and run it from a shell: `hala run train.yaml --wait` "
            "(stop it with `hala jobs cancel ID`; continue from a checkpoint with "
            "`hala jobs resume ID [--checkpoint NAME] [--set max_steps=N]`).")


# --------------------------------------------------------------------------- db reads for the form

def base_model_choices(settings: Settings) -> list[tuple[str, str]]:
    """Model artifacts that can be fine-tuned (not the checkpoints of earlier runs); demo models say so."""
    with read_scope(settings.db_url) as s:
        arts = [a for a in list_artifacts(s, "model") if not (a.meta or {}).get("checkpoint")]
    return [(f"{a.name}  ·  random weights (demo)" if (a.meta or {}).get("demo") else a.name, a.name) for a in arts]


def dataset_rows(settings: Settings) -> list[tuple[int, str, str]]:
    """Dataset artifacts as (id, name, kind): kind ``pairs`` or ``sft`` for the corpus export, else ``""``."""
    with read_scope(settings.db_url) as s:
        arts = list_artifacts(s, "dataset")
    rows = []
    for a in arts:
        meta = a.meta or {}
        kind = meta.get("kind") if meta.get("kind") in ("pairs", "sft") else (
            "pairs" if a.name.endswith("-pairs") else "sft" if a.name.endswith("-sft") else "")
        rows.append((a.id, a.name, kind))
    return rows


def dataset_choices(settings: Settings) -> list[tuple[str, str]]:
    rows = dataset_rows(settings)
    order = {"pairs": 0, "sft": 1, "": 2}
    rows.sort(key=lambda r: (order[r[2]], r[1]))
    return [(f"{name}  ·  {kind}" if kind else name, name) for _, name, kind in rows]


def preset_datasets(settings: Settings, preset: str, current: list[str] | None) -> list[str]:
    """The datasets a preset starts from: the current ones if they fit it, else the newest export of its kind."""
    want = PRESET_DEFAULTS.get(preset, PRESET_DEFAULTS["sft"])["dataset_kind"]
    rows = dataset_rows(settings)
    kinds = {name: kind for _, name, kind in rows}
    current = [c for c in (current or []) if c]
    if current and all(kinds.get(c, want) == want for c in current):
        return current
    fitting = sorted((r for r in rows if r[2] == want), key=lambda r: -r[0])
    return [fitting[0][1]] if fitting else []


def taken_outputs(settings: Settings) -> set[str]:
    """Names a new run should not write to: model artifacts and the outputs of train jobs."""
    with read_scope(settings.db_url) as s:
        taken = set(s.scalars(select(Artifact.name).where(Artifact.kind == "model")))
        taken |= {(j.spec or {}).get("output") for j in s.scalars(select(Job).where(Job.kind == "train"))}
    return {t for t in taken if t}


def suggest_output(settings: Settings, base: str | None, preset: str) -> str:
    """A free output name: ``<base>-<preset>-<n>`` (no such model artifact, folder or train job output yet)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", (base or "model").rstrip("/").split("/")[-1]).strip("-.") or "model"
    stem = f"{stem[:70]}-{'translator' if preset == 'translator' else 'sft'}"
    taken = taken_outputs(settings)
    n = 1
    while f"{stem}-{n}" in taken or (settings.models_dir / f"{stem}-{n}").exists():
        n += 1
    return f"{stem}-{n}"


def check_output_not_in_use(settings: Settings, output: str) -> None:
    """ValueError when a queued or running train job already writes ``output`` (two runs, one model folder)."""
    with read_scope(settings.db_url) as s:
        for j in s.scalars(select(Job).where(Job.kind == "train", Job.status.in_(("queued", "claimed", "running")))):
            if (j.spec or {}).get("output") == output:
                raise ValueError(f"output {output!r} is the output of job {j.id}, which is {j.status}; choose "
                                 "another name")


# --------------------------------------------------------------------------- db reads for the live view

def train_job_choices(settings: Settings, limit: int = 200) -> list[tuple[str, int]]:
    """Train jobs, newest first, as (``#id · output · status``, id) for the run and compare pickers."""
    with read_scope(settings.db_url) as s:
        jobs = list(s.scalars(select(Job).where(Job.kind == "train").order_by(Job.id.desc()).limit(limit)))
    out = []
    for j in jobs:
        spec = j.spec or {}
        label = f"#{j.id} · {spec.get('output', '')} · {j.status}"
        if j.resume_of_id:
            label += f" · resumes #{j.resume_of_id}"
        if j.owner:
            label += f" · {j.owner}"
        out.append((label, j.id))
    return out


def checkpoints(settings: Settings, job_id: int | None) -> list[tuple[str, int]]:
    """(name, step) of a job's checkpoint artifacts, latest first."""
    if not job_id:
        return []
    with read_scope(settings.db_url) as s:
        arts = s.scalars(select(Artifact).where(Artifact.kind == "model", Artifact.job_id == int(job_id)))
        points = [(a.name, int((a.meta or {}).get("step") or 0)) for a in arts if (a.meta or {}).get("checkpoint")]
    return sorted(points, key=lambda p: -p[1])


def _get_job(settings: Settings, job_id: int | None) -> Job | None:
    if not job_id:
        return None
    with read_scope(settings.db_url) as s:
        job = s.get(Job, int(job_id))
        return job if job is not None and job.kind == "train" else None


def view_key(settings: Settings, job: Job | None) -> str:
    """What changes when the live view must be redrawn: status, step, metrics and checkpoints of the job."""
    if job is None:
        return ""
    with read_scope(settings.db_url) as s:
        n_metrics = s.scalar(select(func.count(Metric.id)).where(Metric.job_id == job.id)) or 0
        n_arts = s.scalar(select(func.count(Artifact.id)).where(Artifact.job_id == job.id)) or 0
    return f"{job.id}:{job.status}:{job.progress_done}:{job.progress_message}:{n_metrics}:{n_arts}"


def list_key(settings: Settings) -> str:
    with read_scope(settings.db_url) as s:
        rows = s.execute(select(Job.id, Job.status).where(Job.kind == "train").order_by(Job.id)).all()
    return ",".join(f"{i}{st[0]}" for i, st in rows)


def _last(series: dict[str, list[tuple[int, float]]], key: str) -> float | None:
    points = series.get(key) or []
    return points[-1][1] if points else None


def _resume_steps(settings: Settings, job_id: int) -> list[tuple[int, int]]:
    """(job id, step) where each job of the chain (newest last) resumed its predecessor."""
    out = []
    with read_scope(settings.db_url) as s:
        job = s.get(Job, job_id)
        seen = set()
        while job is not None and job.resume_of_id and job.id not in seen:
            seen.add(job.id)
            ref = (job.spec or {}).get("resume_from")
            art = s.scalar(select(Artifact).where(Artifact.kind == "model", Artifact.name == ref)) if ref else None
            step = (art.meta or {}).get("step") if art is not None else None
            if isinstance(step, int | float):
                out.append((job.id, int(step)))
            job = s.get(Job, job.resume_of_id)
    return out[::-1]


def curves_figure(series: dict[str, list[tuple[int, float]]], resumed: list[tuple[int, int]] = ()) -> go.Figure | None:
    """Loss and eval loss (top), learning rate (middle), grad norm (bottom) against the step; a dashed line
    where the run was resumed. The first trace is always the training loss."""
    if not series:
        return None
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.06, row_heights=[0.5, 0.25, 0.25],
                        subplot_titles=("loss", "learning rate", "grad norm"))

    def line(key: str, name: str, row: int, **kw: Any) -> None:
        points = series.get(key) or []
        fig.add_trace(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], name=name,
                                 mode=kw.pop("mode", "lines"), **kw), row=row, col=1)

    line("loss", "loss", 1, line=dict(color="#0f766e"))
    line("eval_loss", "eval loss", 1, mode="lines+markers", line=dict(color="#b45309", dash="dot"))
    line("learning_rate", "learning rate", 2, line=dict(color="#4338ca"))
    line("grad_norm", "grad norm", 3, line=dict(color="#6b7280"))
    for job_id, step in resumed:
        fig.add_vline(x=step, line=dict(color="#9ca3af", dash="dash", width=1))
        fig.add_annotation(x=step, y=1, yref="paper", text=f"resumed (job {job_id})", showarrow=False,
                           xanchor="left", font=dict(size=10, color="#6b7280"))
    fig.update_layout(height=560, margin=dict(l=50, r=20, t=40, b=40), legend=dict(orientation="h", y=-0.08),
                      hovermode="x unified")
    fig.update_xaxes(title_text="step", row=3, col=1)
    return fig


def compare_figure(settings: Settings, job_ids: list[int] | None) -> go.Figure | None:
    """The loss curves (and dotted eval loss) of several runs, each with its resume chain, in one figure."""
    ids = [int(j) for j in (job_ids or []) if j]
    if not ids:
        return None
    fig = go.Figure()
    palette = ("#0f766e", "#b45309", "#4338ca", "#be123c", "#15803d", "#7c3aed", "#0369a1", "#a16207")
    with read_scope(settings.db_url) as s:
        for i, jid in enumerate(ids):
            job = s.get(Job, jid)
            if job is None:
                continue
            series = run_curves(s, jid)
            name = f"#{jid} {(job.spec or {}).get('output', '')}"
            color = palette[i % len(palette)]
            for key, dash, suffix in (("loss", None, ""), ("eval_loss", "dot", " eval")):
                points = series.get(key) or []
                if points or key == "loss":
                    fig.add_trace(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="lines",
                                             name=name + suffix, legendgroup=str(jid),
                                             line=dict(color=color, dash=dash)))
    fig.update_layout(title="loss by run", xaxis_title="step", yaxis_title="loss", height=420,
                      margin=dict(l=50, r=20, t=40, b=40))
    return fig


def _fmt(v: Any, digits: int = 4) -> str:
    return f"{v:.{digits}g}" if isinstance(v, int | float) else ("" if v is None else str(v))


def job_view(settings: Settings, job: Job | None) -> tuple[str, Any, str]:
    """(header, curves figure, result or error block) of a train job."""
    if job is None:
        return "<i>no training run yet: launch one above, or pick a run</i>", None, ""
    spec = job.spec or {}
    with read_scope(settings.db_url) as s:
        series = run_curves(s, job.id)
    resumed = _resume_steps(settings, job.id)
    head = job_header(job, f"{spec.get('output')} ({spec.get('preset')}, {spec.get('method')})")
    stats = [("loss", _fmt(_last(series, "loss"))), ("eval loss", _fmt(_last(series, "eval_loss"))),
             ("tokens/s", _fmt(_last(series, "tokens_per_s"), 5)), ("lr", _fmt(_last(series, "learning_rate"), 3))]
    line = " · ".join(f"{k} <b>{v}</b>" for k, v in stats if v)
    if job.resume_of_id:
        line += (" · " if line else "") + (f"resumes job {job.resume_of_id} from "
                                           f"<code>{esc(spec.get('resume_from'))}</code>")
    head += f"<div class='train-stats' data-job='{job.id}'>{line}</div>" if line else ""
    points = checkpoints(settings, job.id)
    cps = ", ".join(f"<code>{esc(n)}</code>" for n, _ in points)
    extra = job_error_html(job)
    result = job.result or {}
    if job.status == "cancelled" and points:
        extra += (f"<p class='train-stopped'>⏹️ stopped at step {result.get('stopped_at_step', points[0][1])}; "
                  f"checkpoint <code>{esc(points[0][0])}</code> saved — resume from it below.</p>")
    elif job.status == "succeeded" and result:
        extra = kv_table([("final loss", _fmt(result.get("final_loss"))), ("eval loss", _fmt(result.get("eval_loss"))),
                          ("tokens/s", _fmt(result.get("tokens_per_s"), 5)), ("steps", result.get("steps")),
                          ("seconds", result.get("seconds")), ("model artifact", result.get("model"))])
        extra = f"<div id='train-summary'><p>✅ trained <b>{esc(result.get('model'))}</b></p>{extra}</div>"
    if cps:
        extra += f"<p class='train-checkpoints'>checkpoints: {cps}</p>"
    return head, curves_figure(series, resumed), extra


def _own_or_admin(settings: Settings, who: Caller, job_id: int, action: str) -> None:
    with read_scope(settings.db_url) as s:
        owner = queue.get_job(s, job_id).owner
    if who.role != "admin" and owner and who.name != owner:
        raise gr.Error(f"job {job_id} belongs to {owner}; only its owner or an admin may {action} it")


def job_ref(value: Any) -> int | None:
    """A job id from the run picker: an id, or a label / typed text starting with it (``#12 · …``, ``12``)."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        return int(value) if value > 0 else None
    m = re.match(r"\s*#?(\d+)", str(value))
    if not m:
        raise gr.Error(f"run {value!r}: pick a run from the list or type its job number")
    return int(m.group(1))


def resume_run(settings: Settings, job_id: int, checkpoint: str | None, max_steps: float | None,
               epochs: float | None, owner: str | None) -> tuple[int, str]:
    """Queue a run's continuation from a checkpoint (default: its latest) with optional new max steps / epochs;
    returns (new job id, checkpoint). ValueError when it cannot continue (e.g. max steps not past the checkpoint)."""
    edits: dict[str, Any] = {}
    if max_steps and max_steps > 0:
        edits["max_steps"] = int(max_steps)
    if epochs and epochs > 0:
        edits["num_train_epochs"] = float(epochs)
    old = _get_job(settings, job_id)
    if old is None:
        raise ValueError(f"job {job_id} is not a training run")
    points = dict(checkpoints(settings, job_id))
    at = points.get(checkpoint) if checkpoint else (max(points.values()) if points else None)
    limit = edits.get("max_steps", (old.spec or {}).get("max_steps", -1))
    if at is not None and 0 < limit <= at:
        raise ValueError(f"the checkpoint is at step {at} and max steps would be {limit}: give a new max steps "
                         f"above {at} to train further")
    with session_scope(settings.db_url) as s:
        new = queue.resume(s, job_id, checkpoint, edits, owner=owner)
        return new.id, new.spec.get("resume_from")


# --------------------------------------------------------------------------- the tab

def build(demo: gr.Blocks, settings: Settings, tab: gr.Tab) -> None:
    gr.Markdown("Fine-tune a model with TRL's `SFTTrainer`. Researchers and admins launch, stop and resume runs; "
                "everyone may follow them. Stopping saves a checkpoint; resuming continues its curve.")
    models = base_model_choices(settings)
    datasets = dataset_choices(settings)
    first_model = models[0][1] if models else None
    d = FORM_DEFAULTS
    with gr.Row():
        preset = gr.Radio([("translator", "translator"), ("instruction SFT", "sft")], value=d["preset"],
                          label="preset", elem_id="train-preset")
        method = gr.Radio([("full fine-tune", "full"), ("LoRA", "lora")], value=d["method"], label="method",
                          elem_id="train-method")
        output = gr.Textbox(suggest_output(settings, first_model, d["preset"]), label="output model name",
                            elem_id="train-output")
    gr.Markdown(PRESET_HELP["translator"] + "  \n" + PRESET_HELP["sft"], elem_id="train-preset-help")
    with gr.Row():
        base = gr.Dropdown(models, value=first_model, allow_custom_value=True,
                           label="base model (artifact, local folder or hub id)", elem_id="train-base-model")
        data = gr.Dropdown(datasets, value=preset_datasets(settings, d["preset"], []), multiselect=True,
                           allow_custom_value=True, label="datasets (artifacts, or files/folders in the workspace)",
                           elem_id="train-datasets", scale=2)
        refresh = gr.Button("↻", scale=0, size="sm", elem_id="train-refresh")
    with gr.Row():
        weights = gr.Textbox(d["weights"], label="weights (e.g. 2, 1 in the order of the datasets; blank = equal)",
                             elem_id="train-weights")
        eval_split = gr.Number(d["eval_split"], label="eval split (share held out)", minimum=0, maximum=0.5,
                               step=0.01, elem_id="train-eval-split")
    with gr.Group(visible=d["method"] == "lora") as lora_group, gr.Row():
        lora_r = gr.Number(d["lora_r"], precision=0, label="LoRA r", elem_id="train-lora-r")
        lora_alpha = gr.Number(d["lora_alpha"], precision=0, label="LoRA alpha", elem_id="train-lora-alpha")
        lora_dropout = gr.Number(d["lora_dropout"], label="LoRA dropout", step=0.01, elem_id="train-lora-dropout")
        lora_targets = gr.Textbox(d["lora_targets"], label="target modules (all-linear, or q_proj, v_proj, …)",
                                  elem_id="train-lora-targets")
        merge_lora = gr.Checkbox(d["merge_lora"], label="merge the adapters into the final model",
                                 elem_id="train-merge-lora")
    with gr.Row():
        lr = gr.Number(d["learning_rate"], label="learning rate", step=1e-5, elem_id="train-lr")
        epochs = gr.Number(d["num_train_epochs"], label="epochs", step=0.5, elem_id="train-epochs")
        max_steps = gr.Number(d["max_steps"], precision=0, label="max steps (0 = by epochs)",
                              elem_id="train-max-steps")
        batch = gr.Number(d["per_device_train_batch_size"], precision=0, label="batch size per device",
                          elem_id="train-batch")
        accum = gr.Number(d["gradient_accumulation_steps"], precision=0, label="gradient accumulation",
                          elem_id="train-grad-accum")
        max_length = gr.Number(d["max_length"], precision=0, label="max length (tokens)", elem_id="train-max-length")
    with gr.Row():
        warmup = gr.Number(d["warmup_steps"], label="warmup (< 1: share of steps; ≥ 1: steps)", step=0.01,
                           elem_id="train-warmup")
        scheduler = gr.Dropdown(list(SCHEDULERS), value=d["lr_scheduler_type"], label="LR scheduler",
                                elem_id="train-scheduler")
        weight_decay = gr.Number(d["weight_decay"], label="weight decay", step=0.01, elem_id="train-weight-decay")
        precision = gr.Dropdown(["auto", "fp32", "bf16", "fp16"], value=d["precision"], label="precision",
                                elem_id="train-precision")
        seed = gr.Number(d["seed"], precision=0, label="seed", elem_id="train-seed")
    with gr.Row():
        save_steps = gr.Number(d["save_steps"], precision=0, label="save every (steps)", elem_id="train-save-steps")
        eval_steps = gr.Number(d["eval_steps"], precision=0, label="eval every (steps; 0 = logging × 5)",
                               elem_id="train-eval-steps")
        logging_steps = gr.Number(d["logging_steps"], precision=0, label="log every (steps)",
                                  elem_id="train-logging-steps")
        packing = gr.Checkbox(d["packing"], label="packing", elem_id="train-packing")
        assistant_only = gr.Checkbox(d["assistant_only_loss"], label="assistant-only loss (SFT)",
                                     elem_id="train-assistant-only")
        grad_ckpt = gr.Checkbox(d["gradient_checkpointing"], label="gradient checkpointing",
                                elem_id="train-grad-ckpt")
    with gr.Accordion("Advanced SFTConfig fields and GPUs", open=False):
        advanced = gr.Code(ADVANCED_HELP, language="yaml", interactive=True, lines=4,
                           label="advanced (YAML: any other SFTConfig field)", elem_id="train-advanced")
        with gr.Row():
            num_processes = gr.Number(d["num_processes"], precision=0, label="processes (one per GPU)",
                                      elem_id="train-num-processes")
            gpus = gr.Textbox(d["gpus"], label="GPUs (CUDA_VISIBLE_DEVICES, e.g. 0,1; blank = all)",
                              elem_id="train-gpus")
            distributed = gr.Radio(["ddp", "fsdp"], value=d["distributed"], label="distributed",
                                   elem_id="train-distributed")
    with gr.Row():
        go_btn = gr.Button("Train", variant="primary", elem_id="train-run")
        show = gr.Button("Show command", elem_id="train-show")
    spec_box = gr.Code(language="yaml", visible=False, label="train.yaml", elem_id="train-spec")
    cli = gr.Markdown(visible=False, elem_id="train-cli")

    gr.Markdown("### Run")
    runs = train_job_choices(settings)
    with gr.Row():
        # custom values: an HTTP caller may name any job id (the server checks it)
        run_pick = gr.Dropdown(runs, value=None, label="run (your latest is shown after a refresh)",
                               allow_custom_value=True, elem_id="train-run-pick", scale=3)
        stop_btn = gr.Button("Stop", variant="stop", scale=0, elem_id="train-stop")
    head = gr.HTML(elem_id="train-job")
    result = gr.HTML(elem_id="train-result")
    curves = gr.Plot(label="curves", elem_id="train-curves")
    with gr.Row():
        ckpt = gr.Dropdown([], value=None, label="resume from checkpoint (default: the latest)",
                           allow_custom_value=True, elem_id="train-resume-checkpoint", scale=2)
        resume_steps = gr.Number(0, precision=0, label="new max steps (0 = keep)", elem_id="train-resume-max-steps")
        resume_epochs = gr.Number(0, label="new epochs (0 = keep)", elem_id="train-resume-epochs")
        resume_btn = gr.Button("Resume", scale=0, elem_id="train-resume")
    message = gr.Markdown(elem_id="train-message")
    gr.Markdown("### Compare runs")
    compare = gr.Dropdown(runs, value=[], multiselect=True, allow_custom_value=True, label="runs to overlay",
                          elem_id="train-compare")
    compare_plot = gr.Plot(label="loss by run", elem_id="train-compare-plot")

    where = executor_picker(settings, "train")
    form = {"preset": preset, "base_model": base, "datasets": data, "weights": weights, "eval_split": eval_split,
            "method": method, "lora_r": lora_r, "lora_alpha": lora_alpha, "lora_dropout": lora_dropout,
            "lora_targets": lora_targets, "merge_lora": merge_lora, "learning_rate": lr, "num_train_epochs": epochs,
            "max_steps": max_steps, "per_device_train_batch_size": batch, "gradient_accumulation_steps": accum,
            "max_length": max_length, "packing": packing, "warmup_steps": warmup, "lr_scheduler_type": scheduler,
            "weight_decay": weight_decay, "assistant_only_loss": assistant_only, "save_steps": save_steps,
            "eval_steps": eval_steps, "logging_steps": logging_steps, "seed": seed, "precision": precision,
            "gradient_checkpointing": grad_ckpt, "advanced": advanced, "num_processes": num_processes, "gpus": gpus,
            "distributed": distributed, "output": output, **dict(zip(EXECUTOR_FIELDS, where.inputs, strict=True))}
    assert tuple(form) == FORM_FIELDS

    seen = gr.State("")  # what the live view last drew (redraw only on change)

    def on_preset(p: str, m: str, current: list[str] | None, b: str | None):  # noqa: ANN202
        dflt = PRESET_DEFAULTS.get(p, PRESET_DEFAULTS["sft"])
        return (gr.update(choices=dataset_choices(settings), value=preset_datasets(settings, p, current)),
                dflt["learning_rate"].get(m or "full"), dflt["max_length"], dflt["assistant_only_loss"],
                suggest_output(settings, b, p))

    def on_method(p: str, m: str):  # noqa: ANN202
        dflt = PRESET_DEFAULTS.get(p, PRESET_DEFAULTS["sft"])
        return gr.update(visible=m == "lora"), dflt["learning_rate"].get(m or "full")

    def on_refresh(b: str | None, current: list[str] | None, p: str, out: str | None):  # noqa: ANN202
        ms = base_model_choices(settings)
        b = b or (ms[0][1] if ms else None)
        # a name used since the page was built (e.g. by the run launched before a refresh) gets a fresh one
        fresh = suggest_output(settings, b, p) if not out or out in taken_outputs(settings) else gr.update()
        return (gr.update(choices=ms, value=b), gr.update(choices=dataset_choices(settings), value=current or []),
                gr.update(choices=train_job_choices(settings)), fresh)

    def on_show(**f: Any):  # noqa: ANN202
        try:
            spec = build_spec(**f)
        except ValueError as e:
            raise gr.Error(str(e)) from None
        return gr.update(visible=True, value=spec.to_yaml()), gr.update(visible=True, value=command_text(spec))

    def on_train(request: gr.Request, **f: Any):  # noqa: ANN202
        who = require(settings, request, LAUNCH_ROLES, "launching a training run")
        try:
            spec = build_spec(**f)
            check_output_not_in_use(settings, spec.output)
        except ValueError as e:
            raise gr.Error(str(e)) from None
        job_id = submit_job(settings, spec, who.name, "training")
        picker = gr.update(choices=train_job_choices(settings), value=job_id)
        return picker, "", progress_html("queued", 0, 0, f"job {job_id} → {spec.output}"), "", None

    def on_stop(run: Any, request: gr.Request) -> str:
        who = require(settings, request, LAUNCH_ROLES, "stopping a training run")
        job_id = job_ref(run)
        if job_id is None:
            raise gr.Error("no run shown: launch one or pick a run first")
        _own_or_admin(settings, who, job_id, "stop")
        try:
            with session_scope(settings.db_url) as s:
                if queue.get_job(s, job_id).kind != "train":
                    raise ValueError(f"job {job_id} is not a training run; cancel it in the Runs tab")
                outcome = queue.request_cancel(s, job_id)
        except ValueError as e:
            raise gr.Error(str(e)) from None
        if outcome == "cancelled":
            return f"job {job_id} cancelled before it started (no checkpoint: nothing was trained yet)"
        return (f"job {job_id}: stop requested — saving a checkpoint at the current step; the job then ends as "
                "cancelled and can be resumed from it")

    def on_resume(run: Any, checkpoint: str | None, steps: float | None, epochs_: float | None,
                  request: gr.Request):  # noqa: ANN202
        who = require(settings, request, LAUNCH_ROLES, "resuming a training run")
        job_id = job_ref(run)
        if job_id is None:
            raise gr.Error("no run shown: pick the run to resume first")
        try:
            new_id, frm = resume_run(settings, job_id, (checkpoint or "").strip() or None, steps, epochs_, who.name)
        except ValueError as e:
            raise gr.Error(str(e)) from None
        gr.Info(f"queued job {new_id}: resumes job {job_id} from {frm}")
        picker = gr.update(choices=train_job_choices(settings), value=new_id)
        return picker, "", f"queued job {new_id}: resumes job {job_id} from `{frm}`"

    def draw(job: Job | None, seen_key: str, current_ckpt: str | None, force: bool = False,
             set_pick: bool = True):  # noqa: ANN202
        """The live view's outputs: (seen, run picker, head, curves, result, checkpoint, compare). The picker's
        value is only set when the view attaches to a job itself (not while the user may be picking one)."""
        key = view_key(settings, job) + "|" + list_key(settings)
        if key == seen_key and not force:
            return (seen_key, *(gr.update() for _ in range(6)))
        old_view, _, old_list = (seen_key or "|").partition("|")
        new_view, _, new_list = key.partition("|")
        view = (job_view(settings, job) if new_view != old_view or force
                else (gr.update(), gr.update(), gr.update()))
        names = [n for n, _ in checkpoints(settings, job.id if job else None)]
        ck = gr.update(choices=names, value=current_ckpt if current_ckpt in names else (names[0] if names else None))
        pick = {"value": job.id if job else None} if set_pick else {}
        if new_list != old_list or force:
            choices = train_job_choices(settings)
            picker, cmp = gr.update(choices=choices, **pick), gr.update(choices=choices)
        else:
            picker, cmp = gr.update(**pick), gr.update()
        return (key, picker, *view, ck, cmp)

    def on_tick(run: Any, seen_key: str, current_ckpt: str | None, request: gr.Request):  # noqa: ANN202
        try:
            who = caller(settings, request)
        except gr.Error:
            return (seen_key, *(gr.update() for _ in range(6)))
        job_id = job_ref(run)
        job = _get_job(settings, job_id) if job_id else latest_job(settings, "train", who.name)
        return draw(job, seen_key, current_ckpt, set_pick=job_id is None and job is not None)

    def on_open(request: gr.Request):  # noqa: ANN202
        """A page load: show the caller's latest run (the db remembers it, not the page)."""
        try:
            who = caller(settings, request)
        except gr.Error:
            return ("", *(gr.update() for _ in range(6)))
        return draw(latest_job(settings, "train", who.name), "", None, force=True)

    def on_pick(run: Any, request: gr.Request):  # noqa: ANN202
        caller(settings, request)
        return draw(_get_job(settings, job_ref(run)), "", None, force=True)

    def on_compare(runs_: list[Any] | None, request: gr.Request):  # noqa: ANN202
        caller(settings, request)
        return compare_figure(settings, [j for j in (job_ref(r) for r in runs_ or []) if j])

    live = [seen, run_pick, head, curves, result, ckpt, compare]
    preset.input(on_preset, [preset, method, data, base], [data, lr, max_length, assistant_only, output],
                 api_visibility="private")
    method.input(on_method, [preset, method], [lora_group, lr], api_visibility="private")
    for trigger in (refresh.click, tab.select):  # models, datasets and runs made since the page was built
        trigger(on_refresh, [base, data, preset, output], [base, data, compare, output], api_visibility="private")
    show.click(on_show, inputs_kwargs=form, outputs=[spec_box, cli], api_visibility="private")
    go_btn.click(on_train, inputs_kwargs=form, outputs=[run_pick, seen, head, result, curves], api_name="train")
    stop_btn.click(on_stop, run_pick, message, api_name="train_stop")
    resume_btn.click(on_resume, [run_pick, ckpt, resume_steps, resume_epochs], [run_pick, seen, message],
                     api_name="train_resume")
    run_pick.input(on_pick, run_pick, live, api_visibility="private")
    compare.change(on_compare, compare, compare_plot, api_visibility="private")
    demo.load(on_open, None, live, api_visibility="private")
    timer = gr.Timer(1.5)
    timer.tick(on_tick, [run_pick, seen, ckpt], live, api_visibility="private", show_progress="hidden")
