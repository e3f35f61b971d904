"""The review queue at scale: a SQLite workspace with 1,000,000 translated segments, then

(a) in process, each call in its own session as the Review tab makes it: p50/p95/p99 of ``claim_next`` and
    ``save`` (``session_scope``), and of what the tab reads to show an item (``item``, ``history``, ``progress``);
    baseline: a bare ``SELECT 1`` transaction through the same ``session_scope``, and a primary-key fetch;
(b) over HTTP against a real ``hala workbench``: 8 annotator accounts (concurrent clients, one thread and one
    logged-in session and Gradio session_hash each) looping ``review_next`` → ``review_accept`` through ``/gradio_api/call/<api_name>``;
    baseline: the same clients calling the same endpoint (``review_next``: login, queue, handler, render) on a
    10-segment translation whose queue is empty, i.e. HTTP + Gradio + the tab without the big queue's work;
    ``GET /gradio_api/info`` (no queue) is shown too. One client first, then all of them at once.
    It also reports whether any segment was handed to two clients (must be 0) and how many saves conflicted.

The corpus is synthetic (4 segments a row; 20% of the translations already reviewed, 5% in the double-annotation
sample, ~10% flagged) and is bulk-inserted with Core executemany, the secondary indexes dropped during the load
and recreated from their own DDL afterwards (no ANALYZE: the app never runs one either).

Usage: python benchmarks/review_scale.py [--segments 1000000] [--ops 2000] [--clients 8] [--http-seconds 30]
       [--budget-s 30] [--skip-http]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SEGMENTS_PER_ROW = 4
REVIEWED_SHARE = 0.2
FLAGGED_EVERY = 10
EN = ("The committee met on Tuesday to discuss the new budget for schools and hospitals in the region.",
      "Researchers said the results were preliminary and that more data would be needed.",
      "Write a short poem about the sea at night.",
      "Explain why the sky is blue in two sentences.")
AR = ("اجتمعت اللجنة يوم الثلاثاء لمناقشة الميزانية الجديدة للمدارس والمستشفيات في المنطقة.",
      "قال الباحثون إن النتائج أولية وإن هناك حاجة إلى مزيد من البيانات.",
      "اكتب قصيدة قصيرة عن البحر في الليل.",
      "اشرح لماذا السماء زرقاء في جملتين.")


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def summary(name: str, values: list[float], base: float | None = None) -> str:
    ms = [v * 1000 for v in values]
    line = (f"{name:<34} n={len(ms):<5} p50 {pct(ms, .5):7.2f} ms  p95 {pct(ms, .95):7.2f} ms  "
            f"p99 {pct(ms, .99):7.2f} ms")
    if base:
        line += f"  (p50 {pct(ms, .5) / (base * 1000):.1f}x baseline)"
    return line


# --------------------------------------------------------------------------- the workspace

def build(url: str, n_segments: int, name: str = "scale", reviewed_share: float = REVIEWED_SHARE) -> tuple[int, str]:
    """Corpus, run, rows, segments and translations; returns (run_id, "corpus/run")."""
    from sqlalchemy import insert, text

    from db.corpora import DOUBLE_MOD, order_key
    from db.models import Corpus, CorpusRow, Segment, Translation, TranslationRun, utcnow
    from db.session import session_scope

    n_rows = (n_segments + SEGMENTS_PER_ROW - 1) // SEGMENTS_PER_ROW
    now = utcnow()
    chunk = 50_000
    with session_scope(url) as s:
        corpus = Corpus(name=name, source="synthetic", format="alpaca", source_lang="en", licence="CC0-1.0",
                        n_rows=n_rows, n_segments=n_segments)
        s.add(corpus)
        s.flush()
        run = TranslationRun(corpus_id=corpus.id, name="bench", model_ref="synthetic", direction="en-ar",
                             template="chat", settings={}, n_total=n_segments, double_share=0.05, status="done")
        s.add(run)
        s.flush()
        cid, rid = corpus.id, run.id
        conn = s.connection()
        ddl = [r[0] for r in conn.execute(text(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL AND tbl_name IN "
            "('corpus_rows', 'segments', 'translations')"))]
        indexes = [r[0] for r in conn.execute(text(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL AND tbl_name IN "
            "('corpus_rows', 'segments', 'translations')"))]
        for index in indexes:
            conn.execute(text(f'DROP INDEX "{index}"'))
        first_row = (s.scalar(text("SELECT COALESCE(MAX(id), 0) FROM corpus_rows")) or 0) + 1
        first_seg = (s.scalar(text("SELECT COALESCE(MAX(id), 0) FROM segments")) or 0) + 1
        for start in range(0, n_rows, chunk):
            conn.execute(insert(CorpusRow), [
                {"id": first_row + i, "corpus_id": cid, "idx": i, "line": i + 1, "shape": "alpaca",
                 "content_hash": f"{cid:08x}{i:024x}", "meta": None} for i in range(start, min(start + chunk, n_rows))])
        scores = {"script_share": 0.98, "length_ratio": 1.05, "repetition": 0.0, "identical": 0.0,
                  "preserved": 1.0, "empty": 0.0}
        bad = {**scores, "script_share": 0.2}
        n_reviewed = int(n_segments * reviewed_share)
        for start in range(0, n_segments, chunk):
            rng = range(start, min(start + chunk, n_segments))
            conn.execute(insert(Segment), [
                {"id": first_seg + i, "corpus_id": cid, "row_id": first_row + i // SEGMENTS_PER_ROW,
                 "field_idx": i % SEGMENTS_PER_ROW, "field_name": ("instruction", "input", "output", "output")[
                     i % SEGMENTS_PER_ROW], "role": "user" if i % SEGMENTS_PER_ROW < 2 else "assistant",
                 "part": 0 if i % SEGMENTS_PER_ROW < 3 else 1, "text": f"{EN[i % 4]} (#{i})", "spans": None,
                 "sep": " ", "verbatim": False, "reference": None, "n_chars": 100, "n_tokens": 20} for i in rng])
            rows = []
            for i in rng:
                sid = first_seg + i
                flagged = i % FLAGGED_EVERY == 7
                reviewed = i < n_reviewed
                key = order_key(sid)
                rows.append({
                    "run_id": rid, "segment_id": sid, "job_id": None, "text": f"{AR[i % 4]} (#{i})", "n_tokens": 24,
                    "scores": bad if flagged else scores, "flags": "wrong_script" if flagged else "",
                    "passed": not flagged, "order_key": key, "status": "accepted" if reviewed else "unreviewed",
                    "final_text": f"{AR[i % 4]} (#{i})" if reviewed else None, "reason": None,
                    "version": 1 if reviewed else 0, "reviewed_by": "seed" if reviewed else None,
                    "reviewed_at": now if reviewed else None, "claimed_by": None, "claim_expires": None,
                    "double": key % DOUBLE_MOD < 0.05 * DOUBLE_MOD, "second_status": None, "second_text": None,
                    "second_by": None, "second_at": None, "created_at": now})
            conn.execute(insert(Translation), rows)
        for sql in ddl:
            conn.execute(text(sql))
    return rid, f"{name}/bench"


# --------------------------------------------------------------------------- (a) in process

def in_process(settings: Any, run_id: int, run_key: str, n_ops: int, budget_s: float) -> None:
    from sqlalchemy import select, text

    from db import review
    from db.models import Translation
    from db.session import read_scope, session_scope
    from workbench.tabs import review as tab

    url = settings.db_url
    with read_scope(url) as s:
        max_id = s.scalar(select(Translation.id).order_by(Translation.id.desc()).limit(1))
        min_id = s.scalar(select(Translation.id).order_by(Translation.id).limit(1))

    def timed(fn, n: int) -> list[float]:  # noqa: ANN001
        out: list[float] = []
        stop_at = time.monotonic() + budget_s
        for k in range(n):
            t0 = time.perf_counter()
            fn(k)
            out.append(time.perf_counter() - t0)
            if time.monotonic() > stop_at:
                break
        return out

    def select_one(_k: int) -> None:
        with session_scope(url) as s:
            s.execute(text("SELECT 1"))

    def pk_fetch(_k: int) -> None:
        with session_scope(url) as s:
            s.get(Translation, random.randint(min_id, max_id))

    timed(select_one, 50)
    timed(pk_fetch, 50)
    base1 = timed(select_one, n_ops)
    base2 = timed(pk_fetch, n_ops)
    b50 = pct(base1, .5)

    claims: list[float] = []
    items: list[float] = []
    saves: list[float] = []
    users = [f"annotator{i}" for i in range(8)]
    stop_at = time.monotonic() + 3 * budget_s
    for k in range(n_ops):  # claim → show → save, as one annotator after another does it
        user = users[k % len(users)]
        t0 = time.perf_counter()
        with session_scope(url) as s:
            tid = review.claim_next(s, run_id, user, "next")
        claims.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        with read_scope(url) as s:
            it = review.item(s, tid)
        items.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        with session_scope(url) as s:
            review.save(s, tid, user, "accept" if k % 5 else "edit", it["version"],
                        text=None if k % 5 else it["text"] + " (مراجع)")
        saves.append(time.perf_counter() - t0)
        if time.monotonic() > stop_at:
            break

    other: dict[str, list[float]] = {}
    for mode in ("flagged", "random", "second"):
        def claim_save(k: int, mode: str = mode) -> None:
            user = users[k % len(users)]
            with session_scope(url) as s:
                tid = review.claim_next(s, run_id, user, mode)
            if tid is not None:
                with session_scope(url) as s:
                    review.save(s, tid, user, "accept", s.get(Translation, tid).version, second=mode == "second")

        other[mode] = timed(claim_save, min(n_ops, 200))

    def progress(_k: int) -> None:
        with read_scope(url) as s:
            review.progress(s, run_id)

    def hist(_k: int) -> None:
        with read_scope(url) as s:
            review.history(s, random.randint(min_id, min_id + 1000))

    histories = timed(hist, min(n_ops, 200))
    progresses = timed(progress, 20)

    # The Review tab's own handlers (what one HTTP call runs, minus Gradio): next = claim + render + recent,
    # accept = save + claim + render + recent.
    nexts: list[float] = []
    accepts: list[float] = []
    stop_at = time.monotonic() + budget_s
    for k in range(min(n_ops, 200)):
        user = users[k % len(users)]
        t0 = time.perf_counter()
        out = tab.next_item(settings, run_key, "next", user)
        tab._recent(settings, run_key, user)
        nexts.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        tab.save_and_next(settings, "accept", run_key, "next", out[0], out[1], None, "", user)
        tab._recent(settings, run_key, user)
        accepts.append(time.perf_counter() - t0)
        if time.monotonic() > stop_at:
            break

    print("\n(a) in process, one session per call (as the Review tab makes them)")
    print(summary("baseline: SELECT 1 in session_scope", base1))
    print(summary("baseline: primary-key fetch", base2, b50))
    print(summary("claim_next (mode next)", claims, b50))
    print(summary("save (accept / edit)", saves, b50))
    for mode, ts in other.items():
        print(summary(f"claim+save (mode {mode})", ts, b50))
    print(summary("item (read_scope)", items, b50))
    print(summary("history (read_scope)", histories, b50))
    print(summary("progress (read_scope)", progresses, b50))
    print(summary("tab handler: next (claim+render)", nexts, b50))
    print(summary("tab handler: accept (save+next)", accepts, b50))
    ok = pct(claims, .95) <= 0.020 and pct(saves, .95) <= 0.020
    print(f"goal p95 <= 20 ms for claim_next and save: {'met' if ok else 'MISSED'} "
          f"(claim p95 {pct(claims, .95) * 1000:.1f} ms, save p95 {pct(saves, .95) * 1000:.1f} ms)")


# --------------------------------------------------------------------------- (b) over HTTP

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def over_http(settings: Any, run_key: str, empty_key: str, n_clients: int, seconds: float) -> None:
    import requests
    from sqlalchemy import select

    from db.models import Worker
    from db.session import dispose_engines, session_scope
    from jobs.executors import process_alive

    env = {**os.environ, "HALA_HOME": str(settings.home), "HALA_DB_URL": settings.db_url}
    users = [f"annotator{i}" for i in range(n_clients)]
    for name in users:
        subprocess.run([sys.executable, "-m", "workbench.cli", "users", "add", name, "--role", "annotator",
                        "--password-stdin"], input=f"{name}-pw\n", text=True, env=env, check=True,
                       capture_output=True, cwd=ROOT)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = settings.home / "server.log"
    log = open(log_path, "ab")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "workbench.cli", "workbench", "--port", str(port)], env=env,
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        t0 = time.monotonic()
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"workbench exited with {proc.returncode}; see {log_path}")
            try:
                if requests.get(url + "/", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() - t0 > 120:
                raise RuntimeError(f"workbench did not answer within 120 s; see {log_path}")
            time.sleep(0.3)
        print(f"\n(b) over HTTP: hala workbench on {url} (up in {time.monotonic() - t0:.1f} s), "
              f"{n_clients} concurrent annotators")

        def login(name: str) -> requests.Session:
            sess = requests.Session()
            sess.hash = f"bench-{name}"  # type: ignore[attr-defined]
            sess.post(url + "/login", data={"username": name, "password": f"{name}-pw"}, timeout=30
                      ).raise_for_status()
            return sess

        def call(sess: requests.Session, api: str, data: list) -> tuple[str, Any]:
            # one session_hash per client, as a browser tab or gradio_client keeps: without it every call would
            # open a new Gradio session (SessionState copies every component's config: ~40 ms a call here)
            r = sess.post(f"{url}/gradio_api/call/{api}", json={"data": data, "session_hash": sess.hash},
                          timeout=60)
            r.raise_for_status()
            event_id = r.json()["event_id"]
            body = sess.get(f"{url}/gradio_api/call/{api}/{event_id}", timeout=120).text
            events = [ln[7:] for ln in body.splitlines() if ln.startswith("event: ")]
            datas = [ln[6:] for ln in body.splitlines() if ln.startswith("data: ")]
            event = events[-1] if events else ""
            payload = json.loads(datas[-1]) if datas and event == "complete" else (datas[-1] if datas else None)
            return event, payload

        sessions = [login(u) for u in users]

        lock = threading.Lock()
        handed: dict[int, set[str]] = {}
        errors: list[str] = []
        conflicts = [0]

        def info(_name: str, sess: requests.Session, stop_at: float, times: dict[str, list[float]]) -> None:
            while time.monotonic() < stop_at:
                t = time.perf_counter()
                sess.get(url + "/gradio_api/info", timeout=60).raise_for_status()
                with lock:
                    times.setdefault("info", []).append(time.perf_counter() - t)

        def empty(_name: str, sess: requests.Session, stop_at: float, times: dict[str, list[float]]) -> None:
            # the same endpoint, login and queue round trip on a 10-segment translation whose queue is empty:
            # what HTTP, Gradio and the tab cost without the 1M-segment queue's work
            while time.monotonic() < stop_at:
                t = time.perf_counter()
                event, out = call(sess, "review_next", [empty_key, "next"])
                with lock:
                    times.setdefault("empty", []).append(time.perf_counter() - t)
                    if event != "complete" or out[0] is not None:
                        errors.append(f"review_next on the empty queue: {event} {str(out)[:200]}")

        def annotate(name: str, sess: requests.Session, stop_at: float, times: dict[str, list[float]]) -> None:
            while time.monotonic() < stop_at:
                t = time.perf_counter()
                event, out = call(sess, "review_next", [run_key, "next"])
                dt = time.perf_counter() - t
                if event != "complete":
                    with lock:
                        errors.append(f"review_next: {event} {str(out)[:300]}")
                    continue
                tid, version = out[0], out[1]
                with lock:
                    times.setdefault("review_next", []).append(dt)
                    if tid is not None:
                        handed.setdefault(int(tid), set()).add(name)
                if tid is None:
                    break
                t = time.perf_counter()
                event, out = call(sess, "review_accept", [run_key, "next", tid, version, None, ""])
                dt = time.perf_counter() - t
                with lock:
                    if event != "complete":
                        errors.append(f"review_accept: {event} {str(out)[:300]}")
                        continue
                    times.setdefault("review_accept", []).append(dt)
                    if "conflict" in str(out[7]):
                        conflicts[0] += 1
                    if out[0] is not None:
                        handed.setdefault(int(out[0]), set()).add(name)

        def phase(target, clients: int, secs: float, times: dict[str, list[float]]) -> None:  # noqa: ANN001
            stop_at = time.monotonic() + secs
            threads = [threading.Thread(target=target, args=(name, sess, stop_at, times))
                       for name, sess in list(zip(users, sessions, strict=True))[:clients]]
            for th in threads:
                th.start()
            for th in threads:
                th.join()

        # warm-up, not measured: the server imports torch and mergekit in the background for its first seconds
        phase(empty, n_clients, min(seconds, 10.0), {})
        for clients, short in ((1, True), (n_clients, False)):
            times: dict[str, list[float]] = {}
            if not short:
                phase(info, clients, min(seconds, 10.0), times)
            phase(empty, clients, min(seconds, 5.0 if short else 10.0), times)
            review_s = min(seconds, 10.0) if short else seconds
            phase(annotate, clients, review_s, times)
            b50 = pct(times["empty"], .5)
            print(f"{clients} client{'s' if clients > 1 else ''}:")
            if "info" in times:
                print(summary("  GET /gradio_api/info (no queue)", times["info"]))
            print(summary("  baseline: review_next, empty queue", times["empty"]))
            print(summary("  review_next (claim + render)", times["review_next"], b50))
            print(summary("  review_accept (save + next)", times["review_accept"], b50))
            calls = len(times["review_next"]) + len(times["review_accept"])
            print(f"  review calls: {calls} in {review_s:.0f} s ({calls / review_s:.1f}/s)")
            if not short:
                ok = pct(times["review_next"], .95) <= 0.25 and pct(times["review_accept"], .95) <= 0.25
                print(f"  goal p95 <= 250 ms per call with {clients} clients: {'met' if ok else 'MISSED'}")
        shared = sum(1 for names in handed.values() if len(names) > 1)
        print(f"load average {os.getloadavg()[0]:.2f}")
        print(f"segments handed out: {len(handed)}; handed to two clients: {shared} (must be 0); "
              f"conflicts: {conflicts[0]}; errors: {len(errors)}")
        for e in errors[:3]:
            print(f"  error: {e}")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()
        with session_scope(settings.db_url) as s:  # the worker the workbench started for this workspace
            pids = [w.pid for w in s.scalars(select(Worker).where(Worker.stopped_at.is_(None)))]
        for pid in pids:
            if pid != os.getpid() and process_alive(pid):
                os.kill(pid, signal.SIGTERM)
        dispose_engines()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--segments", type=int, default=1_000_000)
    ap.add_argument("--ops", type=int, default=2000, help="claim/save operations measured in process")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--http-seconds", type=float, default=30.0, help="how long the clients loop (each phase)")
    ap.add_argument("--budget-s", type=float, default=30.0,
                    help="stop a measured series after this many seconds (3x for the claim/save loop)")
    ap.add_argument("--skip-http", action="store_true")
    args = ap.parse_args()

    home = Path(tempfile.mkdtemp(prefix="hala-review-bench-"))
    os.environ["HALA_HOME"] = str(home)
    os.environ.pop("HALA_DB_URL", None)
    from hala_core.settings import load_settings
    from workbench.bootstrap import open_workspace

    settings = open_workspace(load_settings())
    t0 = time.perf_counter()
    _, empty_key = build(settings.db_url, 10, "empty", reviewed_share=1.0)  # the HTTP baseline's empty queue
    run_id, run_key = build(settings.db_url, args.segments)
    size = Path(settings.db_url.removeprefix("sqlite:///")).stat().st_size / 1e6
    print(f"workspace {home}: {args.segments:,} segments and translations "
          f"({int(args.segments * REVIEWED_SHARE):,} already reviewed) built in {time.perf_counter() - t0:.1f} s; "
          f"hala.db {size:,.0f} MB; load average {os.getloadavg()[0]:.2f}")
    t0 = time.perf_counter()
    in_process(settings, run_id, run_key, args.ops, args.budget_s)
    print(f"(in-process part: {time.perf_counter() - t0:.0f} s; load average {os.getloadavg()[0]:.2f})")
    if not args.skip_http:
        over_http(settings, run_key, empty_key, args.clients, args.http_seconds)


if __name__ == "__main__":
    main()
