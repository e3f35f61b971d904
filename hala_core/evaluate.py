"""The eval step: models × benchmarks, multiple choice through lm-evaluation-harness, translation through our engine.

For each model (all resolved and checked first, so a bad reference fails before anything runs):

- **lm-eval benchmarks** (multiple choice, and raw lm-eval task names) run in ONE ``lm_eval.simple_evaluate`` call
  with ``model="hf"``, ``model_args="pretrained=<path>,dtype=float32"`` (``bfloat16`` on CUDA) and a
  ``TaskManager`` that indexes only the folders the requested tasks live in (the workspace folder of each local
  benchmark, the pinned ``lm_eval/tasks`` sub-folders of registry benchmarks): lm-eval's ~14,000 built-in task
  YAMLs (~6 s) are indexed only when a raw task name needs them (and then only to find their folder). Requested
  names whose tasks another requested group already runs (MadinahQA's stand-in inside ArabicMMLU) are not passed
  twice, which lm-eval refuses; they are read from the same results.
- **translation benchmarks** (NTREX-128) go through :func:`hala_core.translation.load_parallel`,
  :func:`~hala_core.translation.build_prompts`, :class:`hala_core.engine.TransformersEngine` (greedy, batched,
  ``translation_max_new_tokens``), :func:`~hala_core.translation.clean_output` and
  :func:`~hala_core.translation.score` (corpus chrF++ and BLEU) — the same path as corpus translation and the
  quantization report, so the numbers agree. ``limit`` is the number of sentence pairs, from the top of
  newstest2019; without a limit :data:`DEFAULT_TRANSLATION_PAIRS` (50) pairs are translated (NTREX has 1,997),
  which keeps a CPU run to minutes; give ``limit`` for more.

What is recorded (``ctx.record_eval``, one call per model):

- results: one row per task × metric as lm-eval reports it (leaf tasks, and lm-eval's size-weighted aggregate
  of a group under the group's name), and a benchmark row per benchmark (``task == benchmark``) for each metric
  its tasks share: the task's own value for a one-task benchmark, else the **unweighted mean over its leaf tasks**
  (stderr: ``sqrt(Σ se²) / k``). Translation: ``chrf++`` and ``bleu`` (0–100) with ``task == benchmark``.
- samples: every example as the model saw and answered it. Multiple choice: the prompt (with any shots), the
  scored continuations, the model's log-likelihood of each, the right continuation, ``correct`` (the argmax of
  the raw log-likelihoods is the gold one: lm-eval's per-sample ``acc``) and ``score`` (the per-sample headline
  metric). Translation: prompt, generated translation, reference, ``correct=None`` and the sentence chrF++.

With ``engine: vllm`` the multiple-choice benchmarks run on lm-eval's ``vllm`` model (made by
:func:`hala_core.engine_vllm.lm_eval_vllm`: the CPU build needs a shim for lm-eval, and the CPU environment defaults
are set first) and the translation benchmarks on :class:`hala_core.engine_vllm.VllmEngine` wrapping the same
``vllm.LLM``, so each model is loaded once.

A report artifact per model (``eval-job<id>-<model>``) keeps lm-eval's results JSON without the per-sample logs,
the translation scores, and a Markdown table.
"""

from __future__ import annotations

import gc
import json
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hala_core import benchmarks as bm
from hala_core.context import ResolvedModel, RunContext, StopRequested
from hala_core.models import ModelInfo, inspect_model, looks_like_hub_id
from hala_core.specs import NAME_RE, EvalSpec

DEFAULT_TRANSLATION_PAIRS = 50
RESULTS_FILE = "results.json"
REPORT_FILE = "report.md"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "spiece.model")


@dataclass(frozen=True)
class EvalModel:
    ref: str
    path: Path
    label: str  # safe for an artifact name
    artifact_id: int | None
    info: ModelInfo
    metadata: dict[str, Any]


# --------------------------------------------------------------------------- checks before running

