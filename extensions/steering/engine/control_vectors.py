"""GGUF control vectors: the file format llama.cpp (``--control-vector``), repeng and llama-cvector-generator share.

A file has ``general.architecture = controlvector``, ``controlvector.model_hint`` (the model type it
was made for), ``controlvector.layer_count`` and one F32 tensor ``direction.N`` of n_embd values per
steered layer. llama.cpp adds ``scale × direction.N`` to the OUTPUT of decoder block N (0-based) at
every position, the first (BOS) included; it has no ``direction.0`` (it refuses the file) and ignores
the metadata.

We add to a block's INPUT, so our layer L is llama.cpp's ``direction.(L - 1)``: our layers 0 (the
embeddings) and 1 (the output of block 0, llama.cpp's refused direction.0) cannot be written, and
llama.cpp's last direction (the output of the last block) has no layer here. Files carry exactly what
is added to the hidden state, so a vector written at strength S and read back steers at strength 1
exactly as the original did at S, and as llama.cpp does at scale 1.

Differences that stay: llama.cpp also steers position 0 (the attention sink, which we leave alone
unless ``steer_first_position=True``) and has no ``actadd`` or ``generated`` mode.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .files import atomic_write
from .untrusted import CONTROL_VECTOR, GGUF, MODEL, TENSOR_TYPE_NAMES, FileRefused, GGUFArray, GGUFLimits, OneLineError, TextLimits, parse_json, read_gguf
from .validation import hidden_size_problem
from .vector import SteeringVector

ARCHITECTURE = "controlvector"
_DIRECTION = re.compile(r"^direction\.([0-9]+)$")  # ASCII digits only: llama.cpp refuses others
_NORMS_KEY = "steering.residual_norms"  # ours, ignored by llama.cpp and repeng: keeps a round trip exact
NORMS_METADATA = TextLimits(f"{_NORMS_KEY} value", CONTROL_VECTOR.max_metadata, max_depth=8)  # {"layer": norm}: depth 1
_STRENGTH_KEY = "steering.strength"  # the strength baked in when we wrote the file (information only)


class ControlVectorError(OneLineError):
    """A control-vector file is unusable, or a vector cannot become one; the message says which and why."""


@dataclass(frozen=True)
class ControlVectorInfo:
    """What a control-vector file says about itself besides its directions."""

    path: Path
    model_hint: str | None  # the model type it was made for ("llama", ...), as written
    layer_count: int | None  # as written; writers disagree on its meaning and llama.cpp ignores it
    directions: tuple[int, ...]  # llama.cpp's direction indices N present in the file
    baked_strength: float | None  # the strength folded in, for files we wrote


def to_direction_index(layer: int) -> int:
    """llama.cpp's direction index for our layer (input of block L == output of block L - 1)."""
    return layer - 1


def to_layer(direction: int) -> int:
    """Our layer for llama.cpp's direction index."""
    return direction + 1


