"""A model of the four entry points of the webui's modules/api/completions.py (v4.7.3), as the steering
extension meets them: the body a route hands on is turned into the generation state in place (so what
the extension put into it while the request was read reaches its state modifier), a chat request runs
through the host's chat path (``generate_chat_reply``) and a completion through
``generate_reply(is_chat=False)``, and replies have the OpenAI shape, a stream ending with the chunk that
carries ``finish_reason``."""
import time

import webui_host as host
from modules import shared


def _as_state(body: dict, stream: bool, stop_event) -> dict:
    """``body`` itself, renamed and completed into the keys the host's generation reads."""
    body["max_new_tokens"] = body.pop("max_tokens")
    body["do_sample"] = body["do_sample"] and body["temperature"] > 0  # temperature 0 asks for greedy
    stop = body["stop"]
    body["custom_stopping_strings"] = [stop] if isinstance(stop, str) else list(stop or [])
    body["stream"] = stream
    if stop_event:  # the routes always pass one; a direct caller may not
        body["stop_event"] = stop_event
    return body


def _split_messages(messages: list[dict]) -> tuple[str, dict]:
    """The last user message without an answer yet, and the answered exchanges before it as a chat history."""
    exchanges, question = [], ""
    for message in messages:
        if message["role"] == "user":
            question = message["content"]
        elif message["role"] == "assistant" and question:
            exchanges.append([question, message["content"]])
            question = ""
    return question, {"internal": exchanges, "visible": [list(pair) for pair in exchanges], "metadata": {}}


def _chat_replies(body: dict, stream: bool, stop_event):
    """The reply so far at each step of a chat request, spoken as the named character or the default one."""
    state = _as_state(body, stream, stop_event)
    wanted = body["character"] or shared.default_settings["character"]
    character = host.load_character("Assistant" if wanted == "None" else wanted)
    question, history = _split_messages(body["messages"])
    state.update({
        "name1": "You", "name2": character.get("name", ""), "greeting": character.get("greeting", ""),
        "context": body["context"] or character.get("context", ""),
        "history": history, "custom_system_message": "",
        "chat-instruct_command": host.ui_state()["chat-instruct_command"],
    })
    for turns in host.generate_chat_reply(question, state, loading_message=False):
        yield turns["internal"][-1][1]


def _completion_replies(body: dict, stream: bool, stop_event):
    state = _as_state(body, stream, stop_event)
    yield from host.generate_reply(body["prompt"], state, is_chat=False)


def _new_pieces(replies):
    """What each step adds: the host yields the whole reply so far."""
    sent = ""
    for reply in replies:
        if len(reply) > len(sent):
            yield reply[len(sent):]
            sent = reply


def _final(replies) -> str:
    reply = ""
    for reply in replies:
        pass
    return reply


def _response(kind: str, response_id: str, finish_reason: str | None, **content) -> dict:
    """A response or stream chunk with one choice."""
    choice = {"index": 0, "finish_reason": finish_reason, **content}
    return {"id": response_id, "object": kind, "created": int(time.time()), "model": shared.model_name, "choices": [choice]}


def _response_id(prefix: str) -> str:
    return f"{prefix}-{time.time_ns()}"


def chat_completions(body: dict, is_legacy=False, stop_event=None) -> dict:
    answer = _final(_chat_replies(body, False, stop_event))
    return _response("chat.completion", _response_id("chatcmpl"), "stop", message={"role": "assistant", "content": answer})


def stream_chat_completions(body: dict, is_legacy=False, stop_event=None):
    response_id = _response_id("chatcmpl")
    yield _response("chat.completion.chunk", response_id, None, delta={"role": "assistant"})
    for piece in _new_pieces(_chat_replies(body, True, stop_event)):
        yield _response("chat.completion.chunk", response_id, None, delta={"content": piece})
    yield _response("chat.completion.chunk", response_id, "stop", delta={})


def completions(body: dict, is_legacy=False, stop_event=None) -> dict:
    text = _final(_completion_replies(body, False, stop_event))
    return _response("text_completion", _response_id("cmpl"), "stop", text=text)


def stream_completions(body: dict, is_legacy=False, stop_event=None):
    response_id = _response_id("cmpl")
    for piece in _new_pieces(_completion_replies(body, True, stop_event)):
        yield _response("text_completion", response_id, None, text=piece)
    yield _response("text_completion", response_id, "stop", text="")
