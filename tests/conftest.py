"""Shared fixtures: the tiny demo models (built once per session) and an in-memory RunContext."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.fake_context import FakeContext  # noqa: E402

DEMO_NAMES = ("demo-lfm2-a", "demo-lfm2-b")


@pytest.fixture(scope="session")
def demo_models_dir(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The two demo models (seeds 0 and 1, hidden 64, 2 layers), built once per test session."""
    from hala_core.demo_models import build_demo_model

    root = tmp_path_factory.mktemp("demo_models")
    paths: dict[str, Path] = {}
    for seed, name in enumerate(DEMO_NAMES):
        tok_dir = paths[DEMO_NAMES[0]] if seed else None
        paths[name] = build_demo_model(root / name, seed=seed, tokenizer_dir=tok_dir)
    return paths


@pytest.fixture
def fake_ctx(tmp_path: Path) -> Callable[..., FakeContext]:
    """A factory: ``fake_ctx(models={name: path}, stop=False)`` → a FakeContext under a fresh tmp workspace."""
    count = 0

    def make(models: dict[str, Path] | None = None, **kwargs) -> FakeContext:
        nonlocal count
        count += 1
        workspace = tmp_path / f"workspace{count}"
        workspace.mkdir()
        return FakeContext(workspace=workspace, models=dict(models or {}), **kwargs)

    return make