def resolve_eval_model(ref: str, resolve: Any, purpose: str = "evaluation") -> EvalModel:
    """Resolve a model reference and check that it is a local causal-LM folder with a tokenizer (ValueError).

    ``purpose`` names what the model is for in the messages (evaluation, translation, …)."""
    try:
        resolved: ResolvedModel = resolve(ref)
    except ValueError as e:
        raise ValueError(f"model {ref!r}: {e}") from None
    if resolved.path is None or not Path(resolved.path).exists():
        if resolved.hub_id or looks_like_hub_id(ref):
            hub_id = resolved.hub_id or ref
            raise ValueError(
                f"model {ref!r} looks like a hub id ({hub_id}) that is not available locally, and {purpose} reads "
                "local folders only; download it where a hub is reachable (e.g. `hf download "
                f"{hub_id} --local-dir DIR`), copy it here and give the folder, or register it as a model artifact")
        where = f" (looked in {resolved.path})" if resolved.path is not None else ""
        raise ValueError(f"model {ref!r} was not found{where}; give a model artifact name or a local model folder")
    try:
        info = inspect_model(resolved.path)
    except ValueError as e:
        raise ValueError(f"model {ref!r} cannot be loaded for {purpose}: {e}") from None
    from hala_core.quantize import _causal_lm_classes

    classes, model_types = _causal_lm_classes()
    arch = info.architecture
    ok = (arch in classes or arch.endswith(("ForCausalLM", "LMHeadModel"))) if arch else info.model_type in model_types
    if not ok:
        raise ValueError(f"model {ref!r} cannot be loaded for {purpose}: its architecture "
                         f"{arch or info.model_type or 'unknown'} is not a causal language model "
                         f"({purpose} needs AutoModelForCausalLM)")
    folder = Path(info.path)
    if not any((folder / f).is_file() for f in _TOKENIZER_FILES):
        raise ValueError(f"model {ref!r} cannot be loaded for {purpose}: {folder} has no tokenizer files "
                         f"({', '.join(_TOKENIZER_FILES[:3])}, …); save the tokenizer with the model")
    if resolved.artifact_id is not None or NAME_RE.match(ref):
        name = ref  # an artifact or another plain name
    elif looks_like_hub_id(ref) or (resolved.hub_id and not Path(ref).expanduser().exists()):
        name = ref.replace("/", "--")
    else:
        name = folder.name  # a path
    label = re.sub(r"[^A-Za-z0-9._-]+", "-", name.replace("/", "--")).strip("-.")[:60] or "model"
    return EvalModel(ref=ref, path=folder, label=label, artifact_id=resolved.artifact_id, info=info,
                     metadata=dict(resolved.metadata or {}))


def prepare_benchmarks(names: tuple[str, ...] | list[str], workspace: Path, data_dir: Path | None,
                       hub: bool | None = None) -> list[bm.Benchmark]:
    """Resolve names, build/check the built-ins, refresh local task YAMLs and check that everything can run here.

    Cheap apart from a raw lm-eval task name (lm-eval's task index, ~6 s once): the UI may call it before
    queueing."""
    benches = bm.resolve_benchmarks(names, workspace)
    bm.check_runnable(benches, hub=hub)
    for b in benches:
        if b.name in bm.BENCHMARKS and bm.BENCHMARKS[b.name].builtin_data is not None:
            bm.ensure_builtin(b.name, workspace, data_dir)
        elif b.local:
            local = bm.local_benchmark(workspace, b.name)
            if local is None or not local.data_path.is_file():
                raise ValueError(f"local benchmark {b.name} has no data at {bm.benchmarks_dir(workspace) / b.name}; "
                                 "add it again")
            bm.refresh_task_yaml(workspace, local)
    return benches


def pick_device(device: str) -> tuple[str, str]:
    """(device, dtype): ``auto`` is CUDA when there is one; bfloat16 on CUDA, float32 on CPU."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda was asked for but no CUDA GPU is visible here; use device auto or cpu")
    return device, ("bfloat16" if device.startswith("cuda") else "float32")


# --------------------------------------------------------------------------- lm-eval

def build_task_manager(benches: list[bm.Benchmark], workspace: Path) -> Any:
    """A TaskManager indexing only the folders the benchmarks' tasks live in."""
    from lm_eval.tasks import TaskManager

    dirs, defaults = bm.task_include_paths(benches, workspace)
    return TaskManager(include_path=[str(d) for d in dirs] or None, include_defaults=defaults)


