"""hala_core is a plain library: importing every module of it pulls in neither gradio nor SQLAlchemy."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import hala_core

ROOT = Path(__file__).resolve().parents[2]


def test_hala_core_never_imports_gradio_or_sqlalchemy():
    modules = [f"hala_core.{m.name}" for m in pkgutil.iter_modules(hala_core.__path__)]
    assert "hala_core.merge" in modules and "hala_core.registry" in modules
    code = ("import importlib, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('gradio', 'sqlalchemy', 'db', 'jobs', 'workbench'))\n"
            "print(','.join(bad))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_every_registered_step_loads_and_has_a_spec():
    from hala_core.registry import STEPS, load_step
    from hala_core.specs import SPEC_TYPES

    assert set(STEPS) == set(SPEC_TYPES)
    for kind in STEPS:
        assert callable(load_step(kind))
