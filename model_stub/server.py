"""Deterministic OpenAI-compatible model backend stub.

Run it as::

    python -m model_stub --host 127.0.0.1 --port 9100

Model API (namespace ``default`` when the ``/ns/{ns}`` prefix is absent)::

    POST /v1/chat/completions            POST /ns/{ns}/v1/chat/completions
    GET  /v1/models                      GET  /ns/{ns}/v1/models

Control API, per namespace::

    PUT    /_stub/{ns}/behaviour   {"mode": "ok"|"error"|"hang"|"drop", "status": 503,
                                    "body": <json>, "latency_ms": 0,
                                    "usage": {"prompt_tokens": n, "completion_tokens": n},
                                    "models": ["stub-model"],
                                    "chunk_chars": 4, "chunk_delay_ms": 0,
                                    "stream_usage": "request"|"always"|"never",
                                    "stream_fault": null | {"after_chunks": N,
                                                            "kind": "error"|"hang"|"drop"|"pause"},
                                    "hold": 0}
                                   (omitted keys take the defaults shown; a bad value is a 422)
    GET    /_stub/{ns}/behaviour
    GET    /_stub/{ns}/calls       {"calls": [{"seq", "at", "method", "path", "query", "headers", "body"
                                               [, "usage", "answer"[, "stream"]][, "held"]}]}  (arrival order)
    POST   /_stub/{ns}/release     {"namespace", "released": n}  let go of the n calls held, hanging or paused
                                   now (as a change of behaviour does, without changing it)
    DELETE /_stub/{ns}             reset behaviour and calls of one namespace
    DELETE /_stub                  reset every namespace
    GET    /healthz                {"status": "ok"}

Answers are deterministic: the same request body gives the same response (id derived from a hash of the
canonical body, fixed ``created``). The reply is ``"Echo: " + <text of the last user message, stripped>`` (its
string content, or its text parts joined with a space), cut to the longest prefix within the limit
(``finish_reason`` ``length``). The limit is ``max_completion_tokens``, else ``max_tokens``, else 16. ``n`` (1..8)
gives that many identical choices. Token rule (model_stub/tokens.py)::

    tokens(text)      = ceil(ascii_chars / 4 + non_ascii_chars * 5 / 4)
    prompt_tokens     = tokens(all message contents: strings and text parts)
                      + tokens(all message names)
                      + tokens(all tool calls' function names and arguments, tool_calls and function_call)
                      + tokens(canonical JSON of tools) + tokens(canonical JSON of functions)
                      + 85 for each non-text content part (image_url, input_audio, ...)
    completion_tokens = n * tokens(reply content)

Each field's texts are concatenated and rounded up once, so ASCII string messages count ``ceil(chars / 4)``. The
rule never exceeds the UTF-8 byte count of what it counts. A behaviour's ``usage`` replaces both numbers.

Streaming (``"stream": true``) answers ``text/event-stream`` with ``data: <chat.completion.chunk>`` events: a role
chunk per choice, content chunks of ``chunk_chars`` characters (the choices taking turns), a chunk per choice
with its ``finish_reason``, a usage chunk (``"choices": []``) when ``stream_options.include_usage`` is true and
``stream_usage`` is ``request``, or whenever it is ``always``, and ``data: [DONE]``. Chunks carry the id the body
would get without ``stream`` and ``stream_options``. ``chunk_delay_ms`` passes between events. ``stream_fault``
fires after ``after_chunks`` content chunks (after the last one when there are fewer): ``error`` ends the
stream with an OpenAI error event and no ``[DONE]``; ``hang`` writes nothing more until the client goes away or
it is released as in ``hang`` mode below (then the connection closes mid-body); ``drop`` closes the connection
mid-body; ``pause`` writes nothing more until it is released (``"stream": {"paused": true}`` meanwhile), then
writes the rest of the stream. The server stopping also cuts a running stream.

What a chat call it answers (mode ``ok``, a valid request) adds to its record from its arrival (before
``latency_ms``), so a client of the stub needs none of its code to know what it answered::

    "usage":  {"prompt_tokens", "completion_tokens", "total_tokens"}   the usage its answer reports (the
              behaviour's ``usage``, else its own count), also for a stream that sends no usage chunk
    "answer": {"contents": [<text of each choice>], "n": k}             the answer in one piece (a stream
              writes the same contents)
    "stream": {"prompt_tokens", "content_chunks_sent", "completion_tokens_sent", "contents_sent", "finished",
               "client_went_away", "ended"}                             a streamed call only

The ``stream`` entry is updated as the stream is written: ``prompt_tokens`` is the stub's own count of the prompt
(whatever the behaviour says to report), ``contents_sent`` each choice's text written so far and
``completion_tokens_sent`` the sum of their tokens; ``finished`` is true once ``[DONE]`` is written, ``ended``
once the stream is over for any reason.

Modes: ``ok`` answers after ``latency_ms``; ``error`` answers ``status`` (default 503) with ``body`` or an
OpenAI error body after ``latency_ms``; ``hang`` never answers: it waits until the client goes away, the
namespace's behaviour is changed or reset, it is released (``POST /_stub/{ns}/release``), the server stops, or
``HANG_MAX_SECONDS`` pass, and then closes the connection; ``drop`` closes the connection without sending any HTTP
response (see model_stub/connection.py). ``hold`` N (modes ``ok`` and ``error``): each of the next N chat
calls is held, ``"held": true`` on its record, until released in the same ways as a hang (or its client leaves),
and then answered as its mode says (after ``latency_ms``); what it will answer is on its record meanwhile; calls
after those N are answered at once (``GET .../behaviour`` shows how many are still to be held). A scenario holds a
request "still running" for as long as it needs, releases it as soon as it has seen what it needed, and a request
it did not expect is not held.
Behaviours apply to chat completions only; every model call (chat and models) is recorded before the behaviour
acts, at most ``MAX_CALLS`` per namespace. A malformed chat request in ``ok`` mode is a 4xx in OpenAI's error
shape naming the field.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
from datetime import datetime, timezone
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from model_stub.completions import (CREATED, Answer, ChatRequest, RequestError, answer_to, completion_body,
                                    parse_chat_request)
from model_stub.connection import CloseConnection, Hang, StubHttpProtocol, hang_until_released, wait_for_disconnect
from model_stub.state import BehaviourError, Namespace, StubState, default_behaviour, parse_behaviour
from model_stub.streaming import EventStream
from model_stub.tokens import prompt_tokens

MAX_BODY_BYTES = 8 * 1024 * 1024
NAMESPACE_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

_ERROR_TYPES = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("authentication_error", "invalid_api_key"),
    403: ("permission_error", "permission_denied"),
    404: ("not_found_error", "model_not_found"),
    409: ("invalid_request_error", "conflict"),
    413: ("invalid_request_error", "request_too_large"),
    422: ("invalid_request_error", "unprocessable_entity"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
}


def openai_error(status: int, message: str, code: str | None = None, param: str | None = None) -> JSONResponse:
    fallback = ("server_error" if status >= 500 else "invalid_request_error", f"http_{status}")
    kind, default_code = _ERROR_TYPES.get(status, fallback)
    error = {"message": message, "type": kind, "code": code or default_code, "param": param}
    return JSONResponse({"error": error}, status_code=status)


def control_error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": "invalid_request", "message": message}, status_code=status)


def _headers(request: Request) -> dict[str, str]:
    out: dict[str, str] = {}
    for raw_name, raw_value in request.scope["headers"]:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


async def _read_body(request: Request) -> bytes | None:
    """The body, or None when it exceeds MAX_BODY_BYTES."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _parse_json(raw: bytes) -> tuple[bool, Any]:
    if not raw:
        return False, None
    try:
        return True, json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return False, None