def _leaves(index: dict[str, Any], name: str) -> list[str]:
    return [str(e.name) for e in bm._leaf_entries(index, name)] or [name]


def plan_lm_eval(benches: list[bm.Benchmark], index: dict[str, Any]) -> tuple[list[list[str]], dict[str, list[str]]]:
    """(calls, leaves): the task names to hand to lm-eval — one call, unless two requested groups share some but
    not all tasks — with names whose tasks another requested name already runs left out; and each requested
    name's leaf tasks."""
    requested: list[str] = []
    for b in benches:
        for t in b.tasks:
            if t not in requested:
                requested.append(t)
    leaves = {t: _leaves(index, t) for t in requested}
    kept = []
    for t in requested:
        covered = any(o != t and set(leaves[t]) <= set(leaves[o]) and (set(leaves[t]) != set(leaves[o])
                                                                       or requested.index(o) < requested.index(t))
                      for o in requested)
        if not covered:
            kept.append(t)
    calls: list[list[str]] = []
    for t in kept:
        for call in calls:
            if not any(set(leaves[t]) & set(leaves[o]) for o in call):
                call.append(t)
                break
        else:
            calls.append([t])
    return calls, leaves


def load_vllm_lm(model: EvalModel, spec: EvalSpec, device: str, dtype: str) -> Any:
    """lm-eval's ``vllm`` model for ``model`` with the spec's vLLM options (see
    :func:`hala_core.engine_vllm.lm_eval_vllm`); its ``.model`` (the ``vllm.LLM``) also serves the translation
    benchmarks."""
    from hala_core.engine_vllm import lm_eval_vllm

    try:
        return lm_eval_vllm(model.path, dtype=dtype, device=device, batch_size=spec.batch_size,
                            **spec.vllm.engine_kwargs())
    except (StopRequested, KeyboardInterrupt):
        raise
    except Exception as e:  # noqa: BLE001 - say which model, keep the cause chained
        raise ValueError(f"model {model.ref!r}: vLLM could not load it: {type(e).__name__}: {e}") from e


def run_lm_eval(model: EvalModel, tasks: list[str], task_manager: Any, spec: EvalSpec, device: str,
                dtype: str, lm: Any = None) -> dict[str, Any]:
    """One ``lm_eval.simple_evaluate`` call: lm-eval's ``hf`` model from the path, or ``lm`` (an lm-eval model
    made earlier: the ``vllm`` one) when given."""
    import lm_eval

    path = str(model.path)
    model_args: str | dict[str, Any] | None = (f"pretrained={path},dtype={dtype}" if not re.search(r"[,=]", path)
                                               else {"pretrained": path, "dtype": dtype})
    if lm is not None:
        model_args = None
    try:
        res = lm_eval.simple_evaluate(
            model=lm if lm is not None else "hf", model_args=model_args, tasks=list(tasks),
            task_manager=task_manager,
            num_fewshot=spec.num_fewshot, limit=spec.limit, batch_size=spec.batch_size, device=device,
            log_samples=True, apply_chat_template=spec.apply_chat_template,
        )
    except (StopRequested, KeyboardInterrupt):
        raise
    except Exception as e:  # noqa: BLE001 - say which model and tasks, keep the cause chained
        raise ValueError(f"model {model.ref!r}: lm-eval failed on {', '.join(tasks)}: {type(e).__name__}: {e}") from e
    if not res:
        raise ValueError(f"model {model.ref!r}: lm-eval returned no results for {', '.join(tasks)}")
    return dict(res)


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def task_metrics(task_result: dict[str, Any]) -> dict[str, tuple[float, float | None]]:
    """``{"acc": (value, stderr), …}`` from one entry of ``res["results"]`` (filter ``none`` by its bare name,
    other filters as ``metric (filter)``)."""
    out: dict[str, tuple[float, float | None]] = {}
    for key, v in task_result.items():
        if "," not in key:
            continue
        metric, filt = key.split(",", 1)
        if metric.endswith("_stderr"):
            continue
        value = _num(v)
        if value is None:
            continue
        name = metric if filt == "none" else f"{metric} ({filt})"
        out[name] = (value, _num(task_result.get(f"{metric}_stderr,{filt}")))
    return out


