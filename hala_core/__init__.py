"""The Hala pipeline as a plain library: specs, steps and engines.

Never imports gradio or SQLAlchemy: a step gets ``(spec, ctx)`` and reports through ``ctx``.
"""
