"""The Steering tab: ``actions`` (plain functions, no gradio) and ``tab`` (gradio 4.37 components)."""
