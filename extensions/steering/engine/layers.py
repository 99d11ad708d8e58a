"""Find the decoder blocks of a Transformers causal LM (plain or PEFT-wrapped)."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

# Attribute paths of the block list, most specific first. Anything else falls back to a search.
KNOWN_PATHS = (
    "model.layers",  # Llama, Mistral, Mixtral, Qwen2/3(-MoE), Gemma 1-2, Phi3
    "model.language_model.layers",  # Gemma3 / multimodal wrappers (transformers >= 4.52)
    "language_model.model.layers",  # older multimodal wrappers
    "transformer.h",  # GPT-2, GPT-J, Falcon, Bloom
    "gpt_neox.layers",  # GPT-NeoX, Pythia
    "model.decoder.layers",  # OPT
    "layers",  # a bare decoder model
)


class UnsupportedModelError(ValueError):
    """The decoder blocks of a model could not be found."""


@dataclass(frozen=True)
class Layers:
    """The block list of a model and the module that owns (and calls) it."""

    blocks: nn.ModuleList
    owner: nn.Module
    path: str

    def __len__(self) -> int:
        return len(self.blocks)


def config_value(model: nn.Module, *keys: str) -> int | None:
    """The first integer among ``keys`` in the model's (text) config."""
    config = getattr(model, "config", None)
    if config is None:
        return None
    text_config = getattr(config, "get_text_config", None)
    config = text_config() if callable(text_config) else config
    for key in keys:
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    return None


def hidden_size(model: nn.Module) -> int | None:
    return config_value(model, "hidden_size", "n_embd", "d_model")


def _resolve(model: nn.Module, path: str) -> tuple[nn.Module, nn.ModuleList] | None:
    owner = model
    *parents, leaf = path.split(".")
    for name in parents:
        owner = getattr(owner, name, None)
        if not isinstance(owner, nn.Module):
            return None
    blocks = getattr(owner, leaf, None)
    return (owner, blocks) if isinstance(blocks, nn.ModuleList) and len(blocks) > 0 else None


def _unwrap_peft(model: nn.Module) -> tuple[nn.Module, str]:
    """PeftModel -> LoraModel -> the transformers model; returns it and its path prefix."""
    prefix = ""
    while type(model).__module__.startswith("peft"):
        for attr in ("base_model", "model"):
            inner = getattr(model, attr, None)
            if isinstance(inner, nn.Module) and inner is not model:
                model, prefix = inner, f"{prefix}{attr}."
                break
        else:
            break
    return model, prefix


def find_layers(model: nn.Module, path: str | None = None) -> Layers:
    """Return the decoder blocks of ``model``.

    ``path`` (for example ``"model.layers"``) overrides the search for an architecture we do not know.
    Raises UnsupportedModelError rather than ever steering nothing.
    """
    if path is not None:
        found = _resolve(model, path)
        if found is None:
            raise UnsupportedModelError(
                f"{type(model).__name__} has no non-empty nn.ModuleList at {path!r}"
            )
        return Layers(found[1], found[0], path)

    inner, prefix = _unwrap_peft(model)
    expected = config_value(inner, "num_hidden_layers", "n_layer", "num_layers")
    for candidate in KNOWN_PATHS:
        found = _resolve(inner, candidate)
        if found is not None and (expected is None or len(found[1]) == expected):
            return Layers(found[1], found[0], prefix + candidate)

    # Unknown architecture: the shortest-path ModuleList with one entry per configured layer.
    if expected:
        modules = dict(inner.named_modules())
        for name, module in sorted(modules.items(), key=lambda kv: kv[0].count(".")):
            if isinstance(module, nn.ModuleList) and len(module) == expected and name:
                owner_name = name.rsplit(".", 1)[0] if "." in name else ""
                return Layers(module, modules[owner_name], prefix + name)
    raise UnsupportedModelError(
        f"cannot find the decoder layers of {type(model).__name__} "
        f"(config says {expected} layers); pass layers_path='<attribute path of its "
        "nn.ModuleList of blocks>', for example 'model.layers'"
    )
