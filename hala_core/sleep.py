"""The diagnostic ``sleep`` step (see ``SleepSpec``)."""

from __future__ import annotations

import time

from hala_core.context import RunContext, StopRequested
from hala_core.specs import SleepSpec


def sleep_step(spec: SleepSpec, ctx: RunContext) -> None:
    ctx.log_metric("started", 1.0, step=0)
    pause = spec.seconds / spec.steps
    for i in range(spec.steps):
        if ctx.should_stop():
            raise StopRequested(f"stopped at step {i} of {spec.steps}")
        time.sleep(pause)
        ctx.progress(i + 1, spec.steps, f"step {i + 1}/{spec.steps}")
    if spec.fail:
        raise RuntimeError("this sleep job was asked to fail (fail: true)")
    ctx.set_result({"steps": spec.steps, "seconds": spec.seconds})
