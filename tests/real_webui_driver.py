"""Runs the steering extension inside a real text-generation-webui (run by test_real_webui.py).

    python real_webui_driver.py WEBUI_ROOT USER_DATA_DIR

WEBUI_ROOT has the extension installed (install.py). The webui's own modules load it
(modules.extensions.load_extensions) and generate (modules.text_generation, modules.chat) with the
embedded SmolLM2 as shared.model. Prints one JSON line of results.
"""
from __future__ import annotations

import copy
import json
import os
import sys
import threading
import types
from pathlib import Path

root, user_data = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
os.chdir(root)
sys.path.insert(0, str(root))
sys.argv = ["server.py", "--extensions", "steering", "--user-data-dir", str(user_data), "--cpu"]
stubbed = []
try:
    import ddgs  # noqa: F401  (web search only; not needed to generate)
except ModuleNotFoundError:
    sys.modules["ddgs"] = types.SimpleNamespace(DDGS=object)
    stubbed.append("ddgs")

import modules.shared as shared  # noqa: E402
import torch  # noqa: E402
from modules import chat, sampler_hijack, text_generation, utils  # noqa: E402
from modules import extensions as extensions_module  # noqa: E402

torch.set_num_threads(1)
sampler_hijack.hijack_samplers()  # what loading a Transformers model does (models.py)
shared.generation_lock = threading.Lock()  # server.py
extensions_module.available_extensions = utils.get_available_extensions()

from extensions.steering.engine.models import load_model  # noqa: E402  (the installed copy)

shared.model, shared.tokenizer = load_model()
shared.model_name, shared.args.loader = "SmolLM2-135M-Instruct", "Transformers"


def state(**overrides):
    result = copy.deepcopy(shared.settings)
    result.update({
        "history": {"internal": [], "visible": [], "metadata": {}}, "character_menu": "Assistant",
        "unique_id": "20260101-00-00-00", "mode": "chat", "stream": True, "do_sample": False,
        "max_new_tokens": 8, "auto_max_new_tokens": False, "seed": 1,
    })
    result.update(overrides)
    return result


def chat_reply(**overrides):
    output = None
    for output in chat.generate_chat_reply("Tell me about your day.", state(**overrides), loading_message=False):
        pass
    return output["internal"][-1][1]


def notebook_reply():
    reply = None
    for reply in text_generation.generate_reply("Once upon a time, the dragon", state(stream=False), is_chat=False):
        pass
    return reply


def clean():
    hooks = sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in shared.model.modules())
    return hooks == 0 and "generate" not in shared.model.__dict__


cases = [dict(mode="chat"), dict(mode="chat-instruct"), dict(mode="instruct"), dict(mode="instruct", stream=False)]
results = {"stubbed": stubbed}
results["absent"] = [chat_reply(**case) for case in cases] + [notebook_reply()]
extensions_module.load_extensions()
script = extensions_module.state["steering"][2]
results["loaded"] = [chat_reply(**case) for case in cases] + [notebook_reply()]
results["clean_loaded"] = clean()
script.RUNTIME.set_active([("love", 1.0)])
results["steered"] = [chat_reply(**case) for case in cases] + [notebook_reply()]
results["clean_steered"] = clean()
results["status"] = script.RUNTIME.status_line()
results["shipped"] = [info.name for info in script.RUNTIME.store.list() if info.shipped]
print(json.dumps(results))
