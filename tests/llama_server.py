"""A real llama-server process on the default model's GGUF, for the tests and benchmarks that compare with
llama.cpp: STEERING_LLAMA_SERVER=/path/to/llama-server, and STEERING_IK_LLAMA_SERVER=/path/to/ik_llama.cpp's
llama-server for the webui's --ik (tests skip, saying so, without them)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from extensions.steering.engine.models import default_gguf

LLAMA_SERVER = os.environ.get("STEERING_LLAMA_SERVER")
needs_server = pytest.mark.skipif(
    not LLAMA_SERVER, reason="set STEERING_LLAMA_SERVER to a mainline llama-server binary to compare with llama.cpp"
)
CVECTOR_GENERATOR = os.environ.get("STEERING_CVECTOR_GENERATOR")
needs_generator = pytest.mark.skipif(
    not (LLAMA_SERVER and CVECTOR_GENERATOR),
    reason="set STEERING_LLAMA_SERVER and STEERING_CVECTOR_GENERATOR (llama-server and llama-cvector-generator of one mainline build)",
)
IK_LLAMA_SERVER = os.environ.get("STEERING_IK_LLAMA_SERVER")
needs_ik_server = pytest.mark.skipif(
    not IK_LLAMA_SERVER, reason="set STEERING_IK_LLAMA_SERVER to ik_llama.cpp's llama-server binary (built from ikawrakow/ik_llama.cpp)"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServer:
    """llama-server on the default model's GGUF, over its HTTP API (urllib only)."""

    def __init__(self, flags: list[str], log: Path, model: Path | None = None, binary: str | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # no --n-predict: every request names its own, and ik_llama.cpp caps requests at the server's (not a default)
        command = [binary or LLAMA_SERVER, "-m", str(model or default_gguf()), "--host", "127.0.0.1", "--port", str(self.port),
                   "-c", "512", "-np", "1", "-t", "2", *flags]
        self.log = log
        self.process = subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama-server exited with {self.process.returncode}: {log.read_text(errors='replace')[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.5)
        self.close()
        raise RuntimeError("llama-server did not become ready in 120 s")

    def post(self, path: str, body: dict) -> dict:
        request = urllib.request.Request(self.url + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())

    def next_token_logprobs(self, ids: list[int], n_probs: int = 40) -> dict[int, float]:
        """Log-probabilities of the top ``n_probs`` next tokens after ``ids`` (raw logits, before sampling)."""
        reply = self.post("/completion", {"prompt": ids, "n_predict": 1, "n_probs": n_probs, "temperature": 0,
                                          "cache_prompt": True})
        top = reply["completion_probabilities"][0]["top_logprobs"]
        return {int(item["id"]): float(item["logprob"]) for item in top}

    def greedy(self, ids: list[int], n: int) -> str:
        reply = self.post("/completion", {"prompt": ids, "n_predict": n, "temperature": 0, "cache_prompt": False})
        return reply["content"]

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextmanager
def llama_server(flags: list[str], log: Path, model: Path | None = None):
    server = LlamaServer(flags, log, model)
    try:
        yield server
    finally:
        server.close()


def f32_copy(source: Path, target: Path) -> Path:
    """The GGUF model with every tensor dequantised to F32: llama.cpp then runs the weights our torch
    model has (transformers dequantises the same way) without quantising activations in its matmuls."""
    import numpy as np
    from gguf import GGUFReader, GGUFValueType, GGUFWriter
    from gguf.quants import dequantize

    reader = GGUFReader(str(source))
    field = reader.fields["general.architecture"]
    writer = GGUFWriter(str(target), bytes(field.parts[field.data[0]]).decode())
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name in ("general.architecture", "general.alignment", "general.file_type"):
            continue
        kind = field.types[0]
        writer.add_key_value(field.name, field.contents(), kind, field.types[-1] if kind == GGUFValueType.ARRAY else None)
    for tensor in reader.tensors:
        writer.add_tensor(tensor.name, dequantize(tensor.data, tensor.tensor_type).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return target


# llama-cvector-generator's prompt files: one ChatML prompt per line, newlines written as \n
CHATML = "<|im_start|>system\\n{}<|im_end|>\\n<|im_start|>user\\n{}<|im_end|>\\n<|im_start|>assistant\\n"
PIRATE_VS_LIBRARIAN = (
    ("You are a pirate. Talk like a pirate.", "You are a pirate captain on the high seas.", "Act like a pirate, arr!",
     "You are an old sea pirate."),
    ("You are a librarian. Talk like a librarian.", "You are a librarian in a quiet library.", "Act like a librarian.",
     "You are an old town librarian."),
    ("Who are you?", "Hello", "What did you do today?", "Tell me about yourself."),
)


def cvector_generator_file(generator: str, folder: Path, positive: tuple, negative: tuple, asked: tuple) -> Path:
    """llama-cvector-generator's mean vector (system prompts ``positive`` minus ``negative``, each with the
    user message of the same row) on the default model's GGUF: direction.1 .. direction.29, unit norm each."""
    files = []
    for side, systems in (("positive", positive), ("negative", negative)):
        files.append(folder / f"{side}.txt")
        files[-1].write_text("\n".join(CHATML.format(system, user) for system, user in zip(systems, asked)) + "\n")
    out = folder / "cvector.gguf"
    subprocess.run([generator, "-m", str(default_gguf()), "--method", "mean", "-t", "2", "-o", str(out),
                    "--positive-file", str(files[0]), "--negative-file", str(files[1])],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return out
