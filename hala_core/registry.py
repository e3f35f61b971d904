"""Job kind → step. Explicit: one line per kind, imported only when that kind runs."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

STEPS: dict[str, str] = {
    "sleep": "hala_core.sleep:sleep_step",
    "demo_models": "hala_core.demo_models:demo_models_step",
    "merge": "hala_core.merge:merge_step",
    "quantize": "hala_core.quantize:quantize_step",
    "eval": "hala_core.evaluate:evaluate_step",
    "translate": "hala_core.translate:translate_step",
    "train": "hala_core.train:train_step",
}


def load_step(kind: str) -> Callable[[Any, Any], None]:
    try:
        target = STEPS[kind]
    except KeyError:
        raise ValueError(f"no step for job kind {kind!r}; known kinds: {', '.join(sorted(STEPS))}") from None
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)
