"""One loaded model as the engine sees it, made once and taken by every engine entry point.

``ModelContext.of(model, tokenizer, layers_path)`` finds the decoder blocks once (``layers_path``
is honoured here and nowhere else), and answers everything the engine asks of a model: its blocks,
layer count, hidden size, device, dtype, the sink and pad token ids, and a fingerprint that keys
cached vectors.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch
from torch import nn

from .layers import Layers, config_value, find_layers, hidden_size
from .validation import hidden_size_problem, layer_indices, layer_problem


@dataclass(eq=False)
class ModelContext:
    model: nn.Module
    tokenizer: Any
    layers: Layers

    @classmethod
    def of(cls, model: nn.Module, tokenizer: Any = None, layers_path: str | None = None) -> ModelContext:
        """The context of ``model``; UnsupportedModelError when its blocks cannot be found."""
        return cls(model, tokenizer, find_layers(model, layers_path))

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @cached_property
    def hidden_size(self) -> int | None:
        return hidden_size(self.model)

    @cached_property
    def max_positions(self) -> int | None:
        """The most positions (prompt and reply) the model reads, as its config says; None when it does not."""
        return config_value(self.model, "max_position_embeddings", "n_positions", "max_sequence_length", "n_ctx")

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def name(self) -> str:
        return type(self.model).__name__

    @cached_property
    def sink_id(self) -> int:
        """The token every prompt of ours starts with (the model's BOS, else EOS): an attention sink."""
        for token_id in (self.tokenizer.bos_token_id, self.tokenizer.eos_token_id):
            if token_id is not None:
                return int(token_id)
        raise ValueError("the tokenizer has neither a BOS nor an EOS token to use as the shared first position")

    @cached_property
    def pad_id(self) -> int:
        """The id padded positions get (they are always masked, so any real token does)."""
        for token_id in (getattr(self.tokenizer, key, None) for key in ("pad_token_id", "eos_token_id", "bos_token_id")):
            if token_id is not None:
                return int(token_id)
        return 0

    @cached_property
    def fingerprint(self) -> str:
        """Identifies the weights cheaply: class, shape and samples of the first and last blocks."""
        digest = hashlib.sha256()
        digest.update(f"{self.name}:{self.hidden_size}:{self.num_layers}:{config_value(self.model, 'vocab_size')}".encode())
        for block in (self.layers.blocks[0], self.layers.blocks[-1]):
            for name, param in list(block.named_parameters())[:4]:
                digest.update(name.encode())
                digest.update(param.detach().flatten()[:256].float().cpu().numpy().tobytes())
        return digest.hexdigest()[:16]

    def layer_indices(self, specs) -> list[int]:
        """Block indices of layer specs (indices or shares of depth) on this model."""
        return layer_indices(specs, self.num_layers)

    def fits(self, vector) -> str | None:
        """Why ``vector`` (a SteeringVector) cannot steer this model, or None when it can."""
        return hidden_size_problem(vector.hidden_size, self.hidden_size) or layer_problem(max(vector.layers), self.num_layers)

    def tokens(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
