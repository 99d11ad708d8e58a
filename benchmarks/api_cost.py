"""What steering per request and the reading of each reply cost through the webui's API.

One real webui v4.7.3 (server.py --api --nowebui, the extension, the default model, one thread), four
kinds of request sent in turn, round after round, each generating exactly --tokens tokens (EOS banned):

- unsteered: ``"steering": null``;
- steered: ``"steering": {"love": 0.35}`` (the preset's own strength; the reading of an applied preset
  is part of every steered reply, so this is steering *and* its reading);
- read: unsteered, ``"monitor": ["love"]`` (the reading alone: reading on ÷ off).

Ratios of tokens per second (median over rounds of each round's ratio): steered ÷ unsteered and
read ÷ unsteered, by wall clock and by the server process's CPU time (the steadier of the two on a
shared machine). The vector and the reading's baseline are built by a warm-up request first.

    STEERING_WEBUI_DIR=/path/to/webui STEERING_WEBUI_PYTHON=/path/to/its/python \\
        .venv/bin/python benchmarks/api_cost.py [--rounds 12] [--tokens 64]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from webui_server import copy_webui, post, webui_api  # noqa: E402

from benchmarks.common import save_json  # noqa: E402
from extensions.steering.engine.models import resolve_model_folder  # noqa: E402

KINDS = {
    "unsteered": {"steering": None},
    "steered": {"steering": {"love": 0.35}},
    "read": {"steering": None, "monitor": ["love"]},
}
PROMPT = "Once upon a time, the dragon"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(base: str, pid: int, fields: dict, tokens: int) -> tuple[float, float, dict]:
    """(tokens/s by wall clock, tokens/s by the server's CPU time, the response's steering object)."""
    body = {"prompt": PROMPT, "max_tokens": tokens, "temperature": 0, "ban_eos_token": True, **fields}
    cpu, wall = cpu_seconds(pid), time.perf_counter()
    status, response = post(f"{base}/v1/completions", body)
    wall, cpu = time.perf_counter() - wall, cpu_seconds(pid) - cpu
    if status != 200:
        raise RuntimeError(f"{status}: {response}")
    made = response["usage"]["completion_tokens"]
    return made / wall, made / max(cpu, 1e-9), response["steering"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    webui = os.environ.get("STEERING_WEBUI_DIR")
    if not webui:
        print("set STEERING_WEBUI_DIR to a text-generation-webui v4.7.3 folder (and STEERING_WEBUI_PYTHON to its Python)")
        return 2
    python = os.environ.get("STEERING_WEBUI_PYTHON", sys.executable)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "text-generation-webui"
        user_data = copy_webui(Path(webui), root, resolve_model_folder())
        with webui_api(root, user_data, True, python) as (base, pid):
            for fields in KINDS.values():  # builds the vector and measures the reading's baseline once
                timed(base, pid, fields, 4)
            rates: dict[str, list[tuple[float, float]]] = {kind: [] for kind in KINDS}
            for round_index in range(args.rounds):
                order = list(KINDS) if round_index % 2 == 0 else list(reversed(KINDS))
                for kind in order:
                    wall, cpu, report = timed(base, pid, KINDS[kind], args.tokens)
                    if kind == "steered" and not report["presets"][0]["applied"]:
                        raise RuntimeError(f"the steered request was not steered: {report}")
                    rates[kind].append((wall, cpu))
    results = {"rounds": args.rounds, "tokens": args.tokens, "tokens_per_second": {}, "ratios": {}}
    for kind, values in rates.items():
        results["tokens_per_second"][kind] = {"wall": statistics.median(w for w, _ in values), "server_cpu": statistics.median(c for _, c in values)}
    print(f"{args.rounds} rounds of {args.tokens} tokens, through the API (median tokens/s: wall clock, server CPU time)")
    for kind in KINDS:
        rate = results["tokens_per_second"][kind]
        print(f"  {kind:<10} {rate['wall']:7.1f} {rate['server_cpu']:7.1f}")
    for kind in ("steered", "read"):
        wall = statistics.median(a[0] / b[0] for a, b in zip(rates[kind], rates["unsteered"]))
        cpu = statistics.median(a[1] / b[1] for a, b in zip(rates[kind], rates["unsteered"]))
        results["ratios"][f"{kind}/unsteered"] = {"wall": wall, "server_cpu": cpu}
        print(f"  {kind} ÷ unsteered: {wall:.3f} (wall clock), {cpu:.3f} (server CPU time)")
    save_json("api_cost", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
