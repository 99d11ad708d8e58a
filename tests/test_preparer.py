"""The background preparer: it stops cleanly, also when the process exits while a vector is being built."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import torch

from extensions.steering.runtime.preparer import Preparer
from extensions.steering.runtime.problems import Problems

ROOT = Path(__file__).resolve().parents[1]


class SlowModels:
    """A ModelWatch whose builds run torch for a while (as a calibrated or distilled build does)."""

    fingerprint = "model"

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.started = threading.Event()
        self.built: list[str] = []

    def current(self):
        return self

    def cached(self, name: str) -> bool:
        return False

    def vector(self, name: str):
        self.started.set()
        a, end = torch.randn(128, 128), time.monotonic() + self.seconds
        while time.monotonic() < end:
            a = torch.tanh(a @ a)
        self.built.append(name)
        return a


def test_stop_finishes_the_build_under_way_and_starts_no_other():
    models = SlowModels(0.5)
    preparer = Preparer(models, threading.Lock(), Problems())
    assert preparer.prepare(["first", "second", "third"]) == ["first", "second", "third"]
    assert models.started.wait(10)
    preparer.stop()
    assert preparer.wait(0) and models.built == ["first"]
    assert preparer.status("first") == "ready" and preparer.status("second") == "preparing"


def test_a_process_that_exits_while_preparing_exits_cleanly():
    # Without the stop at exit, a daemon thread inside torch aborts the interpreter's shutdown
    # ("terminate called without an active exception", exit status 134).
    script = textwrap.dedent("""
        import threading
        from tests.test_preparer import SlowModels
        from extensions.steering.runtime.preparer import Preparer
        from extensions.steering.runtime.problems import Problems

        models = SlowModels(2.0)
        Preparer(models, threading.Lock(), Problems()).prepare(["slow", "never"])
        models.started.wait(10)
        print("exiting while preparing", flush=True)
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "exiting while preparing" in done.stdout and "terminate called" not in done.stderr
