"""A workspace with a real translated corpus: NTREX lines imported, translated by a demo model in a real job."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from hala_core.settings import Settings
from workbench.corpus_ops import import_file

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"


def translated_corpus(settings: Settings, name: str = "ntrex-sample", limit: int = 16, model: str = "demo-lfm2-a",
                      max_new_tokens: int = 8, **spec: object) -> str:
    """Import ``limit`` NTREX lines as corpus ``name`` and translate them (``hala run --inline``); returns
    the "corpus/translation" key the Review tab uses."""
    import_file(settings, str(DATA / "ntrex128_en_ar"), name, limit=limit)
    full = {"kind": "translate", "corpus": name, "model": model, "max_new_tokens": max_new_tokens,
            "batch_size": 8, **spec}
    spec_path = settings.home / f"translate-{name}.yaml"
    spec_path.write_text(yaml.safe_dump(full))
    env = {**os.environ, "HALA_HOME": str(settings.home), "HALA_DB_URL": settings.db_url}
    out = subprocess.run([sys.executable, "-m", "workbench.cli", "run", str(spec_path), "--inline"], env=env,
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return f"{name}/{model}-{full.get('direction', 'en-ar')}"
