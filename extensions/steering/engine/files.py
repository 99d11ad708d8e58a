"""Files: written atomically with a plain file's mode; vectors as safetensors (never pickle)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

from safetensors import SafetensorError
from safetensors.torch import load, save

from .untrusted import SAFETENSORS_HEADER, FileRefused, parse_json, read_safetensors
from .validation import PresetError
from .vector import SteeringVector


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Write through a temporary file in the same folder and rename it over ``path``.

    The file gets the mode a plain ``open(path, "w")`` would give it (0666 less the umask), not
    mkstemp's 0600: a webui running as another user must be able to read it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = str(path.parent / f".{path.name}.{os.urandom(6).hex()}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666))
            break
        except FileExistsError:
            continue
    try:
        write(Path(tmp))
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_vector(path: Path, vector: SteeringVector, metadata: dict[str, str] | None = None) -> None:
    tensors = {f"layer.{layer}": t.contiguous() for layer, t in vector.directions.items()}
    meta = {"residual_norms": json.dumps(vector.residual_norms), **(metadata or {})}
    data = save(tensors, metadata=meta)  # bytes, written into atomic_write's file: save_file would make its own, 0600
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def load_vector(path: Path) -> tuple[SteeringVector, dict[str, str]]:
    """Read a vector saved by save_vector (safetensors only: nothing executable is ever loaded; the file's
    size and header are bounded by untrusted.read_safetensors before the library reads the tensors)."""
    try:
        data, header = read_safetensors(path)
        meta = header.get("__metadata__") or {}
        tensors = load(data)
        directions = {int(key.split(".", 1)[1]): t for key, t in tensors.items()}
        norms = {int(k): float(v) for k, v in parse_json(meta.get("residual_norms", "{}"), path, SAFETENSORS_HEADER).items()}
        return SteeringVector(directions, norms), meta
    except FileRefused as error:
        raise PresetError(str(error)) from None
    except (SafetensorError, OSError, ValueError, IndexError, KeyError, TypeError, AttributeError, OverflowError) as error:
        raise PresetError(f"{path}: damaged tensor file: {error}") from None