def write_control_vector(
    path: str | Path, vector: SteeringVector, strength: float, model_hint: str, mode: str = "all"
) -> Path:
    """Write ``vector`` at ``strength`` as a GGUF control vector for llama.cpp (scale 1 == this strength).

    What is written is exactly what our hooks add to the hidden state: ``direction × strength``
    (mean/pca directions are already scaled to the residual norm when built, so nothing else
    multiplies them). The file appears atomically, readable by other users (mode 0666 less umask).
    """
    path = Path(path)
    if not math.isfinite(float(strength)):
        raise ControlVectorError(f"cannot write {path}: the strength must be a finite number, got {strength}")
    if not isinstance(model_hint, str) or not model_hint.strip():
        raise ControlVectorError(f"cannot write {path}: give a model hint (the model type, e.g. 'llama')")
    if vector.per_position or mode == "actadd":
        raise ControlVectorError(
            f"cannot write {path}: this is a per-position (ActAdd) vector with {vector.positions} rows per layer; "
            "a control vector holds one direction per layer, added at every position "
            "(use vector.mean_direction() with mode 'all', or keep it as a preset)"
        )
    if mode == "generated":
        raise ControlVectorError(
            f"cannot write {path}: mode 'generated' steers only generated tokens, but llama.cpp adds a control "
            "vector at every position; export it with mode 'all' if that is what you want"
        )
    if mode != "all":
        raise ControlVectorError(f"cannot write {path}: unknown mode {mode!r}")
    low = [layer for layer in vector.layers if to_direction_index(layer) < 1]
    if low:
        raise ControlVectorError(
            f"cannot write {path}: layer(s) {', '.join(map(str, low))} cannot be exported; llama.cpp steers block "
            "outputs from block 1 on, which are our layers 2 and up (layer 0 is the embeddings, layer 1 the output "
            "of block 0, which llama.cpp never steers)"
        )

    gguf = _gguf()

    def write(tmp: Path) -> None:
        writer = gguf.GGUFWriter(str(tmp), ARCHITECTURE)
        writer.add_string(f"{ARCHITECTURE}.model_hint", model_hint.strip())
        writer.add_int32(f"{ARCHITECTURE}.layer_count", len(vector.layers))  # as llama-cvector-generator writes it
        writer.add_string(_NORMS_KEY, json.dumps({str(k): v for k, v in vector.residual_norms.items()}))
        writer.add_float32(_STRENGTH_KEY, float(strength))
        for layer, rows in vector.directions.items():
            # the same float32 product the hooks compute (rows * float(strength)), so a round trip is bit-exact
            added = (rows[0] * float(strength)).contiguous().numpy().astype(np.float32, copy=False)
            writer.add_tensor(f"direction.{to_direction_index(layer)}", added)
        try:
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
        finally:
            writer.close()

    atomic_write(path, write)
    return path


def read_control_vector(path: str | Path) -> tuple[SteeringVector, ControlVectorInfo]:
    """The vector in a GGUF control-vector file (direction.N -> our layer N + 1, values as they are, so
    strength 1 here == scale 1 in llama.cpp), and what the file says about itself.

    Read by untrusted.read_gguf within the CONTROL_VECTOR limits. A missing, damaged, truncated,
    oversized, non-GGUF or foreign (a model) file raises ControlVectorError.
    """
    path = Path(path)
    gguf = _read_gguf(path, CONTROL_VECTOR)
    architecture = _scalar(gguf, "general.architecture")
    if architecture != ARCHITECTURE:
        what = f"architecture {architecture!r}" if architecture else "no architecture"
        raise ControlVectorError(f"{path}: not a control vector: the file has {what}, not {ARCHITECTURE!r} (a model file?)")
    directions = _directions(gguf)
    norms = _norms(_scalar(gguf, _NORMS_KEY), path)
    count, baked = _scalar(gguf, f"{ARCHITECTURE}.layer_count"), _scalar(gguf, _STRENGTH_KEY)
    hint = _scalar(gguf, f"{ARCHITECTURE}.model_hint")
    vector = SteeringVector(directions, {k: v for k, v in norms.items() if k in directions})
    info = ControlVectorInfo(
        path=path,
        model_hint=hint if isinstance(hint, str) else None,
        layer_count=int(count) if isinstance(count, int) else None,
        directions=tuple(to_direction_index(layer) for layer in vector.layers),
        baked_strength=float(baked) if isinstance(baked, float) else None,
    )
    return vector, info


def fit_to_model(vector: SteeringVector, hidden_size: int | None, num_layers: int, source: str = "the control vector") -> tuple[SteeringVector, list[int]]:
    """``vector`` restricted to what our hooks can steer on a model, and the layers left out.

    Refuses (ControlVectorError) a vector of another hidden size, or one that reaches past the model's
    blocks (made for a deeper model). The one layer beyond our last, ``num_layers`` (llama.cpp's
    direction on the output of the last block, which llama-cvector-generator writes), is left out
    and returned so the caller can say so.
    """
    problem = hidden_size_problem(vector.hidden_size, hidden_size)
    if problem:
        raise ControlVectorError(f"{source} was made for another model: {problem}")
    top = max(vector.layers)
    if top > num_layers:
        raise ControlVectorError(
            f"{source} steers llama.cpp direction.{to_direction_index(top)} (made for a model with at least {top} "
            f"blocks), but the model has {num_layers} blocks (directions 1-{num_layers - 1})"
        )
    kept = {layer: rows for layer, rows in vector.directions.items() if layer < num_layers}
    dropped = [layer for layer in vector.layers if layer >= num_layers]
    if not kept:
        raise ControlVectorError(
            f"{source} steers only the output of the model's last block (direction.{num_layers - 1}), which steering here cannot reach"
        )
    return SteeringVector(kept, {k: v for k, v in vector.residual_norms.items() if k in kept}), dropped


