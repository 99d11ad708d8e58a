"""Steering for models the host runs in llama-server (the webui's llama.cpp loader): control vectors.

llama-server takes control vectors only when it starts (``--control-vector-scaled FILE:SCALE,...``;
ik_llama.cpp's ``--control-vector-scaled FILE SCALE`` per file), at every position. So before each generation the presets that steer that request become a set of
control-vector files; when the set differs from the one the running server has, the server is
restarted through the host with those flags added to the user's own; an unchanged set costs nothing.

The files are our presets' vectors built for exactly that GGUF: it is loaded once through
transformers' GGUF support (dequantised into PyTorch, about parameters × 4 bytes of memory, freed
after), the vectors are built and cached like any other model's, and exported beside the data.
"""
from __future__ import annotations

import gc
import hashlib
import logging
import shlex
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

from ..engine.control_vectors import ControlVectorError, model_dimensions, read_control_vector, write_control_vector
from ..engine.methods.imported import check_imported_fits
from ..engine.presets import PresetStore
from ..engine.untrusted import MODEL, read_gguf
from ..engine.validation import PresetError
from .backend import BackendStatus, LastSteered
from .choices import STATE_IS_CHAT, STATE_SESSION, state_session
from .items import Items, describe
from .problems import Problems
from .requests import STATE_STEERING, RequestError

log = logging.getLogger("steering")
SERVER_CLASS = "LlamaServer"  # the webui's llama.cpp loader's model class
LONG_ONLY = {"rpc", "fit", "pos", "ppl"}  # legacy extra_flags names written with -- although short


class RestartFailed(RuntimeError):
    """llama-server did not start with the control vectors a request needs; the message says what runs instead."""


def failed_start(error: Exception) -> str:
    return f"llama.cpp steering not applied: {type(error).__name__}: {str(error).strip()}"


class LlamaServerHost(Protocol):
    """What the host (the webui adapter) does for this backend."""

    def model_path(self, server: Any) -> Path:
        """The GGUF file the server runs."""

    def user_flags(self) -> str:
        """The user's own extra llama-server flags, as the host stores them."""

    def ik_llama(self) -> bool:
        """Whether the server is ik_llama.cpp's (the webui's --ik), which spells control vectors its own way."""

    def restart(self, server: Any, extra_flags: str) -> None:
        """Stop the server and start it again with ``extra_flags`` in place of the user's own."""

    def session(self) -> str | None:
        """The browser session whose request is being generated now (--multi-user), else None."""


def literal_flags(text: str | None) -> list[str]:
    """The user's extra flags as command-line words, from either form the webui accepts: literal
    (``--jinja --rpc 1222``) or legacy (``flag1=value1,flag2``; names of up to 3 letters get one dash)."""
    text = (text or "").strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    if not text:
        return []
    if text.startswith("-"):
        return shlex.split(text)
    words: list[str] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        flag, _, value = item.partition("=")
        flag = flag.strip()
        words.append(f"-{flag}" if len(flag) <= 3 and flag not in LONG_ONLY else f"--{flag}")
        if value:
            words.append(value.strip())
    return words


# The control-vector flags and how many words follow each; ik_llama.cpp takes --control-vector-scaled
# FNAME SCALE as two words, mainline one FNAME:SCALE,... word (common/arg.cpp, ik's common/common.cpp).
CONTROL_VECTOR_FLAGS = {"--control-vector": 1, "--control-vector-scaled": 1, "--control-vector-layer-range": 2}
IK_CONTROL_VECTOR_FLAGS = {**CONTROL_VECTOR_FLAGS, "--control-vector-scaled": 2}


def flag_name(word: str) -> str:
    """A flag as llama-server reads it: both llama.cpp and ik_llama.cpp turn '_' into '-' in words starting with '--'."""
    return word.replace("_", "-") if word.startswith("--") else word


def without_control_vectors(words: list[str], ik: bool = False) -> list[str]:
    """The words less any control-vector flags in any spelling, with their values (ours are added afresh:
    a user's own vector would be added on top, and a user's layer range would cut ours)."""
    arity = IK_CONTROL_VECTOR_FLAGS if ik else CONTROL_VECTOR_FLAGS
    out, skip = [], 0
    for at, word in enumerate(words):
        if skip:
            skip -= 1
            continue
        skip = arity.get(flag_name(word), 0)
        if ik and flag_name(word) == "--control-vector-scaled" and not is_number(words[at + 2:at + 3]):
            skip = 1  # mainline's FILE:SCALE under --ik: the word after it is the user's next flag, kept
        if not skip:
            out.append(word)
    return out


