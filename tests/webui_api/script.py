"""modules/api/script.py of text-generation-webui v4.7.3, reduced: the app, its error handlers and the two
completion routes. As in the webui, the request models are taken from .typing when this module is
imported, routes pass ``to_dict(request_data)`` on, call ``OAIcompletions.<entry point>`` by attribute at
each request (non-streaming ones in a worker thread) and stream server-sent events."""
import asyncio
import json
import threading

import modules.api.completions as OAIcompletions
from fastapi import Depends, FastAPI, Header, HTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.requests import Request
from fastapi.responses import JSONResponse, StreamingResponse
from modules import shared
from starlette.concurrency import iterate_in_threadpool

from .errors import OpenAIError
from .typing import ChatCompletionRequest, CompletionRequest, to_dict


def verify_api_key(authorization: str = Header(None)) -> None:
    expected_api_key = shared.args.api_key
    if expected_api_key and (authorization is None or authorization != f"Bearer {expected_api_key}"):
        raise HTTPException(status_code=401, detail="Unauthorized")


app = FastAPI()
check_key = [Depends(verify_api_key)]


@app.exception_handler(OpenAIError)
async def openai_error_handler(request: Request, exc: OpenAIError):
    error_type = "server_error" if exc.code >= 500 else "invalid_request_error"
    return JSONResponse(status_code=exc.code, content={"error": {
        "message": exc.message, "type": error_type, "param": getattr(exc, 'param', None), "code": None}})


@app.exception_handler(RequestValidationError)
async def validation_error_handler(request: Request, exc: RequestValidationError):
    return JSONResponse(status_code=422, content={"detail": exc.errors()})


def _stream(response, request):
    async def generator():
        try:
            async for resp in iterate_in_threadpool(response):
                yield f"data: {json.dumps(resp)}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            response.close()

    return StreamingResponse(generator(), media_type="text/event-stream")


async def _once(function, request_data):
    stop_event = threading.Event()
    try:
        return JSONResponse(await asyncio.to_thread(function, to_dict(request_data), is_legacy=False, stop_event=stop_event))
    finally:
        stop_event.set()


@app.post('/v1/completions', dependencies=check_key)
async def openai_completions(request: Request, request_data: CompletionRequest):
    if request_data.stream:
        return _stream(OAIcompletions.stream_completions(to_dict(request_data), is_legacy=False, stop_event=threading.Event()), request)
    return await _once(OAIcompletions.completions, request_data)


@app.post('/v1/chat/completions', dependencies=check_key)
async def openai_chat_completions(request: Request, request_data: ChatCompletionRequest):
    if request_data.stream:
        return _stream(OAIcompletions.stream_chat_completions(to_dict(request_data), is_legacy=False, stop_event=threading.Event()), request)
    return await _once(OAIcompletions.chat_completions, request_data)