def model_dimensions(path: str | Path) -> tuple[str, int, int]:
    """(architecture, n_embd, n_layer) of a GGUF model file, read from its metadata without loading it:
    what a vector must fit when the model runs in llama.cpp rather than in torch."""
    path = Path(path)
    gguf = _read_gguf(path, MODEL)
    architecture = _scalar(gguf, "general.architecture")
    n_embd = _scalar(gguf, f"{architecture}.embedding_length")
    n_layer = _scalar(gguf, f"{architecture}.block_count")
    if not isinstance(architecture, str) or not isinstance(n_embd, int) or not isinstance(n_layer, int):
        raise ControlVectorError(f"{path}: not a GGUF model (no architecture, embedding_length and block_count)")
    return architecture, n_embd, n_layer


# -- reading helpers ---------------------------------------------------------------------------------
def _read_gguf(path: Path, limits: GGUFLimits) -> GGUF:
    try:
        return read_gguf(path, limits)
    except FileRefused as error:
        raise ControlVectorError(str(error)) from None


def _gguf() -> Any:
    """The gguf package, imported only when a file is written (the webui may lack it; reading needs none)."""
    try:
        import gguf
    except ImportError:
        raise ControlVectorError("writing GGUF control vectors needs the gguf package: pip install gguf") from None
    return gguf


def _scalar(gguf: GGUF, key: str) -> Any:
    """A text or number metadata value, or None when absent or an array (a bool counts as absent)."""
    value = gguf.fields.get(key)
    return None if isinstance(value, (GGUFArray, bool)) else value


def _directions(gguf: GGUF) -> dict[int, torch.Tensor]:
    """Our layer -> float32 copy of llama.cpp's direction.N, every tensor checked as llama.cpp would (and
    more). Two names for one layer (direction.5, direction.05) are added together, as llama.cpp does."""
    path = gguf.path
    directions: dict[int, torch.Tensor] = {}
    n_embd = None
    for tensor in gguf.tensors:
        found = _DIRECTION.match(tensor.name)
        if not found:
            raise ControlVectorError(f"{path}: tensor {tensor.name!r} is not a direction.N (N in digits 0-9)")
        index = int(found.group(1))
        if index < 1:
            raise ControlVectorError(f"{path}: {tensor.name} is invalid: llama.cpp directions start at 1")
        if tensor.type not in TENSOR_TYPE_NAMES:
            raise ControlVectorError(f"{path}: {tensor.name} has ggml type {tensor.type}, not F32 or F16")
        dims = list(tensor.shape)
        if not dims or dims[0] < 1 or tensor.n_elements != dims[0]:
            raise ControlVectorError(f"{path}: {tensor.name} has shape {dims}, not one row")
        if n_embd is None:
            n_embd = dims[0]
        elif dims[0] != n_embd:
            raise ControlVectorError(f"{path}: {tensor.name} has {dims[0]} values, the other directions {n_embd}")
        try:
            data = np.frombuffer(gguf.tensor_data(tensor), dtype="<f4" if tensor.type == 0 else "<f2").astype(np.float32)
        except FileRefused as error:
            raise ControlVectorError(str(error)) from None
        if not np.isfinite(data).all():
            raise ControlVectorError(f"{path}: {tensor.name} has NaN or infinite values")
        layer = to_layer(index)
        directions[layer] = directions[layer] + torch.from_numpy(data) if layer in directions else torch.from_numpy(data)
    if not directions:
        raise ControlVectorError(f"{path}: the file has no direction tensors")
    return directions


def _norms(text: Any, path: Path) -> dict[int, float]:
    if not isinstance(text, str):
        return {}
    try:
        return {int(k): float(v) for k, v in parse_json(text, path, NORMS_METADATA).items()}
    except FileRefused as error:
        raise ControlVectorError(f"{path}: damaged {_NORMS_KEY} metadata ({str(error).removeprefix(f'{path}: ')})") from None
    except (ValueError, TypeError, AttributeError):
        raise ControlVectorError(f"{path}: damaged {_NORMS_KEY} metadata") from None