def is_number(words: list[str]) -> bool:
    """Whether the one word given reads as a float (ik_llama.cpp's SCALE); False for none."""
    try:
        float(words[0])
    except (IndexError, ValueError):
        return False
    return True


@dataclass(frozen=True)
class ServerSteering:
    """The control vectors one llama-server runs with: (file, scale) pairs; empty for none."""

    vectors: tuple[tuple[str, float], ...] = ()

    def flags(self, ik: bool = False) -> list[str]:
        """Mainline: one ``--control-vector-scaled FILE:SCALE,...``; ik_llama.cpp: ``--control-vector-scaled
        FILE SCALE`` per vector (it reads the next two words and takes no list)."""
        if not self.vectors:
            return []
        if ik:
            return [word for path, scale in self.vectors for word in ("--control-vector-scaled", path, f"{scale:g}")]
        return ["--control-vector-scaled", ",".join(f"{path}:{scale:g}" for path, scale in self.vectors)]

    def extra_flags(self, user: str | None, ik: bool = False) -> str:
        """The extra flags to start the server with: the user's own, then ours (literal form)."""
        words = literal_flags(user)
        if self.vectors:
            words = without_control_vectors(words, ik)
        return shlex.join(words + self.flags(ik))


def gguf_key(path: Path) -> str:
    stat = path.stat()
    return hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]


def transformers_architectures() -> list[str]:
    """GGUF architectures transformers can load (dequantised), i.e. those vectors can be built for."""
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING

    return sorted(name for name in GGUF_CONFIG_MAPPING if name not in ("general", "tokenizer"))


def parameter_count(path: Path) -> int:
    """Parameters of a GGUF model, from its tensor shapes (read through the bounded reader: nothing loaded)."""
    return sum(tensor.n_elements for tensor in read_gguf(path, MODEL).tensors)


