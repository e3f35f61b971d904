"""The ``hala`` command line: the same specs and queue as the browser."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from hala_core.settings import Settings

FINAL = ("succeeded", "failed", "cancelled", "interrupted")


def _settings() -> Settings:
    from workbench.bootstrap import open_workspace

    return open_workspace()


def _print(obj: Any, as_json: bool, text: str) -> None:
    print(json.dumps(obj, ensure_ascii=False, indent=2, default=str) if as_json else text)


# -- runs ---------------------------------------------------------------------------------------
def _load_spec_file(path: str) -> dict[str, Any]:
    import yaml

    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ValueError(f"cannot read spec file {path!r}: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(f"{path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping with a 'kind' field")
    return data


def _wait(settings: Settings, job_id: int, quiet: bool) -> dict[str, Any]:
    from db.queries import job_summary
    from db.session import session_scope

    last = None
    while True:
        with session_scope(settings.db_url) as s:
            info = job_summary(s, job_id)
        line = f"job {job_id}: {info['status']} {info['progress']}"
        if not quiet and line != last:
            print(line, file=sys.stderr, flush=True)
            last = line
        if info["status"] in FINAL:
            return info
        time.sleep(0.3)


def _report(info: dict[str, Any], as_json: bool) -> int:
    text = [f"job {info['id']} {info['status']}"]
    if info.get("error"):
        text.append(f"error: {info['error']}")
    for a in info.get("artifacts", []):
        text.append(f"artifact {a['kind']} {a['name']}: {a['path']}")
    _print(info, as_json, "\n".join(text))
    return 0 if info["status"] == "succeeded" else 1


def cmd_run(args: argparse.Namespace) -> int:
    from db.session import read_scope, session_scope
    from jobs.precheck import precheck
    from jobs.queue import enqueue
    from jobs.worker import live_worker

    settings = _settings()
    spec_data = _load_spec_file(args.spec)
    with read_scope(settings.db_url) as s:  # checks may be slow: no write lock meanwhile
        spec = precheck(s, settings, spec_data)
    with session_scope(settings.db_url) as s:
        job = enqueue(s, spec, owner=args.owner)
        if args.inline:  # run here: no worker may claim it first (workers claim only their executor's jobs)
            job.executor = "inline"
        job_id = job.id
    if not args.json:
        print(f"queued job {job_id} ({spec.kind})", file=sys.stderr)  # type: ignore[attr-defined]
    if args.inline:
        return _run_inline(settings, job_id, args.json)
    if not args.wait:
        _print({"id": job_id, "status": "queued"}, args.json, str(job_id))
        return 0
    if live_worker(settings) is None:
        print("note: no worker is running on this host; start `hala worker` or `hala workbench`, "
              "or use --inline to run it here", file=sys.stderr)
    return _report(_wait(settings, job_id, args.json), args.json)


def _run_inline(settings: Settings, job_id: int, as_json: bool) -> int:
    from db.queries import job_summary
    from db.session import session_scope
    from jobs.worker import JobWorker

    JobWorker(settings).run_one(job_id)
    with session_scope(settings.db_url) as s:
        return _report(job_summary(s, job_id), as_json)


def cmd_demo_models(args: argparse.Namespace) -> int:
    from db.session import session_scope
    from hala_core.specs import DemoModelsSpec
    from jobs.queue import enqueue

    settings = _settings()
    spec = DemoModelsSpec.model_validate({"overwrite": args.overwrite, "arch": args.arch,
                                          **({"names": tuple(args.names)} if args.names else {})})
    with session_scope(settings.db_url) as s:
        job = enqueue(s, spec, owner=args.owner)
        job.executor = "inline"  # built here and now: a live worker must not claim it first
        job_id = job.id
    return _run_inline(settings, job_id, args.json)


def cmd_jobs(args: argparse.Namespace) -> int:
    from db.queries import job_summary, jobs_table
    from db.session import session_scope
    from jobs import queue

    settings = _settings()
    with session_scope(settings.db_url) as s:
        if args.jobs_cmd == "list":
            rows = jobs_table(s, kind=args.kind, status=args.status, owner=args.owner, limit=args.limit)
            text = "\n".join(f"{r['id']:>5}  {r['kind']:<12} {r['status']:<11} {r['where']:<28} "
                             f"{r['owner'] or '-':<10} {r['progress']:<14} {r['created']}" for r in rows) or "no jobs"
            _print(rows, args.json, text)
        elif args.jobs_cmd == "show":
            info = job_summary(s, args.id, with_spec=True)
            _print(info, args.json, "\n".join(f"{k}: {v}" for k, v in info.items()))
        elif args.jobs_cmd == "cancel":
            print(f"job {args.id}: {queue.request_cancel(s, args.id)}")
        elif args.jobs_cmd == "retry":
            print(f"queued job {queue.retry(s, args.id, owner=args.owner).id} (retry of {args.id})")
        elif args.jobs_cmd == "clone":
            edits: dict[str, Any] = {}
            import yaml

            for item in args.set or []:
                key, sep, value = item.partition("=")
                if not sep:
                    raise ValueError(f"--set {item!r}: use key=value")
                edits[key] = yaml.safe_load(value)
            print(f"queued job {queue.clone(s, args.id, edits, owner=args.owner).id} (clone of {args.id})")
        elif args.jobs_cmd == "resume":
            edits = {}
            import yaml

            for item in args.set or []:
                key, sep, value = item.partition("=")
                if not sep:
                    raise ValueError(f"--set {item!r}: use key=value")
                edits[key] = yaml.safe_load(value)
            job = queue.resume(s, args.id, args.checkpoint, edits, owner=args.owner)
            print(f"queued job {job.id} (resumes {args.id} from {job.spec['resume_from']})")
        elif args.jobs_cmd == "logs":

            job = queue.get_job(s, args.id)
            log_path = job.log_path
    if args.jobs_cmd == "logs":
        return _logs(settings, args.id, log_path, args.tail, args.follow)
    return 0


def _logs(settings: Settings, job_id: int, log_path: str | None, tail: int, follow: bool) -> int:
    from db.session import session_scope
    from jobs.logs import read_log_tail

    if not log_path:
        print(f"job {job_id} has no log yet (it has not started)", file=sys.stderr)
        return 0
    print(read_log_tail(log_path, tail), end="")
    if not follow:
        return 0
    pos = Path(log_path).stat().st_size
    while True:
        with open(log_path, encoding="utf-8", errors="replace") as fh:
            fh.seek(pos)
            chunk = fh.read()
            pos = fh.tell()
        if chunk:
            print(chunk, end="", flush=True)
        with session_scope(settings.db_url) as s:
            from jobs.queue import get_job

            if get_job(s, job_id).status in FINAL:
                return 0
        time.sleep(0.5)


def cmd_artifacts(args: argparse.Namespace) -> int:
    from db.artifacts import list_artifacts
    from db.session import session_scope

    settings = _settings()
    with session_scope(settings.db_url) as s:
        rows = [{"id": a.id, "kind": a.kind, "name": a.name, "path": a.path, "job": a.job_id, "metadata": a.meta}
                for a in list_artifacts(s, args.kind)]
    _print(rows, args.json, "\n".join(f"{r['id']:>4} {r['kind']:<8} {r['name']:<30} {r['path']}" for r in rows)
           or "no artifacts")
    return 0


# -- corpora ------------------------------------------------------------------------------------
def cmd_corpus(args: argparse.Namespace) -> int:
    from workbench import corpus_ops

    settings = _settings()
    if args.corpus_cmd == "import":
        from hala_core.corpus_io import parse_mapping

        mapping = parse_mapping(args.map) or None
        if args.preview:
            info = corpus_ops.preview(settings, args.file, fmt=args.format, mapping=mapping, encoding=args.encoding,
                                      reference=args.reference, language=args.language)
            text = (f"format: {info['format']}  licence: {info['licence'] or 'unknown'}\n"
                    + "\n".join(json.dumps(r, ensure_ascii=False) for r in info["rows"])
                    + ("\nproblems:\n  " + "\n  ".join(info["problems"]) if info["problems"] else ""))
            _print(info, args.json, text)
            return 0
        stats = corpus_ops.import_file(settings, args.file, args.name, fmt=args.format, mapping=mapping,
                                       on_error=args.on_error, encoding=args.encoding, language=args.language,
                                       max_tokens=args.max_tokens, dedupe=not args.keep_duplicates, limit=args.limit,
                                       reference=args.reference, licence=args.licence,
                                       owner=os.environ.get("HALA_USER"))
        text = "\n".join(f"{k}: {v}" for k, v in stats.items() if k != "problems")
        if stats["problems"]:
            text += "\nskipped records:\n  " + "\n  ".join(stats["problems"])
        _print(stats, args.json, text)
        return 0
    if args.corpus_cmd == "list":
        from db.corpora import list_corpora
        from db.session import read_scope

        with read_scope(settings.db_url) as s:
            rows = list_corpora(s)
        _print(rows, args.json, "\n".join(
            f"{r['corpus']:<24} {r['rows']:>7} rows {r['segments']:>8} segments  {r['language']}  "
            f"{r['licence']:<14} {r['translations']}" for r in rows) or "no corpora")
        return 0
    if args.corpus_cmd == "export":
        info = corpus_ops.export(settings, args.name, translation=args.translation, fmt=args.format, out=args.out,
                                 include=args.include, kind="pairs" if args.pairs else "sft",
                                 name=args.dataset, owner=os.environ.get("HALA_USER"))
        _print(info, args.json, f"{info['records']} {'pairs' if args.pairs else 'records'} → {info['path']}\n"
               f"card: {info['card']}\nrows: " + ", ".join(f"{k} {v}" for k, v in info["counts"].items()))
        return 0
    if args.corpus_cmd == "thresholds":
        from db.corpora import set_thresholds

        values: dict[str, Any] = {}
        for item in args.set or []:
            key, _, val = item.partition("=")
            if not _:
                raise ValueError(f"--set {item!r}: use KEY=VALUE, e.g. --set min_script_share=0.7")
            values[key.strip()] = (val.strip().lower() in ("1", "true", "yes")) if key.strip() == "check_preserved" \
                else float(val)
        out = set_thresholds(settings.db_url, args.name, values)
        _print(out, args.json, f"re-flagged {out['translations']} translations; {out['changed']} changed")
        return 0
    if args.corpus_cmd == "delete":
        from db.corpora import delete_corpus

        delete_corpus(settings.db_url, args.name)
        print(f"deleted corpus {args.name} (its translations and reviews too)")
        return 0
    raise ValueError(f"unknown corpus command {args.corpus_cmd!r}")


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from hala_core.leaderboard import to_csv, to_markdown
    from workbench.leaderboard_data import leaderboard_rows

    settings = _settings()
    rows = leaderboard_rows(settings, args.benchmarks or None, args.base, args.category, args.reported)
    if args.format == "csv":
        text = to_csv(rows) if rows else ""
    elif args.format == "json":
        text = json.dumps(rows, ensure_ascii=False, indent=2)
    else:
        text = to_markdown(rows) if rows else "no evaluation results yet: run an eval job first\n"
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"wrote {len(rows)} rows to {args.out}", file=sys.stderr)
    else:
        print(text, end="")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from hala_core import benchmarks as bm

    settings = _settings()
    if args.bench_cmd == "list":
        rows = [{"name": b.name, "title": b.title, "kind": b.kind, "tasks": list(b.tasks), "headline": b.headline,
                 "needs_hub": b.needs_hub, "runnable": b.runnable, "licence": b.licence}
                for b in bm.available_benchmarks(settings.home)]
        _print(rows, args.json, "\n".join(
            f"{r['name']:<18} {r['kind']:<12} {'needs hub' if r['needs_hub'] else 'offline':<10} "
            f"{'' if r['runnable'] else 'NOT RUNNABLE '}{r['title']}" for r in rows))
        return 0
    local = register_local_benchmark(settings, args.name, args.file, args.question, args.choices, args.answer,
                                     args.format, args.licence, args.answer_format, args.owner)
    print(f"benchmark {local.name}: {local.rows} questions → {local.folder}")
    return 0


def register_local_benchmark(settings: Settings, name: str, file: str, question: str, choices: str, answer: str,
                             fmt: str | None = None, licence: str | None = None, answer_format: str = "auto",
                             owner: str | None = None):  # noqa: ANN201
    """Add a local multiple-choice benchmark from a file and register it as a dataset artifact."""
    from db.artifacts import register_artifact
    from db.session import session_scope
    from hala_core import benchmarks as bm
    from hala_core.settings import resolve_inside

    path = resolve_inside(file, settings.read_roots)
    local = bm.add_local_benchmark(settings.home, name, path, question, choices, answer, fmt=fmt, licence=licence,
                                   source=str(path), answer_format=answer_format)
    with session_scope(settings.db_url) as s:
        register_artifact(s, "dataset", f"benchmark:{local.name}", str(local.folder),
                          {"benchmark": True, "rows": local.rows, "licence": licence or "",
                           "source": str(path), "mapping": local.mapping}, owner=owner)
    return local


def cmd_chat(args: argparse.Namespace) -> int:
    """A terminal chat with the same engine as the Chat tab: /reset, /system TEXT, /exit."""
    from db.session import read_scope
    from hala_core.chat import ChatModel, validate_messages
    from hala_core.engine import GenerationSettings
    from jobs.resolve import resolve_model_ref

    settings = _settings()
    with read_scope(settings.db_url) as s:
        resolved = resolve_model_ref(s, settings, args.model)
    if resolved.path is None:
        raise ValueError(f"{args.model} is a hub id that is not downloaded, and no hub can be reached from here")
    print(f"loading {resolved.path} …", file=sys.stderr, flush=True)
    model = ChatModel.load(resolved.path, device=args.device)
    if getattr(model, "is_demo", False):
        print("note: this is a demo model with random weights: it writes nonsense", file=sys.stderr)
    gen = GenerationSettings(temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens,
                             repetition_penalty=args.repetition_penalty)
    system = args.system
    history: list[dict[str, str]] = []
    print("type a message; /reset clears, /system TEXT sets the system prompt, /exit ends", file=sys.stderr)
    for line in sys.stdin:
        text = line.rstrip("\n")
        if text.strip() in ("/exit", "/quit"):
            break
        if text.strip() == "/reset":
            history = []
            print("(conversation cleared)", file=sys.stderr)
            continue
        if text.startswith("/system "):
            system = text[len("/system "):]
            print("(system prompt set)", file=sys.stderr)
            continue
        msgs = ([{"role": "system", "content": system}] if system else []) + history + [
            {"role": "user", "content": text}]
        try:
            msgs = validate_messages(msgs)
            stream = model.stream(msgs, gen)
            for n in stream.notices:
                print(f"(notice: {n})", file=sys.stderr)
            answer = ""
            for chunk in stream:
                answer += chunk
                print(chunk, end="", flush=True)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            continue
        print(flush=True)
        history = [m for m in msgs if m["role"] != "system"] + [{"role": "assistant", "content": answer}]
    return 0


# -- users and db -------------------------------------------------------------------------------
def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    if os.environ.get("HALA_PASSWORD"):
        return os.environ["HALA_PASSWORD"]
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise ValueError("the two passwords differ")
    return first


def cmd_users(args: argparse.Namespace) -> int:
    from db import users
    from db.session import session_scope

    settings = _settings()
    with session_scope(settings.db_url) as s:
        if args.users_cmd == "add":
            users.add_user(s, args.name, args.role, _password(args))
            print(f"user {args.name} added as {args.role}")
        elif args.users_cmd == "list":
            rows = [{"name": u.name, "role": u.role, "disabled": u.disabled} for u in users.list_users(s)]
            _print(rows, args.json, "\n".join(f"{r['name']:<20} {r['role']}" for r in rows) or "no users")
        elif args.users_cmd == "passwd":
            users.set_password(s, args.name, _password(args))
            print(f"password of {args.name} changed")
        elif args.users_cmd == "role":
            users.set_role(s, args.name, args.role)
            print(f"{args.name} is now {args.role}")
        elif args.users_cmd == "remove":
            users.remove_user(s, args.name)
            print(f"user {args.name} removed")
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    from db.migrate import upgrade
    from hala_core.settings import load_settings

    settings = load_settings().ensure()
    before, after = upgrade(settings.db_url, args.revision)
    print(f"{settings.db_url}: {before or 'empty'} → {after}" if before != after else
          f"{settings.db_url}: already at {after}")
    return 0


# -- long-running processes ---------------------------------------------------------------------
def cmd_worker(args: argparse.Namespace) -> int:
    import signal

    from jobs.worker import JobWorker, WorkerConfig

    settings = _settings()
    names = tuple(n.strip() for n in args.executors.split(",") if n.strip()) if args.executors else None
    worker = JobWorker(settings, WorkerConfig(max_jobs=args.max_jobs, poll_s=args.poll,
                                              global_limit=args.global_limit, executors=names,
                                              max_submitted=args.max_submitted))
    signal.signal(signal.SIGTERM, lambda *_: worker.stop_event.set())
    signal.signal(signal.SIGINT, lambda *_: worker.stop_event.set())
    worker.run_forever()
    return 0


def cmd_workbench(args: argparse.Namespace) -> int:
    from workbench.server import serve

    return serve(_settings(), host=args.host, port=args.port, worker=not args.no_worker,
                 max_jobs=args.max_jobs, share=args.share)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hala", description="Hala Workbench: the translate-and-tune pipeline.")
    sub = p.add_subparsers(dest="cmd", required=True)

    w = sub.add_parser("workbench", help="start the browser workbench (and a worker)")
    w.add_argument("--host", default=os.environ.get("HALA_HOST", "127.0.0.1"))
    w.add_argument("--port", type=int, default=int(os.environ.get("HALA_PORT", "7860")))
    w.add_argument("--no-worker", action="store_true", help="do not start a worker process")
    w.add_argument("--max-jobs", type=int, default=int(os.environ.get("HALA_MAX_JOBS", "1")))
    w.add_argument("--share", action="store_true", help="Gradio share link (off unless asked)")
    w.set_defaults(func=cmd_workbench)

    k = sub.add_parser("worker", help="run jobs from the queue")
    k.add_argument("--max-jobs", type=int, default=int(os.environ.get("HALA_MAX_JOBS", "1")),
                   help="jobs this worker runs at once")
    k.add_argument("--global-limit", type=int, default=None, help="jobs running at once across all workers")
    k.add_argument("--poll", type=float, default=0.25, help="seconds between looks at the queue")
    k.add_argument("--executors", default=os.environ.get("HALA_EXECUTORS"), metavar="local,slurm",
                   help="executors to run (default: local plus those enabled in HALA_HOME/hala.yaml)")
    k.add_argument("--max-submitted", type=int, default=None,
                   help="Slurm jobs this worker keeps submitted at once (default: hala.yaml's max_submitted)")
    k.set_defaults(func=cmd_worker)

    r = sub.add_parser("run", help="queue a job from a spec file (YAML or JSON; - for stdin)")
    r.add_argument("spec")
    r.add_argument("--wait", action="store_true", help="wait; exit 0 only if the job succeeded")
    r.add_argument("--inline", action="store_true", help="run it here now, without a worker (implies --wait)")
    r.add_argument("--json", action="store_true")
    r.add_argument("--owner", default=os.environ.get("HALA_USER"))
    r.set_defaults(func=cmd_run)

    j = sub.add_parser("jobs", help="list, show, cancel, retry, clone jobs and read their logs")
    jsub = j.add_subparsers(dest="jobs_cmd", required=True)
    jl = jsub.add_parser("list")
    jl.add_argument("--kind")
    jl.add_argument("--status")
    jl.add_argument("--owner")
    jl.add_argument("--limit", type=int, default=50)
    for name in ("show", "cancel", "logs", "retry", "clone", "resume"):
        jp = jsub.add_parser(name)
        jp.add_argument("id", type=int)
        if name == "logs":
            jp.add_argument("--tail", type=int, default=200)
            jp.add_argument("--follow", "-f", action="store_true")
        if name in ("clone", "resume"):
            jp.add_argument("--set", action="append", metavar="KEY=VALUE", help="change a spec field")
        if name == "resume":
            jp.add_argument("--checkpoint", default=None, help="checkpoint artifact (default: the run's latest)")
    for name, jp in jsub.choices.items():
        jp.add_argument("--json", action="store_true")
        if name != "list":
            jp.add_argument("--owner", default=os.environ.get("HALA_USER"), help="who the new job belongs to")
    j.set_defaults(func=cmd_jobs)

    a = sub.add_parser("artifacts", help="list models, datasets and reports")
    a.add_argument("action", nargs="?", choices=["list"], default="list")
    a.add_argument("--kind", choices=["model", "dataset", "report"])
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=cmd_artifacts)

    cp = sub.add_parser("corpus", help="import, list, export corpora (translation: `hala run` a translate spec)")
    csub = cp.add_subparsers(dest="corpus_cmd", required=True)
    ci = csub.add_parser("import", help="import a file as a corpus (see --format)")
    ci.add_argument("file", help="file or folder (Alpaca JSON/JSONL, ShareGPT, messages, CSV/TSV, Parquet, a "
                                 "saved datasets folder, NTREX folder / parallel text), or a hub dataset id")
    ci.add_argument("--name", required=True)
    ci.add_argument("--format", default=None, help="alpaca, sharegpt, messages, csv, tsv, parquet, hf, parallel, "
                                                   "hub (default: detected)")
    ci.add_argument("--map", action="append", help="field=column, e.g. --map instruction=question (repeatable)")
    ci.add_argument("--on-error", choices=("abort", "skip"), default="abort",
                    help="a malformed record: stop (default) or skip it and report its line")
    ci.add_argument("--encoding", default=None, help="the file's encoding when it is not UTF-8 (e.g. cp1256)")
    ci.add_argument("--language", choices=("en", "ar"), default="en", help="the language of the source text")
    ci.add_argument("--reference", default=None, help="parallel: the aligned reference file")
    ci.add_argument("--max-tokens", type=int, default=256, help="segment budget: longer texts are split")
    ci.add_argument("--keep-duplicates", action="store_true", help="keep records that repeat an earlier one")
    ci.add_argument("--limit", type=int, default=None, help="import the first N records only")
    ci.add_argument("--licence", default=None, help="the data's licence (default: read from a LICENSE file)")
    ci.add_argument("--preview", action="store_true", help="show the format and first rows; import nothing")
    ci.add_argument("--json", action="store_true")
    cl = csub.add_parser("list")
    cl.add_argument("--json", action="store_true")
    ce = csub.add_parser("export", help="write the reviewed corpus (SFT messages) or bilingual pairs")
    ce.add_argument("name")
    ce.add_argument("--translation", default=None, help="which translation (default: the newest)")
    ce.add_argument("--format", choices=("jsonl", "parquet", "hf"), default="jsonl")
    ce.add_argument("--out", default=None, help="file (jsonl/parquet) or folder (hf); default: in the workspace")
    ce.add_argument("--include", choices=("reviewed", "passed"), default="reviewed",
                    help="reviewed: accepted/edited only; passed: also unreviewed segments that passed the filters")
    ce.add_argument("--pairs", action="store_true", help="bilingual EN↔AR pairs for translator fine-tuning")
    ce.add_argument("--dataset", default=None, help="dataset artifact name")
    ce.add_argument("--json", action="store_true")
    ct = csub.add_parser("thresholds", help="set quality-filter thresholds and re-flag the corpus's translations")
    ct.add_argument("name")
    ct.add_argument("--set", action="append", help="e.g. --set min_script_share=0.7 --set max_length_ratio=2.5")
    ct.add_argument("--json", action="store_true")
    cd = csub.add_parser("delete")
    cd.add_argument("name")
    cp.set_defaults(func=cmd_corpus)

    lb = sub.add_parser("leaderboard", help="the leaderboard of measured scores (md, csv or json)")
    lb.add_argument("--format", choices=["md", "csv", "json"], default="md")
    lb.add_argument("--benchmarks", nargs="*", help="benchmarks in the average (default: all evaluated)")
    lb.add_argument("--base", help="add deltas against this model")
    lb.add_argument("--category", choices=["nano", "small", "other", "unknown"])
    lb.add_argument("--reported", action="store_true", help="add the report's published averages, labelled")
    lb.add_argument("--out", help="write to this file instead of stdout")
    lb.set_defaults(func=cmd_leaderboard)

    bn = sub.add_parser("bench", help="benchmarks: list them, or add a local multiple-choice set from a file")
    bsub2 = bn.add_subparsers(dest="bench_cmd", required=True)
    bl = bsub2.add_parser("list")
    bl.add_argument("--json", action="store_true")
    ba = bsub2.add_parser("add", help="e.g. hala bench add my_mcq q.csv --question question --choices A,B,C,D "
                                      "--answer answer")
    ba.add_argument("name")
    ba.add_argument("file")
    ba.add_argument("--question", required=True, help="field (dotted path) holding the question")
    ba.add_argument("--choices", required=True,
                    help="field holding the list of choices (e.g. question.choices[].text) or columns A,B,C,D")
    ba.add_argument("--answer", required=True, help="field holding the answer (letter, 0-based index or text)")
    ba.add_argument("--answer-format", default="auto", choices=["auto", "letter", "index", "text"])
    ba.add_argument("--format", choices=["jsonl", "json", "csv", "tsv"])
    ba.add_argument("--licence")
    ba.add_argument("--owner", default=os.environ.get("HALA_USER"))
    bn.set_defaults(func=cmd_bench)

    c = sub.add_parser("chat", help="chat with a model in the terminal (the Chat tab's engine)")
    c.add_argument("model", help="artifact name, folder or hub id")
    c.add_argument("--system", default="")
    c.add_argument("--temperature", type=float, default=0.7)
    c.add_argument("--top-p", type=float, default=0.95)
    c.add_argument("--max-new-tokens", type=int, default=256)
    c.add_argument("--repetition-penalty", type=float, default=1.1)
    c.add_argument("--device", default=os.environ.get("HALA_CHAT_DEVICE", "cpu"))
    c.set_defaults(func=cmd_chat)

    d = sub.add_parser("demo-models", help="build the tiny random-weight demo models (offline)")
    d.add_argument("--overwrite", action="store_true")
    d.add_argument("--arch", choices=["lfm2", "llama"], default="lfm2",
                   help="lfm2 (default: the Hala models' architecture) or llama (runs on vLLM's CPU build)")
    d.add_argument("--names", nargs="+", default=None, help="model names (default: demo-<arch>-a demo-<arch>-b)")
    d.add_argument("--json", action="store_true")
    d.add_argument("--owner", default=os.environ.get("HALA_USER"))
    d.set_defaults(func=cmd_demo_models)

    u = sub.add_parser("users", help="manage accounts (roles: admin, researcher, annotator)")
    usub = u.add_subparsers(dest="users_cmd", required=True)
    ua = usub.add_parser("add")
    ua.add_argument("name")
    ua.add_argument("--role", required=True, choices=["admin", "researcher", "annotator"])
    ua.add_argument("--password-stdin", action="store_true")
    ul = usub.add_parser("list")
    ul.add_argument("--json", action="store_true")
    up = usub.add_parser("passwd")
    up.add_argument("name")
    up.add_argument("--password-stdin", action="store_true")
    ur = usub.add_parser("role")
    ur.add_argument("name")
    ur.add_argument("role", choices=["admin", "researcher", "annotator"])
    ux = usub.add_parser("remove")
    ux.add_argument("name")
    u.set_defaults(func=cmd_users)

    b = sub.add_parser("db", help="database schema")
    bsub = b.add_subparsers(dest="db_cmd", required=True)
    bu = bsub.add_parser("upgrade")
    bu.add_argument("revision", nargs="?", default="head")
    b.set_defaults(func=cmd_db)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=os.environ.get("HALA_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
