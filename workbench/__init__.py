"""The Gradio app (one module per tab, thin) and the ``hala`` command line."""