class LlamaCppBackend:
    """Steering in llama-server by control vectors (the runtime's Backend protocol, backend.py)."""

    def __init__(self, store: PresetStore, data_dir: Path, host: LlamaServerHost, problems: Problems,
                 plan_for: Callable[[dict], Items], load_context: Callable[[str], Any] | None = None,
                 report: Callable[[dict, Items, dict[str, str], float | None], None] | None = None,
                 last: LastSteered | None = None):
        self.store = store
        self.folder = Path(data_dir) / "llama.cpp"
        self.host = host
        self.problems = problems
        self.plan_for = plan_for
        self.report = report  # (state, plan, {name: why not applied}, restart seconds or None): what one request got
        self._load_context = load_context
        self._lock = threading.RLock()
        self.running: dict[int, ServerSteering | None] = {}  # id(server) -> what it runs with now (None: not running)
        self._intact: dict[Path, tuple[int, int]] = {}  # cached control-vector files read whole: (size, mtime) read
        self.refused: dict[int, tuple[str, str]] = {}  # id(server) -> (flags it did not start with, what was said)
        self.restarts = 0
        self.last = last or LastSteered()  # what steered each reply (each session's, with --multi-user)
        self._model_path: Path | None = None  # the GGUF of the server noticed last

    # -- the protocol ----------------------------------------------------------------------------------
    @staticmethod
    def serves(model: Any) -> bool:
        return type(model).__name__ == SERVER_CLASS

    def notice(self, model: Any) -> None:
        self._model_path = Path(self.host.model_path(model))
        self.attach(model)

    def begin_generation(self, state: dict, input_ids: Any) -> Items:
        return []  # the server's own generate call applies the request's control vectors (attach)

    def prepare(self, names: Iterable[str]) -> None:
        pass  # a control vector is built at the reply that first needs it: the server restarts then anyway

    def preparing(self, name: str) -> str | None:
        return None

    def status(self, presets: Iterable[str] = ()) -> BackendStatus:
        name = self._model_path.name if self._model_path is not None else None
        return BackendStatus(name, loader="llama.cpp", control_vectors=True)

    def check_usable(self, names: list[str], reading: bool = False) -> None:
        param = "monitor" if reading else STATE_STEERING
        if reading:
            raise RequestError("monitor readings need the hidden states of the reply, which the llama.cpp loader does not "
                               "give; load the model with the Transformers loader", param)
        for name in names:
            recipe = self.store.recipe(name)
            if recipe.mode != "all":
                raise RequestError(f"preset {name!r} steers in mode {recipe.mode}, which the llama.cpp loader cannot do (llama-server "
                                   "adds control vectors at every position); choose a preset of mode all, or load the model with the "
                                   "Transformers loader", param)

    # -- the server --------------------------------------------------------------------------------
    def attach(self, server: Any) -> None:
        """Wrap the server's generate calls so that each starts with its request's control vectors."""
        for name in ("generate", "generate_with_streaming"):
            method = getattr(type(server), name, None)
            if method is None or getattr(server.__dict__.get(name), "_steering_backend", None) is self:
                continue
            original = getattr(method, "__wrapped__", method).__get__(server)  # the loader's own (script.py may wrap it)
            wrapper = self._wrap(server, original, streaming=name == "generate_with_streaming")
            wrapper._steering_backend = self
            server.__dict__[name] = wrapper

    def _wrap(self, server, original, streaming: bool):
        if streaming:
            def generate_with_streaming(prompt, state, *args, **kwargs):
                self.before_generation(server, state)
                yield from original(prompt, state, *args, **kwargs)

            return generate_with_streaming

        def generate(prompt, state, *args, **kwargs):
            self.before_generation(server, state)
            return original(prompt, state, *args, **kwargs)

        return generate

    def before_generation(self, server: Any, state: dict) -> None:
        """Restart the server when this request needs another set of control vectors. Never raises:
        a problem is said once and the reply goes out with what the server has."""
        if STATE_IS_CHAT not in state:  # Impersonate: no state_modifier ran, so the adapter named no session
            session = self.host.session()
            if session:
                state[STATE_SESSION] = session
        with self.problems.serving(state_session(state)):
            self._apply(server, state)

    def _apply(self, server: Any, state: dict) -> None:
        plan: Items = []
        skipped: dict[str, str] = {}
        seconds = None
        self.last.record(state, [])
        try:
            plan = self.plan_for(state)
            wanted = self.steering_for(server, plan, skipped)
            seconds = self._run_with(server, wanted)
            applied = [(name, strength) for name, strength in plan if name not in skipped]
            self.last.record(state, applied)
            if seconds is not None:
                notice = (f"restarted llama.cpp with steering: {describe(applied)}, {seconds:.1f} s" if wanted.vectors
                          else f"restarted llama.cpp without steering, {seconds:.1f} s")
                self.last.note(state, notice)
                log.info("steering: %s", notice)
            if plan and not skipped:  # steered as chosen: what went wrong before is past, as with the Transformers loader
                self.problems.clear()
        except Exception as error:  # steering must never break a generation; the reason is said once
            problem = str(error) if isinstance(error, (ValueError, RestartFailed)) else f"llama.cpp steering not applied: {type(error).__name__}: {error}"
            self.problems.report(problem)
            skipped = {name: problem for name, _ in plan}
        finally:
            if self.report is not None:
                self.report(state, plan, skipped, seconds)

    def _run_with(self, server: Any, wanted: ServerSteering) -> float | None:
        """Restart the server when it runs with another set than ``wanted``: the seconds that took, None when unchanged.
        When it does not start with ``wanted``, it is started again without steering so that the reply still goes
        out (RestartFailed says which of the two happened)."""
        with self._lock:
            if wanted == self.running.get(id(server), ServerSteering()):
                return None
            flags = self._flags(wanted)
            refused = self.refused.get(id(server))
            if refused and refused[0] == flags:  # the same start failed at the last try: not paid for again per reply
                raise RestartFailed(f"{refused[1]}, at an earlier reply: llama.cpp runs without steering, so this reply is not "
                                    "steered; choose other presets or change the extra flags to try again")
            start = time.perf_counter()
            try:
                self._restart(server, wanted)
            except Exception as error:
                if self._unsteered_after(server, wanted):  # up again without steering: not retried with these flags
                    self.refused[id(server)] = (flags, failed_start(error))
                    raise RestartFailed(f"{failed_start(error)}. Restarted llama.cpp without steering: this reply is not steered") from error
                either = " (nor did it start without steering)" if wanted.vectors else ""
                raise RestartFailed(f"{failed_start(error)}. llama-server is not running{either}: check the extra flags, then "
                                    "reload the model (Model tab)") from error
            self.refused.pop(id(server), None)
            return time.perf_counter() - start

    def _flags(self, steering: ServerSteering) -> str:
        return steering.extra_flags(self.host.user_flags(), self.host.ik_llama())

    def _restart(self, server: Any, steering: ServerSteering) -> None:
        self.running[id(server)] = None  # stopped: not running until it is up again, so any next request restarts it
        self.host.restart(server, self._flags(steering))
        self.running[id(server)] = steering
        self.restarts += 1

    def _unsteered_after(self, server: Any, wanted: ServerSteering) -> bool:
        """After a failed start with ``wanted``: whether the server is up again without steering."""
        if not wanted.vectors:  # the user's own flags alone fail: nothing of ours to leave out
            return False
        try:
            self._restart(server, ServerSteering())
        except Exception as again:
            log.warning("steering: llama.cpp did not start without steering either: %s", failed_start(again))
            return False
        log.info("steering: llama.cpp restarted without steering after a failed start with it")
        return True

    # -- the vectors ---------------------------------------------------------------------------------
    def steering_for(self, server: Any, plan: Items, skipped: dict[str, str] | None = None) -> ServerSteering:
        """The control-vector files (built for the server's GGUF when needed) for a plan; why a preset has
        none goes into ``skipped``."""
        gguf = Path(self.host.model_path(server))
        loaded: list = []  # the GGUF in PyTorch, loaded once if any vector must be built
        vectors = []
        try:
            for name, strength in plan:
                try:
                    vectors.append((str(self.vector_file(gguf, name, loaded)), float(strength)))
                except (PresetError, ValueError, OSError) as error:
                    self.problems.report(str(error))
                    if skipped is not None:
                        skipped[name] = str(error)
        finally:
            loaded.clear()
            gc.collect()
        return ServerSteering(tuple(vectors))

    def vector_file(self, gguf: Path, name: str, loaded: list) -> Path:
        """The preset's control-vector file for ``gguf``, built and exported at first use."""
        recipe = self.store.recipe(name)
        if recipe.mode != "all":
            raise PresetError(f"preset {name!r} uses mode {recipe.mode}, which llama.cpp cannot do (it adds control "
                              "vectors at every position); not applied on the llama.cpp loader")
        path = self.folder / f"{gguf.stem}-{gguf_key(gguf)}" / f"{name}-{recipe.key()}.gguf"
        if any(ch in str(path) for ch in ",:"):
            raise PresetError(f"{path}: llama-server cannot take a control-vector path with ',' or ':'; move the webui's user_data")
        if path.is_file() and self._readable(path):
            return path
        _, n_embd, n_layer = model_dimensions(gguf)  # a misfit said from the recipe, before the GGUF is loaded
        check_imported_fits(recipe, n_embd, n_layer, gguf.name)
        if not loaded:
            loaded.append(self.torch_context(gguf))
        ctx = loaded[0]
        vector = self.store.vector(recipe, ctx)
        write_control_vector(path, vector, 1.0, str(getattr(ctx.model.config, "model_type", "llama")))
        return path

    def _readable(self, path: Path) -> bool:
        """Whether a cached control-vector file reads whole: llama-server starts without a damaged one and says so
        only in its own log, so such a file is built again rather than handed over. Read once per file version."""
        stat = path.stat()
        version = (stat.st_size, stat.st_mtime_ns)
        if self._intact.get(path) == version:
            return True
        try:
            read_control_vector(path)
        except ControlVectorError as error:
            log.warning("steering: %s; building it again", error)
            return False
        self._intact[path] = version
        return True

    def torch_context(self, gguf: Path):
        """The GGUF loaded through transformers (dequantised, float32 on the CPU) to build vectors for it."""
        architecture = model_dimensions(gguf)[0]  # a missing gguf package or a damaged file is said as it is
        supported = transformers_architectures()
        if architecture not in supported:
            raise PresetError(f"{gguf.name}: transformers cannot load GGUF architecture {architecture!r}, so no vector can be "
                              f"built for it (it can: {', '.join(supported)})")
        gigabytes = parameter_count(gguf) * 4 / 1e9
        log.info("steering: building vectors for %s: loading it into PyTorch (dequantised float32, about %.1f GB of memory, freed after)",
                 gguf.name, gigabytes)
        if self._load_context is None:
            from ..engine.models import load_context

            self._load_context = load_context
        return self._load_context(str(gguf))