def _pick_headline(b: bm.Benchmark, available: list[str]) -> str | None:
    if b.headline in available:
        return b.headline
    return next((m for m in bm.HEADLINE_PREFERENCE if m in available), available[0] if available else None)


def _sample_record(b: bm.Benchmark, task: str, s: dict[str, Any], output_type: str | None,
                   headline: str | None) -> dict[str, Any]:
    args = s.get("arguments") or []
    first = args[0] if args else None
    prompt = str(first[0]) if isinstance(first, list | tuple) and first else str(first or "")
    target = s.get("target")
    score = _num(s.get(headline)) if headline and headline in s else None
    if output_type in ("multiple_choice", "loglikelihood") or (
            output_type is None and all(isinstance(a, list | tuple) and len(a) == 2 and isinstance(a[1], str)
                                        for a in args) and args):
        choices = [str(a[1]).strip() for a in args]
        resps = s.get("filtered_resps") or []
        response = [_num(r[0] if isinstance(r, list | tuple) else r) for r in resps]
        if isinstance(target, int | float) and not isinstance(target, bool) and 0 <= int(target) < len(choices):
            target_text: str | None = choices[int(target)]
        else:
            target_text = None if target is None else str(target)
        correct = bool(_num(s["acc"])) if "acc" in s and _num(s["acc"]) is not None else None
        if score is None and "acc" in s:
            score = _num(s["acc"])
        return {"benchmark": b.name, "task": task, "doc_id": int(s.get("doc_id", 0)), "prompt": prompt,
                "choices": choices, "response": response, "target": target_text, "correct": correct, "score": score}
    fr = s.get("filtered_resps")
    resp = fr[0] if isinstance(fr, list) and fr else fr
    if isinstance(resp, list) and resp:
        resp = resp[0]
    correct = None
    for key in ("exact_match", "acc"):
        if key in s and _num(s[key]) is not None:
            correct = bool(_num(s[key]))
            break
    return {"benchmark": b.name, "task": task, "doc_id": int(s.get("doc_id", 0)), "prompt": prompt, "choices": None,
            "response": None if resp is None else str(resp), "target": None if target is None else str(target),
            "correct": correct, "score": score}