def _chat_answer(raw: bytes | None, parsed: bool, body: Any,
                 usage: dict | None) -> tuple[Response | None, ChatRequest | None, Answer | None]:
    """(the 4xx refusing a malformed chat request, or None; the request; the answer to it)."""
    if raw is None:
        return openai_error(413, f"request body exceeds {MAX_BODY_BYTES} bytes"), None, None
    if not parsed:
        return openai_error(400, "request body must be valid JSON", "invalid_json"), None, None
    try:
        chat = parse_chat_request(body)
    except RequestError as exc:
        return openai_error(400, str(exc), "invalid_request", exc.param), None, None
    return None, chat, answer_to(chat, usage)


def create_app() -> Starlette:
    state = StubState()

    def namespace_of(request: Request) -> str | None:
        name = request.path_params.get("ns", "default")
        return name if NAMESPACE_RE.match(name) else None

    async def record(request: Request, ns: Namespace) -> tuple[bytes | None, bool, Any, dict]:
        raw = await _read_body(request)
        ok, body = _parse_json(raw) if raw is not None else (False, None)
        ns.seq += 1
        call = {
            "seq": ns.seq,
            "at": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
            "method": request.method,
            "path": request.scope["path"],  # the scope's, as request.url has them, without building the URL
            "query": request.scope["query_string"].decode(),
            "headers": _headers(request),
            "body": body,
        }
        ns.calls.append(call)
        return raw, ok, body, call

    async def hold(request: Request, ns: Namespace, behaviour: dict, call: dict) -> bool:
        """Hold a call until its namespace is released; True when the client went away first."""
        behaviour["hold"] -= 1
        call["held"] = True
        disconnected = asyncio.ensure_future(wait_for_disconnect(request.receive))
        try:
            return await hang_until_released(state, ns, disconnected)
        finally:
            disconnected.cancel()
            call["held"] = False

    async def chat_completions(request: Request) -> Response:
        name = namespace_of(request)
        if name is None:
            return openai_error(404, "invalid namespace", "namespace_not_found")
        ns = state.get(name)
        raw, parsed, body, call = await record(request, ns)
        behaviour = ns.behaviour
        mode = behaviour["mode"]
        if mode == "drop":
            return CloseConnection()
        if mode == "hang":
            return Hang(state, ns)
        if mode == "ok":  # what it answers is on record from the start, though it answers after latency_ms
            refusal, chat, answer = _chat_answer(raw, parsed, body, behaviour["usage"])
            if answer is not None:
                call["usage"] = dict(answer.usage)
                call["answer"] = {"contents": [answer.content] * answer.n, "n": answer.n}
        if behaviour["hold"] and await hold(request, ns, behaviour, call):
            return Response(status_code=499)  # the client went away while held: nobody reads an answer
        if behaviour["latency_ms"]:
            await asyncio.sleep(behaviour["latency_ms"] / 1000)
        if mode == "error":
            status = behaviour["status"]
            if behaviour["body"] is not None:
                return JSONResponse(behaviour["body"], status_code=status)
            return openai_error(status, f"model stub: injected error {status}", None)
        if refusal is not None:
            return refusal
        if chat.stream:
            call["stream"] = {"prompt_tokens": prompt_tokens(chat.body)}
            return EventStream(answer, behaviour, chat.include_usage, call["stream"], state, ns)
        return JSONResponse(completion_body(answer))

    async def list_models(request: Request) -> Response:
        name = namespace_of(request)
        if name is None:
            return openai_error(404, "invalid namespace", "namespace_not_found")
        ns = state.get(name)
        await record(request, ns)
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {"id": m, "object": "model", "created": CREATED, "owned_by": "model-stub"}
                    for m in ns.behaviour["models"]
                ],
            }
        )

    def control_namespace(request: Request) -> str | None:
        name = request.path_params["ns"]
        return name if NAMESPACE_RE.match(name) else None

    async def put_behaviour(request: Request) -> Response:
        name = control_namespace(request)
        if name is None:
            return control_error(422, "namespace must be 1-128 characters of [A-Za-z0-9._:-]")
        ok, data = _parse_json(await request.body())
        if not ok:
            return control_error(422, "behaviour must be a JSON object")
        try:
            behaviour = parse_behaviour(data)
        except BehaviourError as exc:
            return control_error(422, str(exc))
        ns = state.get(name)
        ns.behaviour = behaviour
        ns.wake_hangers()
        return JSONResponse(behaviour)

    async def get_behaviour(request: Request) -> Response:
        name = control_namespace(request)
        if name is None:
            return control_error(422, "namespace must be 1-128 characters of [A-Za-z0-9._:-]")
        ns = state.namespaces.get(name)
        return JSONResponse(ns.behaviour if ns is not None else default_behaviour())

    async def get_calls(request: Request) -> Response:
        name = control_namespace(request)
        if name is None:
            return control_error(422, "namespace must be 1-128 characters of [A-Za-z0-9._:-]")
        ns = state.namespaces.get(name)
        return JSONResponse({"calls": list(ns.calls) if ns is not None else []})

    async def release(request: Request) -> Response:
        name = control_namespace(request)
        if name is None:
            return control_error(422, "namespace must be 1-128 characters of [A-Za-z0-9._:-]")
        ns = state.namespaces.get(name)
        return JSONResponse({"namespace": name, "released": ns.wake_hangers() if ns is not None else 0})

    async def reset_namespace(request: Request) -> Response:
        name = control_namespace(request)
        if name is None:
            return control_error(422, "namespace must be 1-128 characters of [A-Za-z0-9._:-]")
        state.reset(name)
        return JSONResponse({"namespace": name, "reset": True})

    async def reset_all(request: Request) -> Response:
        state.reset_all()
        return JSONResponse({"reset": True})

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def not_found(request: Request, exc: HTTPException) -> Response:
        if request.url.path.startswith(("/v1/", "/ns/")):
            return openai_error(
                exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", "unknown_route"
            )
        return JSONResponse({"error": "not_found", "message": exc.detail}, status_code=exc.status_code)

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/ns/{ns}/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/ns/{ns}/v1/models", list_models, methods=["GET"]),
        Route("/_stub/{ns}/behaviour", put_behaviour, methods=["PUT"]),
        Route("/_stub/{ns}/behaviour", get_behaviour, methods=["GET"]),
        Route("/_stub/{ns}/calls", get_calls, methods=["GET"]),
        Route("/_stub/{ns}/release", release, methods=["POST"]),
        Route("/_stub/{ns}", reset_namespace, methods=["DELETE"]),
        Route("/_stub", reset_all, methods=["DELETE"]),
    ]
    app = Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})
    app.state.stub = state
    return app


