"""Corpus import rate: segments/s of ``workbench.corpus_ops.import_file`` (read + segment + store + register, as
the Corpus tab and ``hala corpus import`` run it) on Alpaca, against just reading and JSON-parsing the same file
(so the ratio is the cost of segmentation and storage on top of parsing).

Two inputs: ``alpaca_5000.json`` as it is (a JSON array, 5,000 records), and the same records replicated
``--copies`` times into a temporary JSONL file (each copy's instruction gets a " (copy k)" suffix so that the
import's duplicate filter keeps every record). Each import goes into a fresh corpus of one workspace SQLite.

Usage: python benchmarks/import_rate.py [--copies 10] [--repeats 3] [--data ../shared/data/alpaca_5000/alpaca_5000.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_only(path: Path) -> tuple[float, int]:
    """The baseline: read the file and parse its JSON (an array, or one object a line); (seconds, records)."""
    t0 = time.perf_counter()
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
    else:
        records = json.loads(text)
    return time.perf_counter() - t0, len(records)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--copies", type=int, default=10, help="replicas of the file in the big JSONL")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "alpaca_5000" / "alpaca_5000.json"))
    args = ap.parse_args()

    home = Path(tempfile.mkdtemp(prefix="hala-import-bench-"))
    os.environ["HALA_HOME"] = str(home)
    os.environ.pop("HALA_DB_URL", None)
    from hala_core.settings import load_settings
    from workbench.bootstrap import open_workspace
    from workbench.corpus_ops import import_file

    settings = open_workspace(load_settings())
    src = Path(args.data)
    records = json.loads(src.read_text(encoding="utf-8"))
    big = home / "datasets" / f"alpaca_x{args.copies}.jsonl"
    big.parent.mkdir(parents=True, exist_ok=True)
    with big.open("w", encoding="utf-8") as fh:
        for k in range(args.copies):
            for r in records:
                fh.write(json.dumps({**r, "instruction": f"{r['instruction']} (copy {k})"}, ensure_ascii=False))
                fh.write("\n")
    print(f"load average {os.getloadavg()[0]:.2f}; workspace {home}")

    n_import = 0
    for label, path in ((src.name, src), (big.name, big)):
        base: list[float] = []
        runs: list[dict] = []
        for _ in range(args.repeats):
            seconds, n_records = parse_only(path)
            base.append(seconds)
        for _ in range(args.repeats):
            n_import += 1
            t0 = time.perf_counter()
            stats = import_file(settings, str(path), f"bench-{n_import}")
            stats["wall"] = time.perf_counter() - t0
            runs.append(stats)
        med = statistics.median(r["wall"] for r in runs)
        seg = runs[0]["segments"]
        read_s = statistics.median(r["read_s"] for r in runs)
        segment_s = statistics.median(r["segment_s"] for r in runs)
        total_s = statistics.median(r["seconds"] for r in runs)
        store_s = total_s - read_s - segment_s
        b = statistics.median(base)
        print(f"\n{label}: {n_records:,} records -> {runs[0]['rows']:,} rows, {seg:,} segments "
              f"({runs[0]['duplicates skipped']} duplicates skipped), {path.stat().st_size / 1e6:.1f} MB; "
              f"median of {args.repeats}")
        print(f"  import_file: {med:.2f} s = {seg / med:,.0f} segments/s "
              f"(read {read_s:.2f} s · segment {segment_s:.2f} s · store + register {store_s:.2f} s)")
        print(f"  baseline read + json parse: {b:.3f} s = {seg / b:,.0f} segments/s equivalent")
        print(f"  ratio import / parse time: {med / b:.1f}x; goal >= 20,000 segments/s: "
              f"{'met' if seg / med >= 20_000 else 'MISSED'}")
    print(f"\nload average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