def lm_eval_records(res: dict[str, Any], benches: list[bm.Benchmark], leaves: dict[str, list[str]],
                    harness_version: str, log: Any = None
                    ) -> tuple[list[dict], list[dict], dict[str, float], dict[str, str]]:
    """(results, samples, headline score per benchmark, the metric it is) of one model from lm-eval's output
    (see the module doc)."""
    results: list[dict[str, Any]] = []
    samples: list[dict[str, Any]] = []
    scores: dict[str, float] = {}
    used: dict[str, str] = {}
    rr = res.get("results") or {}
    versions = res.get("versions") or {}
    nshot = res.get("n-shot") or {}
    nsamples = res.get("n-samples") or {}
    configs = res.get("configs") or {}
    all_samples = res.get("samples") or {}

    def n_of(task: str) -> int | None:
        n = nsamples.get(task)
        if isinstance(n, dict):
            return int(n.get("effective", n.get("original", 0)))
        sl = (rr.get(task) or {}).get("sample_len")
        return int(sl) if isinstance(sl, int | float) else None

    def version_of(task: str) -> str | None:
        v = versions.get(task)
        return None if v is None else str(v)

    for b in benches:
        pinned = b.versions
        for t in b.tasks:
            got = version_of(t)
            if log and t in pinned and got is not None and str(pinned[t]) != got:
                log(f"warning: {b.name}: lm-eval reports version {got} for task {t}, pinned {pinned[t]}")
        leaf_names: list[str] = []
        for t in b.tasks:
            for leaf in leaves.get(t, [t]):
                if leaf not in leaf_names:
                    leaf_names.append(leaf)
        missing = [t for t in leaf_names if t not in rr]
        if missing:
            raise ValueError(f"benchmark {b.name}: lm-eval returned no results for {', '.join(missing[:5])}")
        per_leaf = {t: task_metrics(rr[t]) for t in leaf_names}
        shared = [m for m in per_leaf[leaf_names[0]] if all(m in per_leaf[t] for t in leaf_names)]
        headline = _pick_headline(b, shared)
        if headline != b.headline and log:
            log(f"note: {b.name}: headline metric {b.headline} is not reported; using {headline}")
        for t in b.tasks:  # lm-eval's own group aggregates, under the group's name
            if t not in leaf_names and t in rr:
                for metric, (value, se) in task_metrics(rr[t]).items():
                    results.append({"benchmark": b.name, "task": t, "metric": metric, "value": value, "stderr": se,
                                    "n_samples": n_of(t) or sum(n_of(x) or 0 for x in leaves.get(t, [])) or None,
                                    "num_fewshot": nshot.get(t), "harness_version": harness_version,
                                    "task_version": version_of(t) or pinned.get(t)})
        for t in leaf_names:
            for metric, (value, se) in per_leaf[t].items():
                results.append({"benchmark": b.name, "task": t, "metric": metric, "value": value, "stderr": se,
                                "n_samples": n_of(t), "num_fewshot": nshot.get(t),
                                "harness_version": harness_version, "task_version": version_of(t) or pinned.get(t)})
        if leaf_names != [b.name]:  # the benchmark's own rows (a one-task benchmark named after its task has them)
            k = len(leaf_names)
            bench_versions = sorted({v for t in b.tasks if (v := version_of(t) or pinned.get(t))})
            for metric in shared:
                vals = [per_leaf[t][metric][0] for t in leaf_names]
                ses = [per_leaf[t][metric][1] for t in leaf_names]
                se = math.sqrt(sum(x * x for x in ses)) / k if all(x is not None for x in ses) else None  # type: ignore[misc]
                results.append({"benchmark": b.name, "task": b.name, "metric": metric, "value": sum(vals) / k,
                                "stderr": se, "n_samples": sum(n_of(t) or 0 for t in leaf_names),
                                "num_fewshot": nshot.get(leaf_names[0]), "harness_version": harness_version,
                                "task_version": ", ".join(bench_versions)[:50] or None})
        if headline is not None:
            scores[b.name] = sum(per_leaf[t][headline][0] for t in leaf_names) / len(leaf_names)
            used[b.name] = headline
        for t in leaf_names:
            output_type = (configs.get(t) or {}).get("output_type")
            rows = all_samples.get(t) or []
            filters = [s.get("filter") for s in rows]
            keep = "none" if "none" in filters else (filters[0] if filters else None)
            for s in rows:
                if s.get("filter", keep) == keep:
                    samples.append(_sample_record(b, t, s, output_type, headline))
    return results, samples, scores, used


# --------------------------------------------------------------------------- translation

