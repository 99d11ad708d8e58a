"""The model the host has loaded now, as a ModelContext made once per model, and its vectors.

The host has no model-loaded callback: a change is noticed by identity whenever the model is asked
for. Loaders that run the model outside PyTorch (llama.cpp, ExLlamaV3) are said plainly.
"""
from __future__ import annotations

import logging
import threading
import time
import weakref
from typing import Any, Callable

from torch import nn

from ..engine.context import ModelContext
from ..engine.layers import UnsupportedModelError
from ..engine.presets import PresetStore
from ..engine.validation import PresetError
from ..engine.vector import SteeringVector

log = logging.getLogger("steering")

# Model classes the webui uses for loaders that run outside PyTorch, with the loader's usual name.
NO_TORCH_CLASSES = {"LlamaServer": "llama.cpp", "Exllamav3Model": "ExLlamaV3", "Exllamav3HF": "ExLlamaV3", "TensorRTLLMModel": "TensorRT-LLM"}
NO_TORCH_LOADERS = {"llama.cpp": "llama.cpp", "ExLlamav3": "ExLlamaV3", "ExLlamav3_HF": "ExLlamaV3", "TensorRT-LLM": "TensorRT-LLM"}


class SteeringUnavailable(Exception):
    """Steering cannot run now; the message says why, for the user."""


class ModelWatch:
    def __init__(self, store: PresetStore, model_source: Callable[[], tuple[Any, Any] | None],
                 loader_name: Callable[[], str | None] = lambda: None, layers_path: str | None = None):
        self.store = store
        self.model_source = model_source
        self.loader_name = loader_name
        self.layers_path = layers_path or None
        self.changes = 0  # how many times the model changed after the first
        self._lock = threading.RLock()
        self._model: weakref.ref | None = None
        self._ctx: ModelContext | None = None
        self._vectors: dict[tuple[str, str], SteeringVector] = {}
        self._building = threading.Lock()  # one build at a time: a second request for it waits and takes the first's
        self.on_change: Callable[[], None] = lambda: None  # after a model was noticed (the first one too)

    def current(self) -> ModelContext:
        """The context of the loaded model if steering can run on it, else SteeringUnavailable saying why."""
        found = self.model_source()
        model, tokenizer = found if found else (None, None)
        if model is None:
            raise SteeringUnavailable("No model is loaded. Load one in the Model tab (Transformers or llama.cpp loader) to steer.")
        kind = NO_TORCH_CLASSES.get(type(model).__name__) or NO_TORCH_LOADERS.get(self.loader_name() or "")
        if kind == "llama.cpp":  # replies are steered by control vectors (llama_cpp.py); only PyTorch work stops here
            raise SteeringUnavailable(
                "The llama.cpp loader runs the model in llama-server: replies are steered there by control vectors, "
                "but building, trying and sweeping vectors run the model in PyTorch. Load it with the Transformers loader "
                "for those, or use the command line with --model FILE.gguf."
            )
        if kind or not isinstance(model, nn.Module):
            kind = kind or type(model).__name__
            raise SteeringUnavailable(
                f"Steering is off: the {kind} loader runs the model outside PyTorch, so there are no layers to steer. "
                "Generation is left untouched. Load the model with the Transformers loader to steer it."
            )
        with self._lock:
            if self._model is not None and self._model() is model and self._ctx is not None and self._ctx.tokenizer is tokenizer:
                return self._ctx
            try:
                ctx = ModelContext.of(model, tokenizer, self.layers_path)
            except UnsupportedModelError as error:
                raise SteeringUnavailable(f"Steering is off for {type(model).__name__}: {error}") from None
            if self._model is not None and self._model() is not model:
                self.changes += 1
                log.info("steering: the model changed (now %s, fingerprint %s); vectors are rebuilt for it", ctx.name, ctx.fingerprint)
            self._model, self._ctx = weakref.ref(model), ctx
            self._vectors = {}
        self.on_change()
        return ctx

    @property
    def fingerprint(self) -> str | None:
        with self._lock:
            return self._ctx.fingerprint if self._ctx is not None else None

    def cached(self, name: str) -> bool:
        """Whether the preset's vector for the current model is ready without building."""
        ctx = self.current()
        recipe = self.store.recipe(name)
        with self._lock:
            if (name, recipe.key()) in self._vectors:
                return True
        return self.store.cached_vector(recipe, ctx) is not None

    def vector(self, name: str) -> SteeringVector:
        """The preset's vector for the current model: cached, else built from its recipe (this needs the
        model: the webui holds the generation lock around it, the tab ``runtime.lock``)."""
        ctx = self.current()
        recipe = self.store.recipe(name)
        key = (name, recipe.key())
        with self._lock:
            vector = self._vectors.get(key)
        if vector is not None:
            return vector
        with self._building:
            with self._lock:
                vector = self._vectors.get(key)
            if vector is not None:
                return vector
            vector = self.store.cached_vector(recipe, ctx)
            if vector is None:  # the console says why the first reply with this preset on this model is slow
                log.info("steering: building %s (%s) for %s, first use on this model", name, recipe.method, ctx.name)
                start = time.perf_counter()
                vector = self.store.vector(recipe, ctx)
                log.info("steering: built %s in %.1f s; cached for this model", name, time.perf_counter() - start)
            self.check_fits(vector, ctx, name)
            with self._lock:
                if self._ctx is ctx:
                    self._vectors[key] = vector
        return vector

    @staticmethod
    def check_fits(vector: SteeringVector, ctx: ModelContext, name: str = "the vector") -> None:
        problem = ctx.fits(vector)
        if problem:
            raise PresetError(f"{name} does not fit {ctx.name}: {problem}; not applied")
