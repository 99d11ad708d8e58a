"""A copy of a real text-generation-webui with this checkout's extension installed, and its API server
(``server.py --api --nowebui``, which needs no gradio) as a subprocess: for tests/test_real_webui.py and
benchmarks/api_cost.py."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODEL = "SmolLM2-135M-Instruct"


def copy_webui(source: Path, root: Path, model: Path | None = None) -> Path:
    """Copy the webui's code and its user_data's characters, templates and presets to ``root`` and
    install this checkout's extension there; returns the copy's user_data folder."""
    if not (source / "server.py").is_file():
        raise FileNotFoundError(f"{source} has no server.py: not a text-generation-webui folder")
    root.mkdir(parents=True)
    for name in ("server.py", "download-model.py", "modules", "css", "js"):
        copy = shutil.copytree if (source / name).is_dir() else shutil.copy2
        copy(source / name, root / name)
    (root / "extensions").mkdir()
    user_data = root / "user_data"
    shutil.copytree(source / "user_data" / "characters", user_data / "characters")
    for name in ("instruction-templates", "presets"):
        if (source / "user_data" / name).is_dir():
            shutil.copytree(source / "user_data" / name, user_data / name)
    install = subprocess.run([sys.executable, str(REPO / "install.py"), str(root)], capture_output=True, text=True, timeout=300)
    if install.returncode != 0:
        raise RuntimeError(install.stdout + install.stderr)
    if model is not None:  # the webui loads models from user_data/models/<name>
        (user_data / "models").mkdir(exist_ok=True)
        (user_data / "models" / MODEL).symlink_to(model)
    return user_data


def post(url: str, body: dict | str, timeout: float = 300) -> tuple[int, dict]:
    data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def stream(url: str, body: dict) -> list[dict]:
    request = urllib.request.Request(url, data=json.dumps({**body, "stream": True}).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=300) as response:
        lines = [line[len(b"data: "):].strip() for line in response.read().splitlines() if line.startswith(b"data: ")]
    assert lines[-1] == b"[DONE]"
    return [json.loads(line) for line in lines[:-1]]


@contextlib.contextmanager
def webui_api(root: Path, user_data: Path, extension: bool, python: str = sys.executable):
    """server.py --api --nowebui (no gradio needed) with the default model on the Transformers loader:
    yields (its base URL, its process id)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [python, "server.py", "--api", "--nowebui", "--cpu", "--model", MODEL, "--loader", "transformers",
               "--api-port", str(port), "--user-data-dir", str(user_data)] + (["--extensions", "steering"] if extension else [])
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "OMP_NUM_THREADS": "1"}
    log = (root / f"server-{port}.log").open("w")
    process = subprocess.Popen(command, cwd=root, stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            if process.poll() is not None:
                raise RuntimeError(f"server.py exited {process.returncode}: {Path(log.name).read_text()[-3000:]}")
            try:
                urllib.request.urlopen(f"{base}/v1/internal/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        else:
            raise TimeoutError("server.py did not serve within 300 s")
        yield base, process.pid
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
