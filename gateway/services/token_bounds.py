"""How many tokens a chat request can cost at most, read from the request alone: the bound the hold is priced at.

A BPE token is at least one UTF-8 byte, so a text's UTF-8 byte count bounds the tokens any tokenizer makes of it.
The prompt bound is REPLY_OVERHEAD_TOKENS, plus for every message MESSAGE_OVERHEAD_TOKENS and the bytes of
every field but `role` (string content, the text of text and refusal parts, `name`, `tool_call_id`, and
structured fields such as `tool_calls` and `function_call` as their compact JSON), plus the compact JSON of the
request's `tools`, `functions`, `tool_choice`, `function_call` and `response_format`. A content part of another
type (an image, audio, a file) has no text to count: the model's `content_part_tokens` rule prices it per part
by type, else the request is refused. The completion bound is the completion limit times `n`.
"""
from __future__ import annotations

import json

from gateway.errors import ApiError

MAX_TOKENS_LIMIT = 100_000
MAX_CHOICES = 8
MESSAGE_OVERHEAD_TOKENS = 4  # a message's role and delimiters (OpenAI's chat format spends 3, 4 with a name)
REPLY_OVERHEAD_TOKENS = 3  # the assistant turn every answer is primed with
TEXT_PARTS = {"text": "text", "refusal": "refusal"}  # content part type -> its text field
REQUEST_FIELDS = ("tools", "functions", "tool_choice", "function_call", "response_format")
LIMIT_FIELDS = ("max_completion_tokens", "max_tokens")


def utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def json_len(value) -> int:
    """UTF-8 bytes of a string, or of any other JSON value written compactly."""
    if isinstance(value, str):
        return utf8_len(value)
    return utf8_len(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


def _refused(message: str, param: str, code: str = "invalid_request") -> ApiError:
    return ApiError(400, code, message, param=param)


def _content_bound(content, where: str, part_tokens: dict, model: str) -> int:
    if isinstance(content, str):
        return utf8_len(content)
    if not isinstance(content, list):
        raise _refused(f"{where} must be a string, an array of content parts, or null.", where)
    total = 0
    for j, part in enumerate(content):
        at = f"{where}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if not isinstance(kind, str):
            raise _refused(f"{at} must be an object with a string 'type'.", at)
        text_field = TEXT_PARTS.get(kind)
        if text_field is not None:
            text = part.get(text_field)
            if not isinstance(text, str):
                raise _refused(f"{at}.{text_field} must be a string.", f"{at}.{text_field}")
            total += utf8_len(text)
            continue
        tokens = part_tokens.get(kind)
        if type(tokens) is not int or tokens < 0:
            raise _refused(f"{at} is a '{kind}' part: the gateway cannot count its tokens, and model '{model}' has "
                           f"no content_part_tokens rule for '{kind}' parts, so its cost cannot be bounded.", at,
                           code="unsupported_content")
        total += tokens
    return total


def prompt_bound(body: dict, part_tokens: dict | None, model: str) -> int:
    """At least as many tokens as any backend can count in the request's prompt (400 naming the field for a
    content part that cannot be bounded)."""
    rule = part_tokens if isinstance(part_tokens, dict) else {}
    total = REPLY_OVERHEAD_TOKENS
    for i, message in enumerate(body["messages"]):
        total += MESSAGE_OVERHEAD_TOKENS
        for field, value in message.items():
            if field == "role" or value is None:
                continue
            total += (_content_bound(value, f"messages[{i}].content", rule, model) if field == "content"
                      else json_len(value))
    for field in REQUEST_FIELDS:
        if body.get(field) is not None:
            total += json_len(body[field])
    return total


def completion_limit(body: dict, default: int) -> int:
    """Tokens one choice may generate: the smaller of `max_completion_tokens` and `max_tokens` when both are given
    (the gateway forwards both as that value), the one given, else the model's default."""
    given = [body[field] for field in LIMIT_FIELDS if body.get(field) is not None]
    return min(given) if given else default


def choices(body: dict) -> int:
    return body.get("n") or 1


def validate_shape(body: dict) -> None:
    """400s naming the field for the limits, `n` and the streaming options (the messages are checked as they are
    bounded)."""
    for field in LIMIT_FIELDS:
        value = body.get(field)
        if value is not None and (type(value) is not int or not 1 <= value <= MAX_TOKENS_LIMIT):
            raise _refused(f"'{field}' must be an integer from 1 to {MAX_TOKENS_LIMIT}.", field)
    n = body.get("n")
    if n is not None and (type(n) is not int or not 1 <= n <= MAX_CHOICES):
        raise _refused(f"'n' must be an integer from 1 to {MAX_CHOICES} (choices per request on this gateway).", "n")
    stream = body.get("stream")
    if stream is not None and type(stream) is not bool:
        raise _refused("'stream' must be true or false.", "stream")
    options = body.get("stream_options")
    if options is not None:
        if not stream:
            raise _refused("'stream_options' is only allowed when 'stream' is true.", "stream_options")
        if not isinstance(options, dict):
            raise _refused("'stream_options' must be an object.", "stream_options")
        if type(options.get("include_usage", False)) is not bool:
            raise _refused("'stream_options.include_usage' must be true or false.", "stream_options.include_usage")


def _call_text_len(call) -> int:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict):
        return 0
    return sum(utf8_len(function[k]) for k in ("name", "arguments") if isinstance(function.get(k), str))


def generated_text_len(message) -> int:
    """UTF-8 bytes of what a backend generated in one choice's `message` (or a chunk's `delta`): its content (a
    string or text parts), refusal, and the names and arguments of its tool and function calls."""
    if not isinstance(message, dict):
        return 0
    total = 0
    content = message.get("content")
    if isinstance(content, str):
        total += utf8_len(content)
    elif isinstance(content, list):
        total += sum(utf8_len(p["text"]) for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    if isinstance(message.get("refusal"), str):
        total += utf8_len(message["refusal"])
    calls = message.get("tool_calls")
    if isinstance(calls, list):
        total += sum(_call_text_len(call) for call in calls)
    if isinstance(message.get("function_call"), dict):
        total += _call_text_len({"function": message["function_call"]})
    return total


def answer_text_len(answer: dict, field: str = "message") -> int:
    """Generated bytes over every choice of an answer (`message`) or a streamed chunk (`delta`)."""
    listed = answer.get("choices")
    if not isinstance(listed, list):
        return 0
    return sum(generated_text_len(c.get(field)) for c in listed if isinstance(c, dict))
