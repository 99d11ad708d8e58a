"""A model of the webui's modules/api/script.py (v4.7.3), as the steering extension meets it: the FastAPI
``app`` with the two completion routes, ``check_key`` (the API key dependency, which the extension's own
route reuses) and the handler that sends an ``OpenAIError`` back as JSON with its status. What the
extension relies on: the request models are taken from .typing when this module is imported (after the
extensions' setup()), a route hands ``to_dict`` of the validated request on and looks its entry point up
in .completions by name at each request (non-streaming ones run in a worker thread), and a stream is sent
as server-sent events ending with ``[DONE]``."""
import asyncio
import json
import threading

from fastapi import Depends, FastAPI, Header, HTTPException
from fastapi.responses import JSONResponse, StreamingResponse
from modules import shared
from starlette.concurrency import iterate_in_threadpool

from . import completions
from .errors import OpenAIError
from .typing import ChatCompletionRequest, CompletionRequest, to_dict


def _require_key(authorization: str | None = Header(default=None)) -> None:
    """With --api-key set, a request must send it as "Authorization: Bearer <key>"."""
    key = shared.args.api_key
    if key and authorization != f"Bearer {key}":
        raise HTTPException(401, "Unauthorized")


app = FastAPI()
check_key = [Depends(_require_key)]


async def _send_error(_request, error: OpenAIError) -> JSONResponse:
    kind = "invalid_request_error" if error.code < 500 else "server_error"
    details = {"message": error.message, "type": kind, "param": getattr(error, "param", None), "code": None}
    return JSONResponse({"error": details}, status_code=error.code)


app.add_exception_handler(OpenAIError, _send_error)


def _events(chunks) -> StreamingResponse:
    """``chunks`` as server-sent events; the generator runs the model, so it is stepped in worker threads."""
    async def send():
        try:
            async for chunk in iterate_in_threadpool(chunks):
                yield "data: " + json.dumps(chunk) + "\n\n"
            yield "data: [DONE]\n\n"
        finally:
            chunks.close()

    return StreamingResponse(send(), media_type="text/event-stream")


async def _answer(entry_point: str, request_data):
    stop = threading.Event()
    request_body = to_dict(request_data)
    if request_data.stream:
        return _events(getattr(completions, "stream_" + entry_point)(request_body, is_legacy=False, stop_event=stop))
    try:
        reply = await asyncio.to_thread(getattr(completions, entry_point), request_body, is_legacy=False, stop_event=stop)
    finally:
        stop.set()  # a generation outliving its request stops
    return JSONResponse(reply)


@app.post("/v1/completions", dependencies=check_key)
async def post_completions(request_data: CompletionRequest):
    return await _answer("completions", request_data)


@app.post("/v1/chat/completions", dependencies=check_key)
async def post_chat_completions(request_data: ChatCompletionRequest):
    return await _answer("chat_completions", request_data)
