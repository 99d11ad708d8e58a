"""modules/api/completions.py of text-generation-webui v4.7.3, reduced to what touches an extension: the
request body itself becomes the generation state (``generate_params = body``), chat requests go through
``generate_chat_reply`` and completions through ``generate_reply(is_chat=False)``, responses and stream
chunks have the webui's shape (a stream's last chunk carries the finish_reason)."""
import time

import webui_host as host
from modules import shared

from .errors import InvalidRequestError


def process_parameters(body, is_legacy=False):
    generate_params = body
    generate_params['max_new_tokens'] = body.pop('max_tokens')
    if generate_params['temperature'] == 0:
        generate_params['do_sample'] = False
    stop = body.get('stop')
    generate_params['custom_stopping_strings'] = [stop] if isinstance(stop, str) else list(stop or [])
    return generate_params


def convert_history(messages):
    history, pending = [], None
    for message in messages:
        if message['role'] == 'user':
            pending = message['content']
        elif message['role'] == 'assistant' and pending is not None:
            history.append([pending, message['content']])
            pending = None
    return pending or '', {'internal': history, 'visible': [list(pair) for pair in history], 'metadata': {}}


def _chunk(cmpl_id, object_type, delta=None, text=None, finish_reason=None):
    choice = {"index": 0, "finish_reason": finish_reason}
    if text is not None:
        choice["text"] = text
    else:
        choice["delta"] = delta or {}
    return {"id": cmpl_id, "object": object_type, "created": int(time.time()), "model": shared.model_name, "choices": [choice]}


def chat_completions_common(body, is_legacy=False, stream=False, stop_event=None):
    if 'messages' not in body:
        raise InvalidRequestError(message="messages is required", param='messages')
    object_type = 'chat.completion.chunk' if stream else 'chat.completion'
    cmpl_id = "chatcmpl-%d" % time.time_ns()
    generate_params = process_parameters(body, is_legacy=is_legacy)
    if stop_event is not None:
        generate_params['stop_event'] = stop_event
    character = body['character'] or shared.default_settings['character']
    character = "Assistant" if character == "None" else character
    name1, name2, _, greeting, context = host.load_character(character, body['user_name'] or 'You', '')
    user_input, history = convert_history(body['messages'])
    generate_params.update({
        'mode': body['mode'], 'name1': name1, 'name2': body['bot_name'] or name2, 'context': body['context'] or context,
        'greeting': greeting, 'custom_system_message': '', 'history': history, 'stream': stream,
        'chat-instruct_command': host.ui_state()['chat-instruct_command'],
    })
    if generate_params['max_new_tokens'] is None:
        generate_params['max_new_tokens'] = 512
    if stream:
        yield _chunk(cmpl_id, object_type, {'role': 'assistant'})
    answer, seen = '', ''
    for history_now in host.generate_chat_reply(user_input, generate_params, loading_message=False):
        answer = history_now['internal'][-1][1]
        if stream and answer[len(seen):]:
            yield _chunk(cmpl_id, object_type, {'content': answer[len(seen):]})
            seen = answer
    if stream:
        yield _chunk(cmpl_id, object_type, finish_reason="stop")
    else:
        response = _chunk(cmpl_id, object_type, finish_reason="stop")
        response["choices"][0]["message"] = {"role": "assistant", "content": answer}
        del response["choices"][0]["delta"]
        yield response


def completions_common(body, is_legacy=False, stream=False, stop_event=None):
    object_type = 'text_completion'
    cmpl_id = "cmpl-%d" % time.time_ns()
    generate_params = process_parameters(body, is_legacy=is_legacy)
    generate_params['stream'] = stream
    if stop_event is not None:
        generate_params['stop_event'] = stop_event
    prompt, answer = body['prompt'], ''
    if stream:
        seen = ''
        for answer in host.generate_reply(prompt, generate_params, is_chat=False):
            if answer[len(seen):]:
                yield _chunk(cmpl_id, object_type, text=answer[len(seen):])
                seen = answer
        yield _chunk(cmpl_id, object_type, text='', finish_reason="stop")
        return
    choices = []
    for index in range(body.get('n', 1) or 1):
        for answer in host.generate_reply(prompt, generate_params, is_chat=False):
            pass
        choices.append({"index": index, "finish_reason": "stop", "text": answer})
    yield {"id": cmpl_id, "object": object_type, "created": int(time.time()), "model": shared.model_name, "choices": choices}


def chat_completions(body: dict, is_legacy: bool = False, stop_event=None) -> dict:
    return list(chat_completions_common(body, is_legacy, stream=False, stop_event=stop_event))[-1]


def stream_chat_completions(body: dict, is_legacy: bool = False, stop_event=None):
    yield from chat_completions_common(body, is_legacy, stream=True, stop_event=stop_event)


def completions(body: dict, is_legacy: bool = False, stop_event=None) -> dict:
    return list(completions_common(body, is_legacy, stream=False, stop_event=stop_event))[-1]


def stream_completions(body: dict, is_legacy: bool = False, stop_event=None):
    yield from completions_common(body, is_legacy, stream=True, stop_event=stop_event)
