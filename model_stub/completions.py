"""Chat completion requests and the stub's deterministic answers to them (whole or as stream chunks)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from model_stub.tokens import canonical_json, cut_to_tokens, prompt_tokens, text_parts, tokens

DEFAULT_MAX_TOKENS = 16
MAX_CHOICES = 8
CREATED = 1_700_000_000
SYSTEM_FINGERPRINT = "model-stub"
STREAM_KEYS = ("stream", "stream_options")  # left out of a streamed request's id, so it equals the whole answer's


class RequestError(ValueError):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class ChatRequest:
    body: dict
    model: str
    messages: list
    n: int
    limit: int  # completion tokens per choice
    stream: bool
    include_usage: bool


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_int(body: dict, key: str) -> int | None:
    value = body.get(key)
    if value is not None and (not _is_int(value) or value < 1):
        raise RequestError(f"{key} must be a positive integer", key)
    return value


def _check_content(content: Any, where: str) -> None:
    if content is None or isinstance(content, str):
        return
    if not isinstance(content, list):
        raise RequestError(f"{where} must be a string or a list of content parts", where)
    for index, part in enumerate(content):
        at = f"{where}[{index}]"
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise RequestError(f"{at} must be an object with a string type", at)
        if part["type"] == "text" and not isinstance(part.get("text"), str):
            raise RequestError(f"{at}.text must be a string", f"{at}.text")


def parse_chat_request(body: Any) -> ChatRequest:
    """Validate a chat completion body; RequestError names the first field that is wrong."""
    if not isinstance(body, dict):
        raise RequestError("request body must be a JSON object")
    model = body.get("model")
    messages = body.get("messages")
    if not isinstance(model, str) or not model:
        raise RequestError("model must be a non-empty string", "model")
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages must be a non-empty list", "messages")
    for index, message in enumerate(messages):
        if isinstance(message, dict):
            _check_content(message.get("content"), f"messages[{index}].content")
    max_tokens = _positive_int(body, "max_tokens")
    max_completion_tokens = _positive_int(body, "max_completion_tokens")
    n = body.get("n")
    if n is not None and (not _is_int(n) or not 1 <= n <= MAX_CHOICES):
        raise RequestError(f"n must be an integer from 1 to {MAX_CHOICES}", "n")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise RequestError("stream must be a boolean", "stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise RequestError("stream_options must be an object", "stream_options")
    include_usage = (options or {}).get("include_usage")
    if include_usage is not None and not isinstance(include_usage, bool):
        raise RequestError("stream_options.include_usage must be a boolean", "stream_options.include_usage")
    limits = (max_completion_tokens, max_tokens, DEFAULT_MAX_TOKENS)
    return ChatRequest(body=body, model=model, messages=messages, n=n or 1,
                       limit=next(limit for limit in limits if limit is not None),
                       stream=bool(stream), include_usage=bool(include_usage))


def _last_user_text(messages: list) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user" and message.get("content") is not None:
            return " ".join(text_parts(message["content"]))
    return ""


@dataclass(frozen=True)
class Answer:
    id: str
    model: str
    content: str  # of every choice
    finish_reason: str
    n: int
    usage: dict


def answer_to(request: ChatRequest, usage_override: dict | None) -> Answer:
    """The deterministic answer: "Echo: " + the last user text, cut to the limit, in n identical choices."""
    reply = f"Echo: {_last_user_text(request.messages).strip()}".strip()
    content = cut_to_tokens(reply, request.limit)
    if usage_override is not None:
        usage = dict(usage_override)
    else:
        prompt, completion = prompt_tokens(request.body), request.n * tokens(content)
        usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    hashed = request.body
    if request.stream:
        hashed = {key: value for key, value in request.body.items() if key not in STREAM_KEYS}
    digest = hashlib.sha256(canonical_json(hashed).encode("utf-8")).hexdigest()
    return Answer(id=f"chatcmpl-{digest[:24]}", model=request.model, content=content,
                  finish_reason="stop" if content == reply else "length", n=request.n, usage=usage)


def completion_body(answer: Answer) -> dict:
    choice = {"message": {"role": "assistant", "content": answer.content}, "logprobs": None,
              "finish_reason": answer.finish_reason}
    return {
        "id": answer.id,
        "object": "chat.completion",
        "created": CREATED,
        "model": answer.model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": [{"index": index, **choice} for index in range(answer.n)],
        "usage": answer.usage,
    }


def chunk_body(answer: Answer, choices: list[dict], usage: dict | None = None) -> dict:
    """One chat.completion.chunk; ``usage`` only on the final usage chunk (whose ``choices`` is empty)."""
    chunk = {"id": answer.id, "object": "chat.completion.chunk", "created": CREATED, "model": answer.model,
             "system_fingerprint": SYSTEM_FINGERPRINT, "choices": choices}
    if usage is not None:
        chunk["usage"] = usage
    return chunk


def chunk_choice(index: int, delta: dict, finish_reason: str | None = None) -> dict:
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