def build_server(host: str, port: int, log_level: str = "warning") -> tuple[uvicorn.Server, socket.socket]:
    """A uvicorn server for the stub, with its already bound listening socket."""
    app = create_app()

    class Protocol(StubHttpProtocol):
        stopping_hook = staticmethod(app.state.stub.stopping.set)

    config = uvicorn.Config(
        app,
        http=Protocol,
        lifespan="off",
        log_level=log_level,
        access_log=False,
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=2,
    )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must be IPPROTO_TCP: asyncio only sets TCP_NODELAY on accepted sockets whose proto
    # says TCP, and without it every response waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)  # listening before the address is announced, so the first connection is never refused
    sock.set_inheritable(True)
    return uvicorn.Server(config), sock


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m model_stub",
        description="Deterministic OpenAI-compatible model backend stub with a control API.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=9100, help="port to bind; 0 picks a free one (default 9100)"
    )
    parser.add_argument(
        "--log-level",
        default="warning",
        choices=["critical", "error", "warning", "info", "debug", "trace"],
        help="uvicorn log level (default warning)",
    )
    args = parser.parse_args(argv)
    server, sock = build_server(args.host, args.port, args.log_level)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"model_stub listening on http://{shown}:{port}", flush=True)
    server.run(sockets=[sock])
    return 0