def run_translation(engine: Any, b: bm.Benchmark, spec: EvalSpec, ntrex: Path
                    ) -> tuple[list[dict], list[dict], float, dict[str, Any]]:
    """Translate ``limit`` (default 50) NTREX pairs greedily and score them; (results, samples, headline, detail)."""
    import sacrebleu
    from sacrebleu.metrics import CHRF

    from hala_core import translation
    from hala_core.engine import GenerationSettings

    n = spec.limit or DEFAULT_TRANSLATION_PAIRS
    direction = b.direction or "en-ar"
    sources, references = translation.load_parallel(ntrex, n, direction)
    if not sources:
        raise ValueError(f"benchmark {b.name}: no sentence pairs found in {ntrex}")
    template = spec.translation_template
    prompts = translation.build_prompts(sources, direction, template, engine.tokenizer)
    settings = GenerationSettings(max_new_tokens=spec.translation_max_new_tokens, temperature=0.0,
                                  batch_size=spec.batch_size)
    t0 = time.perf_counter()
    outputs = engine.generate(prompts, settings)
    seconds = time.perf_counter() - t0
    hyps = [translation.clean_output(o, template) for o in outputs]
    corpus = translation.score(hyps, references)
    chrf = CHRF(word_order=2)
    harness = f"sacrebleu {sacrebleu.__version__}"
    version = f"{b.versions.get(b.name, '1.0')} ({template})"
    results = [{"benchmark": b.name, "task": b.name, "metric": m, "value": float(corpus[m]), "stderr": None,
                "n_samples": len(hyps), "num_fewshot": 0, "harness_version": harness, "task_version": version}
               for m in ("chrf++", "bleu")]
    samples = [{"benchmark": b.name, "task": b.name, "doc_id": i, "prompt": p, "choices": None, "response": h,
                "target": r, "correct": None, "score": float(chrf.sentence_score(h, [r]).score)}
               for i, (p, h, r) in enumerate(zip(prompts, hyps, references, strict=True))]
    detail = {"benchmark": b.name, "direction": direction, "template": template, "pairs": len(hyps),
              "max_new_tokens": spec.translation_max_new_tokens, "seconds": round(seconds, 3),
              "generated_tokens": int(getattr(engine, "last_generated_tokens", 0) or 0), **corpus,
              "examples": [{"source": s, "reference": r, "hypothesis": h}
                           for s, r, h in list(zip(sources, references, hyps, strict=True))[:5]]}
    return results, samples, float(corpus[b.headline]), detail


# --------------------------------------------------------------------------- the report artifact

