"""The llama.cpp loader: what a change of steering costs, next to what an unchanged one costs.

- restart: the backend restarting llama-server for another set of control vectors (stop, start with
  the flags, ready), median of --rounds, next to a plain start of the same server (a model load);
- unchanged: tokens/s of a server running the `love` control vector ÷ one running none, the two
  servers side by side, requests alternating (the set is unchanged, so nothing restarts).

    STEERING_LLAMA_SERVER=/path/to/llama-server .venv/bin/python benchmarks/llama_restart.py [--rounds 5]
"""
from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from llama_server import LlamaServer as ServerProcess  # noqa: E402  (the tests' llama-server process)

from benchmarks.common import save_json  # noqa: E402
from extensions.steering.engine.models import default_gguf  # noqa: E402
from extensions.steering.engine.presets import PresetStore  # noqa: E402
from extensions.steering.runtime import SteeringRuntime  # noqa: E402

PROMPT = "I hate you because"


class Host:
    """Restarts llama-server as the webui's loader does (its flags, then the extra flags) and times it."""

    def __init__(self, log: Path):
        self.log, self.seconds = log, []
        self.steered_flags: str | None = None  # the flags of the last restart with control vectors

    def model_path(self, server):
        return default_gguf()

    def user_flags(self) -> str:
        return "--threads 1"

    def ik_llama(self) -> bool:
        return False

    def session(self) -> str | None:
        return None  # one user

    def restart(self, server, extra_flags: str) -> None:
        if "--control-vector-scaled" in extra_flags:
            self.steered_flags = extra_flags
        start = time.perf_counter()
        server.process.close()
        server.process = ServerProcess(shlex.split(extra_flags), self.log)
        self.seconds.append(time.perf_counter() - start)


class LlamaServer:  # the webui's model class, by name: what the backend wraps
    def __init__(self, process: ServerProcess):
        self.model_path, self.process = str(default_gguf()), process

    def generate(self, prompt, state):
        return self.process.post("/completion", {"prompt": prompt, "n_predict": 8, "temperature": 0})["content"]


def tokens_per_second(process: ServerProcess, tokens: int) -> float:
    reply = process.post("/completion", {"prompt": PROMPT, "n_predict": tokens, "temperature": 0, "cache_prompt": False,
                                         "ignore_eos": True})
    return float(reply["timings"]["predicted_per_second"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    if not os.environ.get("STEERING_LLAMA_SERVER"):
        print("[skip] llama_restart: set STEERING_LLAMA_SERVER to a llama-server binary")
        return
    folder = Path(tempfile.mkdtemp(prefix="steering-llama-bench-"))
    log = folder / "server.log"

    loads = []
    for _ in range(args.rounds):
        start = time.perf_counter()
        ServerProcess(["--threads", "1"], log).close()
        loads.append(time.perf_counter() - start)

    host = Host(log)
    server = LlamaServer(ServerProcess(["--threads", "1"], log))
    rt = SteeringRuntime(PresetStore(folder / "presets"), folder / "data", lambda: (server, server), lambda: "llama.cpp", llama_host=host)
    rt.notice()
    state = {"steering_chat": False}
    rt.set_active([("love", 0.3)])
    server.generate(PROMPT, state)  # builds and exports the vector once (not timed as a restart below)
    host.seconds.clear()
    for round_ in range(args.rounds):
        rt.set_active([] if round_ % 2 == 0 else [("love", 0.3)])
        server.generate(PROMPT, state)
    restarts = list(host.seconds)
    unchanged_before = len(host.seconds)
    for _ in range(3):
        server.generate(PROMPT, state)
    assert len(host.seconds) == unchanged_before, "an unchanged set restarted the server"
    assert host.steered_flags is not None, "no restart with the love vector"
    steered_flags = shlex.split(host.steered_flags)
    server.process.close()

    steered = ServerProcess(steered_flags, log)
    plain = ServerProcess(["--threads", "1"], log)
    try:
        rates = {"steered": [], "unsteered": []}
        for round_ in range(args.rounds * 2):
            order = [("steered", steered), ("unsteered", plain)][:: 1 if round_ % 2 == 0 else -1]
            for name, process in order:
                rates[name].append(tokens_per_second(process, args.tokens))
    finally:
        steered.close()
        plain.close()

    result = {
        "plain_start_s": loads, "restart_s": restarts, "restart_median_s": statistics.median(restarts),
        "plain_start_median_s": statistics.median(loads), "restart_over_plain_start": statistics.median(restarts) / statistics.median(loads),
        "tokens_per_s": rates, "steered_over_unsteered_tokens_per_s": statistics.median(rates["steered"]) / statistics.median(rates["unsteered"]),
        "unchanged_set_restarts": 0, "rounds": args.rounds, "tokens": args.tokens, "steered_flags_example": steered_flags,
    }
    print(f"plain llama-server start (a model load): median {result['plain_start_median_s']:.2f} s over {args.rounds}")
    print(f"restart for another steering set: median {result['restart_median_s']:.2f} s "
          f"({result['restart_over_plain_start']:.2f}× a plain start); an unchanged set: no restart")
    print(f"tokens/s steered ÷ unsteered (side by side, {args.rounds * 2} alternating rounds): {result['steered_over_unsteered_tokens_per_s']:.3f}")
    save_json("llama_restart", result)


if __name__ == "__main__":
    main()
