"""``python -m extensions.steering ui``: the Steering tab on its own page, without a webui.

Needs gradio 4.37 (the webui's API): the UI environment made by .ci/ui-setup.sh.
"""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no network: no analytics calls

from ..runtime import SteeringRuntime  # noqa: E402
from ..usecases import PresetStore, load_model  # noqa: E402
from .tab import create_app  # noqa: E402  (imports gradio)


def make_runtime(model_spec: str | None, presets_dir: Path, data_dir: Path, layers_path: str | None = None) -> SteeringRuntime:
    model, tokenizer = load_model(model_spec)
    return SteeringRuntime(PresetStore(presets_dir), data_dir, model_source=lambda: (model, tokenizer),
                           loader_name=lambda: "Transformers", layers_path=layers_path)


def serve(runtime: SteeringRuntime, host: str = "127.0.0.1", port: int | None = None, block: bool = True):
    """Launch the page; with ``block=False`` return the running app (call ``app.close()`` to stop it)."""
    app = create_app(runtime)
    app.queue().launch(server_name=host, server_port=port, share=False, inbrowser=False, quiet=not block, show_error=True,
                       prevent_thread_lock=not block)
    return app