def _write_report(folder: Path, model: EvalModel, res_list: list[dict[str, Any]], translations: list[dict],
                  scores: dict[str, float], headlines: dict[str, str], benches: list[bm.Benchmark], spec: EvalSpec,
                  device: str, dtype: str, timings: dict[str, float]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    from_lm_eval = []
    for res in res_list:
        from_lm_eval.append({k: v for k, v in res.items() if k != "samples"})
    payload = {"model": model.ref, "model_path": str(model.path), "device": device, "dtype": dtype,
               "spec": spec.model_dump(mode="json"), "scores": scores,
               "headline": headlines, "lm_eval": from_lm_eval,
               "translation": translations, "timings_s": timings}
    try:
        from lm_eval.utils import handle_non_serializable
    except ImportError:  # translation-only jobs never import lm-eval
        handle_non_serializable = str  # type: ignore[assignment]
    (folder / RESULTS_FILE).write_text(json.dumps(payload, ensure_ascii=False, indent=2,
                                                  default=handle_non_serializable), encoding="utf-8")
    lines = [f"# Evaluation of {model.ref}", "", f"device {device}, dtype {dtype}, limit {spec.limit}, "
             f"num_fewshot {spec.num_fewshot}", "", "| benchmark | metric | score | notes |", "|---|---|---|---|"]
    for b in benches:
        if b.name in scores:
            note = "stand-in: " + b.stand_in.split(";")[0] if b.stand_in else ""
            lines.append(f"| {b.name} | {headlines.get(b.name, b.headline)} | {scores[b.name]:.4f} | {note} |")
    for res in res_list:
        try:
            from lm_eval.utils import make_table

            lines += ["", "## lm-eval", "", make_table(res)]
            if res.get("groups"):
                lines += [make_table(res, "groups")]
        except Exception:  # noqa: BLE001 - the table is a convenience; results.json has everything
            pass
    for t in translations:
        lines += ["", f"## {t['benchmark']} ({t['direction']}, {t['template']} template, {t['pairs']} pairs)", "",
                  f"chrF++ {t['chrf++']:.2f}, BLEU {t['bleu']:.2f}"]
    (folder / REPORT_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- the step

def evaluate_step(spec: EvalSpec, ctx: RunContext) -> None:
    """Evaluate every model of ``spec`` on every benchmark; record scores and samples, one report per model."""
    t_start = time.perf_counter()
    workspace = Path(ctx.workspace)
    benches = prepare_benchmarks(spec.benchmarks, workspace, ctx.data_dir)
    models: list[EvalModel] = []
    for ref in spec.models:
        m = resolve_eval_model(ref, ctx.resolve_model)
        if any(x.path == m.path for x in models):
            ctx.log(f"note: {ref!r} is the same model folder as an earlier reference; evaluated again")
        models.append(m)
    used: set[str] = set()
    for i, m in enumerate(models):  # report names must differ within the job
        label, n = m.label, 1
        while label in used:
            n += 1
            label = f"{m.label}-{n}"
        used.add(label)
        models[i] = EvalModel(m.ref, m.path, label, m.artifact_id, m.info, m.metadata)
    device, dtype = pick_device(spec.device)
    lm_benches = [b for b in benches if b.kind != "translation"]
    tr_benches = [b for b in benches if b.kind == "translation"]
    ntrex = bm.ensure_builtin(tr_benches[0].name, workspace, ctx.data_dir) if tr_benches else None
    for b in benches:
        if b.stand_in:
            ctx.log(f"note: {b.name}: {b.stand_in}")
    ctx.log(f"evaluating {len(models)} model(s) on {', '.join(b.name for b in benches)} (device {device}, {dtype}, "
            f"limit {spec.limit}, num_fewshot {spec.num_fewshot})")

    task_manager = None
    calls: list[list[str]] = []
    leaves: dict[str, list[str]] = {}
    harness_version = ""
    if lm_benches:
        import lm_eval

        harness_version = str(lm_eval.__version__)
        t0 = time.perf_counter()
        task_manager = build_task_manager(lm_benches, workspace)
        calls, leaves = plan_lm_eval(lm_benches, task_manager.task_index)
        ctx.log(f"lm-eval {harness_version}: {len(task_manager.task_index)} task entries indexed in "
                f"{time.perf_counter() - t0:.2f}s; tasks: {'; '.join(', '.join(c) for c in calls)}")

    total = len(models) * len(benches)
    done = 0
    last_headlines = {b.name: b.headline for b in benches}
    summary: list[dict[str, Any]] = []
    for mi, model in enumerate(models):
        results: list[dict[str, Any]] = []
        samples: list[dict[str, Any]] = []
        scores: dict[str, float] = {}
        headlines: dict[str, str] = {b.name: b.headline for b in benches}

        def check_stop(where: str, model: EvalModel = model, results: list = results, samples: list = samples
                       ) -> None:
            if ctx.should_stop():
                if results:
                    ctx.record_eval(model.ref, model.artifact_id, results, samples)
                raise StopRequested(f"stopped {where}")

        timings: dict[str, float] = {}
        raw_results: list[dict[str, Any]] = []
        translations: list[dict[str, Any]] = []
        engine = None
        vllm_lm = None
        try:
            if lm_benches:
                if spec.engine == "vllm":
                    check_stop(f"before loading {model.ref} into vLLM")
                    ctx.progress(done, total, f"{model.ref}: loading into vLLM")
                    t0 = time.perf_counter()
                    vllm_lm = load_vllm_lm(model, spec, device, dtype)
                    timings["vllm_load"] = round(time.perf_counter() - t0, 3)
                    ctx.log(f"{model.ref}: loaded into vLLM in {timings['vllm_load']:.1f} s")
                for call in calls:
                    check_stop(f"before evaluating {model.ref} on {', '.join(call)}")
                    ctx.progress(done, total, f"{model.ref}: {', '.join(b.name for b in lm_benches)} (lm-eval)")
                    t0 = time.perf_counter()
                    raw_results.append(run_lm_eval(model, call, task_manager, spec, device, dtype, lm=vllm_lm))
                    timings["lm_eval_" + "+".join(call)[:80]] = round(time.perf_counter() - t0, 3)
                merged = _merge_results(raw_results)
                r, s, sc, used = lm_eval_records(merged, lm_benches, leaves, harness_version, log=ctx.log)
                results += r
                samples += s
                scores.update(sc)
                headlines.update(used)
                done += len(lm_benches)
                ctx.progress(done, total, f"{model.ref}: lm-eval done")
                if vllm_lm is not None:  # its LLM serves the translations too, or is shut down now
                    from hala_core.engine_vllm import VllmEngine

                    engine = VllmEngine.from_llm(vllm_lm.model, device=device)
                    vllm_lm = None
                    if not tr_benches:
                        engine.close()
                        engine = None
                if tr_benches or mi + 1 < len(models):
                    gc.collect()  # lm-eval's model is garbage now: free it before the next one is loaded (0.2 s)
            for b in tr_benches:
                check_stop(f"before evaluating {model.ref} on {b.name}")
                ctx.progress(done, total, f"{model.ref}: {b.name} (translation)")
                if engine is None:
                    from hala_core.engine import make_engine

                    engine = make_engine("vllm" if spec.engine == "vllm" else "transformers", model.path,
                                         device=device, dtype=dtype, **spec.vllm.engine_kwargs())
                r, s, headline, detail = run_translation(engine, b, spec, ntrex)  # type: ignore[arg-type]
                results += r
                samples += s
                scores[b.name] = headline
                translations.append(detail)
                timings[b.name] = detail["seconds"]
                done += 1
                ctx.progress(done, total, f"{model.ref}: {b.name} done")
        finally:
            if vllm_lm is not None:  # lm-eval failed or was stopped: shut its vLLM engine down
                from hala_core.engine_vllm import shutdown_llm

                shutdown_llm(vllm_lm.model)
            if engine is not None:
                engine.close()
        ctx.record_eval(model.ref, model.artifact_id, results, samples)
        ordered = {b.name: scores[b.name] for b in benches if b.name in scores}
        for b in benches:
            if b.name in ordered:
                ctx.log_metric(f"{b.name} {headlines[b.name]}", ordered[b.name], step=mi)
                ctx.log(f"{model.ref}: {b.name} {headlines[b.name]} = {ordered[b.name]:.4f}")
        last_headlines = headlines
        name = f"eval-job{ctx.job_id}-{model.label}"
        folder = Path(ctx.artifact_path("report", name))
        _write_report(folder, model, raw_results, translations, ordered, headlines, benches, spec, device, dtype,
                      timings)
        meta = {"kind": "eval", "model": model.ref, "model_path": str(model.path),
                "benchmarks": [b.name for b in benches], "scores": ordered,
                "headline": headlines, "harness_version": harness_version or None,
                "limit": spec.limit, "num_fewshot": spec.num_fewshot, "device": device, "dtype": dtype,
                "engine": spec.engine, "parameters": model.info.parameters,
                "licences": {b.name: b.licence for b in benches},
                "stand_ins": {b.name: b.stand_in for b in benches if b.stand_in}}
        if model.metadata.get("demo"):
            meta.update(demo=True, label=model.metadata.get("label"))
        report_id = ctx.add_artifact("report", name, folder, metadata=meta,
                                     inputs=[model.artifact_id] if model.artifact_id is not None else [])
        summary.append({"model": model.ref, "scores": ordered, "report": name, "report_artifact_id": report_id})
    ctx.progress(total, total, "done")
    ctx.set_result({"models": summary, "headline": last_headlines,
                    "limit": spec.limit, "num_fewshot": spec.num_fewshot,
                    "seconds": round(time.perf_counter() - t_start, 3)})


def _merge_results(parts: list[dict[str, Any]]) -> dict[str, Any]:
    if len(parts) == 1:
        return parts[0]
    merged: dict[str, Any] = {}
    for key in ("results", "versions", "n-shot", "n-samples", "configs", "samples", "group_subtasks",
                "higher_is_better"):
        merged[key] = {}
        for p in parts:
            merged[key].update(p.get(key) or {})
    return merged
